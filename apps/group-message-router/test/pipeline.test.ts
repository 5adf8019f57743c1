import { AddressInfo } from 'node:net';
import { deliveriesIn, GroupFrame, GroupTopicEvent, TOPICS } from '@parley/contracts';
import { MemoryBus } from '@parley/kafka';
import { migrate, SqlDatabase } from '@parley/postgres';
import { testDatabases } from '@parley/postgres/testing';
import { createMetricsRegistry, Readiness, silentLogger } from '@parley/service-kit';
import { createGroupMessageRouter, GroupMessageRouter } from '../src/app';
import { createHttpGroupCommandApplier } from '../src/group-commands';
import { createSqlRoutedLog } from '../src/routed-log';
import { createSqlMembershipReader } from '../src/sql-membership';
// Both halves of the group flow on one bus and one database, as in the fleet.
import { createGroupMs, GroupMs } from '../../group-ms/src/app';
import { GROUP_MIGRATIONS } from '../../group-ms/src/migrations';
import { createSqlReportStore } from '../../group-ms/src/reports';
import { createSqlGroupStore } from '../../group-ms/src/sql-group-store';
import { waitFor } from '@parley/test-kit';

describe.each(testDatabases())(
  'group pipeline on $name: router + group-ms on one bus and database',
  (target) => {
    let db: SqlDatabase;
    let bus: MemoryBus;
    let router: GroupMessageRouter;
    let groupMs: GroupMs;

    beforeAll(async () => {
      db = await target.open();
      await migrate(db, 'group-ms', GROUP_MIGRATIONS);
      bus = new MemoryBus();
      const runtime = (name: string) => ({
        logger: silentLogger(),
        metrics: createMetricsRegistry(name, { collectDefaults: false }),
        readiness: new Readiness(),
        port: 0,
        host: '127.0.0.1',
      });
      groupMs = createGroupMs({
        ...runtime('group-ms'),
        bus,
        store: createSqlGroupStore(db),
        reports: createSqlReportStore(db),
        internalSecret: 'test-internal-secret-0123',
        maxMembers: 1024,
        maxGroupsPerUser: 1000,
      });
      await groupMs.start();
      // The real path: group-ms's internal API over HTTP.
      const groupUrl = `http://127.0.0.1:${(groupMs.http.server.address() as AddressInfo).port}`;
      router = createGroupMessageRouter({
        ...runtime('group-message-router'),
        bus,
        membership: createSqlMembershipReader(db),
        routed: createSqlRoutedLog(db, silentLogger()),
        groupCommands: createHttpGroupCommandApplier(groupUrl, 'test-internal-secret-0123'),
        cacheTtlMs: 600_000,
      });
      await router.start();
    });
    afterAll(async () => {
      await router.stop();
      await groupMs.stop();
      await target.dispose();
    });

    const delivered = () => bus.events(TOPICS.delivery).flatMap(deliveriesIn);
    const recipientsOf = (mid: string) =>
      delivered()
        .filter((d) => 'mid' in d.frame && d.frame.mid === mid)
        .map((d) => d.to)
        .sort();
    const op = (from: string, frame: GroupFrame): GroupTopicEvent => ({
      v: 1,
      kind: 'group-command',
      from,
      sentAt: Date.now(),
      frame,
    });
    const say = (from: string, id: string, group = 'crew'): GroupTopicEvent => ({
      v: 1,
      kind: 'group-message',
      from,
      sentAt: Date.now(),
      frame: { type: 'message', id, to: group, chat: 'group', body: id },
    });

    it('group ops through the pipe reach group-ms and every member (incl. removed ones); messages follow membership', async () => {
      await bus.publish(TOPICS.group, [
        op('alice', {
          type: 'group',
          id: 'o1',
          op: 'create',
          group: 'crew',
          name: 'Crew',
          members: ['bob', 'carol'],
        }),
      ]);
      await waitFor(() => recipientsOf('~group:alice:o1').length === 3);
      expect(recipientsOf('~group:alice:o1')).toEqual(['alice', 'bob', 'carol']);

      await bus.publish(TOPICS.group, [say('alice', 'm1')]);
      await waitFor(() => recipientsOf('alice:m1').length === 2);
      expect(recipientsOf('alice:m1')).toEqual(['bob', 'carol']);

      await bus.publish(TOPICS.group, [
        op('alice', { type: 'group', id: 'o2', op: 'remove', group: 'crew', members: ['carol'] }),
      ]);
      await waitFor(() => recipientsOf('~group:alice:o2').length === 3);
      expect(recipientsOf('~group:alice:o2')).toEqual(['alice', 'bob', 'carol']);
      await waitFor(() => router.cache.size === 0); // the change event dropped the cached member list

      await bus.publish(TOPICS.group, [say('alice', 'm2'), say('carol', 'm3')]);
      await waitFor(() => recipientsOf('~err:carol:m3').length === 1);
      await waitFor(() => recipientsOf('alice:m2').length === 1);
      expect(recipientsOf('alice:m2')).toEqual(['bob']);
      expect(recipientsOf('carol:m3')).toEqual([]);
    });

    it('a message right behind an op meets the membership the op made: a group created offline, a member removed', async () => {
      await bus.publish(TOPICS.group, [
        op('alice', {
          type: 'group',
          id: 'n1',
          op: 'create',
          group: 'newly',
          name: 'N',
          members: ['bob', 'carol'],
        }),
        say('alice', 'hello', 'newly'),
      ]);
      await waitFor(() => recipientsOf('alice:hello').length === 2);
      expect(recipientsOf('~err:alice:hello')).toEqual([]);
      expect(recipientsOf('alice:hello')).toEqual(['bob', 'carol']);

      await bus.publish(TOPICS.group, [
        op('alice', { type: 'group', id: 'n2', op: 'remove', group: 'newly', members: ['carol'] }),
        say('alice', 'secret', 'newly'),
      ]);
      await waitFor(() => recipientsOf('alice:secret').length >= 1);
      await waitFor(() => recipientsOf('~group:alice:n2').length === 3);
      expect(recipientsOf('alice:secret')).toEqual(['bob']);
    });

    it('around a change each member gets, in order, the messages before it, its notice, then only what its membership allows; a group made again is new', async () => {
      const g = (id: string, frame: Record<string, unknown>) =>
        op(id.startsWith('e') ? 'erin' : 'alice', {
          type: 'group',
          id,
          group: 'again',
          ...frame,
        } as GroupFrame);
      await bus.publish(TOPICS.group, [
        g('a1', { op: 'create', name: 'A', members: ['bob', 'carol'] }),
        say('bob', 'before', 'again'),
        g('a2', { op: 'add', members: ['dave'] }),
        g('a3', { op: 'remove', members: ['carol'] }),
        say('bob', 'after', 'again'),
        say('carol', 'gone', 'again'),
      ]);
      await waitFor(() => recipientsOf('~err:carol:gone').length === 1);
      const seen = (user: string) =>
        delivered()
          .filter((d) => d.to === user && 'mid' in d.frame)
          .map((d) => (d.frame as { mid: string }).mid)
          .filter((mid) => /a[1-3]|before|after|gone|e1|new/.test(mid));
      expect(seen('dave')).toEqual(['~group:alice:a2', '~group:alice:a3', 'bob:after']);
      expect(seen('carol')).toEqual([
        '~group:alice:a1',
        'bob:before',
        '~group:alice:a2',
        '~group:alice:a3',
        '~err:carol:gone',
      ]);
      expect(recipientsOf('carol:gone')).toEqual([]);

      // Everyone leaves: the group is gone; erin makes it again with frank. Its old members are
      // strangers to it (cached member lists included), both ways.
      await bus.publish(TOPICS.group, [
        op('bob', { type: 'group', id: 'l1', op: 'leave', group: 'again' }),
        op('dave', { type: 'group', id: 'l2', op: 'leave', group: 'again' }),
        op('alice', { type: 'group', id: 'l3', op: 'leave', group: 'again' }),
        g('e1', { op: 'create', name: 'B', members: ['frank'] }),
        say('erin', 'new', 'again'),
        say('bob', 'old', 'again'),
      ]);
      await waitFor(() => recipientsOf('~err:bob:old').length === 1);
      expect(recipientsOf('erin:new')).toEqual(['frank']);
      expect(recipientsOf('bob:old')).toEqual([]);
      expect(recipientsOf('~group:erin:e1')).toEqual(['erin', 'frank']);
    });
  },
);
