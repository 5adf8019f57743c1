import { deliveriesIn, GroupTopicEvent, TOPICS, TYPING_NOTICE_MAX_AGE_MS } from '@parley/contracts';
import { MemoryBus } from '@parley/kafka';
import { TransientError } from '@parley/service-kit';
import { GroupMessageRouter } from '../src/app';
import { createMemoryRoutedLog, RoutedLog } from '../src/routed-log';
import { MapGroupCommands } from './support/map-group-commands';
import { MapMembership } from './support/map-membership';
import { message, op, routerOn } from './support/router';
import { waitFor } from '@parley/test-kit';

describe('group-message-router service', () => {
  let bus: MemoryBus;
  let membership: MapMembership;
  let groupCommands: MapGroupCommands;
  let router: GroupMessageRouter;
  beforeEach(async () => {
    bus = new MemoryBus();
    membership = new MapMembership();
    membership.groups.set('g1', ['alice', 'bob', 'carol', 'dave']);
    groupCommands = new MapGroupCommands(membership);
    router = routerOn({
      bus,
      membership,
      groupCommands,
      routed: createMemoryRoutedLog(),
      cacheTtlMs: 60_000,
      deliveryBatchSize: 2,
    });
    await router.start();
  });
  afterEach(() => router.stop());

  /** One `deliver` per recipient, whichever event carried it. */
  const deliveries = () => bus.events(TOPICS.delivery).flatMap(deliveriesIn);

  it('fans a group message out to every member once, not to the sender, in one event per partition', async () => {
    await bus.publish(TOPICS.group, [message('alice', 'm1', 'g1', { text: 'hello' })]);
    await waitFor(() => deliveries().length === 3);
    await new Promise((r) => setTimeout(r, 100));
    // MemoryBus has one partition: one event names them all.
    expect(bus.events(TOPICS.delivery)).toEqual([
      {
        v: 1,
        kind: 'deliver-many',
        to: ['bob', 'carol', 'dave'],
        frame: {
          type: 'message',
          mid: 'alice:m1',
          id: 'm1',
          from: 'alice',
          to: 'g1',
          chat: 'group',
          body: { text: 'hello' },
          sentAt: 1000,
        },
      },
    ]);
    expect((await router.http.inject('/metrics')).body).toContain(
      'parley_group_router_deliveries_total{service="group-message-router"} 3',
    );
  });

  it("puts each member in the event of its partition, by the bus's partitioner", async () => {
    const partitionOf = (user: string) => (user < 'c' ? 0 : 1);
    bus.partitioner = async () => partitionOf;
    await bus.publish(TOPICS.group, [message('dave', 'm1', 'g1')]);
    await waitFor(() => deliveries().length === 3);
    const events = bus.events(TOPICS.delivery);
    expect(events.map((e) => e.kind === 'deliver-many' && e.to)).toEqual([['alice', 'bob'], ['carol']]);
    for (const event of events)
      expect(
        deliveriesIn(event).every((d) => partitionOf(d.to) === partitionOf(TOPICS.delivery.key(event))),
      ).toBe(true);
  });

  it('sends each member an event of its own while the bus cannot tell the partitions', async () => {
    bus.partitioner = async () => undefined;
    await bus.publish(TOPICS.group, [message('alice', 'm1', 'g1')]);
    await waitFor(() => deliveries().length === 3);
    expect(bus.events(TOPICS.delivery).map((e) => e.kind === 'deliver-many' && e.to)).toEqual([
      ['bob'],
      ['carol'],
      ['dave'],
    ]);
  });

  it("refuses a non-member's message: nothing reaches the group, the sender gets not_member", async () => {
    await bus.publish(TOPICS.group, [
      message('mallory', 'x1', 'g1'),
      message('mallory', 'x2', 'no-such-group'),
    ]);
    await waitFor(() => deliveries().length === 2);
    await new Promise((r) => setTimeout(r, 100));
    expect(deliveries()).toEqual([
      {
        v: 1,
        kind: 'deliver',
        to: 'mallory',
        frame: {
          type: 'error',
          mid: '~err:mallory:x1',
          id: 'x1',
          code: 'not_member',
          message: expect.any(String),
        },
      },
      {
        v: 1,
        kind: 'deliver',
        to: 'mallory',
        frame: {
          type: 'error',
          mid: '~err:mallory:x2',
          id: 'x2',
          code: 'not_member',
          message: expect.any(String),
        },
      },
    ]);
  });

  it('stops delivering to a removed member once the change event arrives (cache invalidation)', async () => {
    await bus.publish(TOPICS.group, [message('alice', 'm1', 'g1')]);
    await waitFor(() => deliveries().length === 3);
    membership.groups.set('g1', ['alice', 'bob', 'carol']);
    await bus.publish(TOPICS.groupChanges, [
      { v: 1, kind: 'group-changed', group: 'g1', members: ['alice', 'bob', 'carol'], at: 2 },
    ]);
    await waitFor(() => router.cache.size === 0);
    await bus.publish(TOPICS.group, [message('alice', 'm2', 'g1'), message('dave', 'm3', 'g1')]);
    await waitFor(() => deliveries().length === 6);
    const ofM2 = deliveries()
      .filter((d) => 'mid' in d.frame && d.frame.mid === 'alice:m2')
      .map((d) => d.to);
    expect(ofM2.sort()).toEqual(['bob', 'carol']);
    expect(deliveries()[5]).toMatchObject({ to: 'dave', frame: { code: 'not_member' } });
  });

  it('reads membership once per group while cached', async () => {
    await bus.publish(TOPICS.group, [message('alice', 'a', 'g1'), message('bob', 'b', 'g1')]);
    await bus.publish(TOPICS.group, [message('carol', 'c', 'g1')]);
    await waitFor(() => deliveries().length === 9);
    expect(membership.reads).toBe(1);
  });

  it('sends group typing as ephemeral notices to the other members, and drops a non-member’s', async () => {
    const typing = (from: string): GroupTopicEvent => ({
      v: 1,
      kind: 'group-typing',
      from,
      sentAt: Date.now(),
      frame: { type: 'typing', to: 'g1', chat: 'group' },
    });
    await bus.publish(TOPICS.group, [typing('mallory'), typing('bob')]);
    await waitFor(() => deliveries().length === 3);
    await new Promise((r) => setTimeout(r, 100));
    expect(
      deliveries()
        .map((d) => d.to)
        .sort(),
    ).toEqual(['alice', 'carol', 'dave']);
    expect(deliveries()[0]).toMatchObject({
      ephemeral: true,
      frame: { type: 'typing', from: 'bob', to: 'g1', chat: 'group' },
    });
  });

  it('drops a group typing notice sent too long ago to matter (read behind a backlog)', async () => {
    const typing = (from: string, sentAt: number): GroupTopicEvent => ({
      v: 1,
      kind: 'group-typing',
      from,
      sentAt,
      frame: { type: 'typing', to: 'g1', chat: 'group' },
    });
    const old = Date.now() - TYPING_NOTICE_MAX_AGE_MS - 1000;
    await bus.publish(TOPICS.group, [
      typing('bob', old),
      message('bob', 'm1', 'g1'), // sent as long ago (sentAt 1000)
      typing('carol', Date.now()),
    ]);
    await waitFor(() => deliveries().length >= 6);
    await new Promise((r) => setTimeout(r, 100));
    // The message, however old, reaches the others; of the notices only the fresh one does.
    expect(
      deliveries()
        .map((d) => `${d.frame.type} ${(d.frame as { from: string }).from} -> ${d.to}`)
        .sort(),
    ).toEqual([
      'message bob -> alice',
      'message bob -> carol',
      'message bob -> dave',
      'typing carol -> alice',
      'typing carol -> bob',
      'typing carol -> dave',
    ]);
  });

  it('has group-ms apply group commands as they are, and routes nothing for them itself', async () => {
    const command: GroupTopicEvent = {
      v: 1,
      kind: 'group-command',
      from: 'alice',
      sentAt: 5,
      connId: 'c1',
      gateway: 'gw1',
      frame: { type: 'group', id: 'op1', op: 'rename', group: 'g1', name: 'New' },
    };
    await bus.publish(TOPICS.group, [command]);
    await waitFor(() => groupCommands.applied.length === 1);
    expect(groupCommands.applied).toEqual([command]);
    expect(deliveries()).toEqual([]);
  });

  it('fans out what came before an op once, however often the batch is retried while group-ms is away', async () => {
    let failures = 4;
    const apply = groupCommands.apply.bind(groupCommands);
    groupCommands.apply = async (commands) => {
      if (failures-- > 0) throw new TransientError('group-ms is unreachable');
      return apply(commands);
    };
    await bus.publish(TOPICS.group, [
      message('alice', 'before-op', 'g1'),
      {
        v: 1,
        kind: 'group-command',
        from: 'alice',
        sentAt: 5,
        frame: { type: 'group', id: 'o9', op: 'rename', group: 'g1', name: 'N' },
      },
      message('alice', 'after-op', 'g1'),
    ]);
    await waitFor(() => deliveries().some((d) => 'mid' in d.frame && d.frame.mid === 'alice:after-op'));
    const copies = (mid: string) =>
      deliveries().filter((d) => 'mid' in d.frame && d.frame.mid === mid).length;
    expect([copies('alice:before-op'), groupCommands.applied.length, copies('alice:after-op')]).toEqual([
      3, 1, 3,
    ]);
  });

  it('routes by a change made elsewhere (REST) before its change event arrives: the version moved', async () => {
    membership.versions.set('g1', 1);
    await bus.publish(TOPICS.group, [message('alice', 'cached', 'g1')]);
    await waitFor(() => deliveries().length === 3);
    membership.change('g1', ['alice', 'bob']); // carol and dave removed through group-ms's REST API
    await bus.publish(TOPICS.group, [message('alice', 'right-after', 'g1')]);
    await waitFor(() => deliveries().some((d) => 'mid' in d.frame && d.frame.mid === 'alice:right-after'));
    await new Promise((r) => setTimeout(r, 50));
    const recipients = deliveries()
      .filter((d) => 'mid' in d.frame && d.frame.mid === 'alice:right-after')
      .map((d) => d.to);
    expect(recipients).toEqual(['bob']);
  });

  it('routes each message by the membership of its place in the batch: before an op, and after it', async () => {
    await bus.publish(TOPICS.group, [message('alice', 'warm', 'g1')]); // g1's membership is cached now
    await waitFor(() => deliveries().length === 3);
    await bus.publish(TOPICS.group, [
      message('alice', 'before', 'g1'),
      op('alice', 'o1', { op: 'remove', group: 'g1', members: ['carol'] }),
      message('alice', 'after', 'g1'),
      op('alice', 'o2', { op: 'create', group: 'fresh', name: 'Fresh', members: ['bob'] }), // made offline, then used
      message('alice', 'first', 'fresh'),
    ]);
    await waitFor(() => deliveries().some((d) => 'mid' in d.frame && d.frame.mid === 'alice:first'));
    const recipientsOf = (mid: string) =>
      deliveries()
        .filter((d) => 'mid' in d.frame && d.frame.mid === mid)
        .map((d) => d.to);
    expect(recipientsOf('alice:before')).toEqual(['bob', 'carol', 'dave']);
    expect(recipientsOf('alice:after')).toEqual(['bob', 'dave']);
    expect(recipientsOf('alice:first')).toEqual(['bob']);
    expect(deliveries().filter((d) => d.frame.type === 'error')).toEqual([]);
  });

  it('does not route again a message its client sent again: a member added since does not get it, a sender who left since is not refused', async () => {
    const recipientsOf = (mid: string) =>
      deliveries()
        .filter((d) => 'mid' in d.frame && d.frame.mid === mid)
        .map((d) => d.to);
    await bus.publish(TOPICS.group, [message('alice', 'twice', 'g1')]);
    await waitFor(() => recipientsOf('alice:twice').length === 3);
    // alice's socket closed before her `accepted` came: her app sends the message again, same id,
    // once after bob added erin, and once more after alice left.
    await bus.publish(TOPICS.group, [
      op('bob', 'o-add', { op: 'add', group: 'g1', members: ['erin'] }),
      message('alice', 'twice', 'g1'),
      op('alice', 'o-leave', { op: 'leave', group: 'g1' }),
      message('alice', 'twice', 'g1'),
      message('bob', 'later', 'g1'), // routed after both
    ]);
    await waitFor(() => recipientsOf('bob:later').length > 0);
    expect(recipientsOf('alice:twice')).toEqual(['bob', 'carol', 'dave']);
    expect(deliveries().filter((d) => d.frame.type === 'error')).toEqual([]);
    const metrics = await router.http.inject('/metrics');
    expect(metrics.body).toMatch(/^parley_group_router_resent_total\{[^}]*\} 2$/m);
  });
});

describe('group-message-router: a batch handled again after a crash or a rebalance', () => {
  let bus: MemoryBus;
  let membership: MapMembership;
  let groupCommands: MapGroupCommands;
  let routed: RoutedLog;
  let router: GroupMessageRouter | undefined;
  const start = async (groupId: string, deliveryBatchSize?: number) => {
    router = routerOn({
      bus,
      membership,
      groupCommands,
      routed, // the database both owners share
      groupId,
      changesGroupId: `${groupId}-changes`,
      deliveryBatchSize,
    });
    await router.start();
  };
  beforeEach(() => {
    bus = new MemoryBus();
    membership = new MapMembership();
    membership.groups.set('g1', ['alice', 'bob', 'carol']);
    groupCommands = new MapGroupCommands(membership);
    routed = createMemoryRoutedLog();
  });
  afterEach(() => router?.stop());
  const deliveries = () => bus.events(TOPICS.delivery).flatMap(deliveriesIn);
  const recipientsOf = (mid: string) =>
    deliveries()
      .filter((d) => 'mid' in d.frame && d.frame.mid === mid)
      .map((d) => d.to);

  /**
   * Routes [message, op] once, then again as the partition's next owner would after a crash before
   * the offsets were committed (a fresh consumer group reads the same records; group-ms's tables
   * already hold the op's effect, and group-ms applies the op again as a no-op).
   */
  const routeTwice = async (records: GroupTopicEvent[]) => {
    await bus.publish(TOPICS.group, records);
    await start('first-owner');
    await waitFor(() => groupCommands.applied.length === 1 && deliveries().length > 0);
    await router!.stop();
    await start('next-owner');
    await waitFor(() => groupCommands.applied.length === 2);
    await new Promise((r) => setTimeout(r, 100));
  };

  it('never gives a member added by a later op a message sent before the add, when the message is routed again', async () => {
    await routeTwice([
      message('alice', 'before-add', 'g1'),
      op('alice', 'o1', { op: 'add', group: 'g1', members: ['erin'] }),
    ]);
    // First pass: bob and carol. The replay meets the membership the later op made, and erin gets
    // a message that was sent before she was in the group.
    expect([...new Set(recipientsOf('alice:before-add'))].sort()).toEqual(['bob', 'carol']);
  });

  it('never refuses as not_member a message already fanned out, when the sender left by a later op', async () => {
    await routeTwice([
      message('alice', 'before-leave', 'g1'),
      op('alice', 'o2', { op: 'leave', group: 'g1' }),
    ]);
    expect(recipientsOf('alice:before-leave').sort()).toEqual(['bob', 'carol']);
    // The replay tells alice her delivered message was refused.
    expect(deliveries().filter((d) => d.frame.type === 'error')).toEqual([]);
  });

  /**
   * Routes `records` once, has group-ms change g1's members over REST (its tables; no op in the
   * topic, nothing that places the change among the records), then has the partition's next owner
   * read the same records again, as after a crash or a rebalance before the offsets were committed.
   * A message of bob's, sent after the change, says when the next owner is through.
   */
  const routeAgainAfterRestChange = async (records: GroupTopicEvent[], members: string[]) => {
    await bus.publish(TOPICS.group, records);
    await start('first-owner');
    await waitFor(() => deliveries().length > 0);
    await router!.stop();
    membership.change('g1', members);
    await bus.publish(TOPICS.group, [message('bob', 'after-change', 'g1')]);
    await start('next-owner');
    await waitFor(() => recipientsOf('bob:after-change').length > 0);
  };
  const errorsTo = (user: string) => deliveries().filter((d) => d.to === user && d.frame.type === 'error');

  it('never gives a member added over REST after a message was routed that message, when it is routed again', async () => {
    await routeAgainAfterRestChange([message('alice', 'm1', 'g1')], ['alice', 'bob', 'carol', 'erin']);
    expect(recipientsOf('alice:m1').sort()).toEqual(['bob', 'carol']);
    expect(recipientsOf('bob:after-change').sort()).toEqual(['alice', 'carol', 'erin']);
  });

  it('never refuses as not_member a message already fanned out, when the sender left over REST before it is routed again', async () => {
    await routeAgainAfterRestChange([message('alice', 'm1', 'g1')], ['bob', 'carol']);
    expect(recipientsOf('alice:m1').sort()).toEqual(['bob', 'carol']);
    expect(errorsTo('alice')).toEqual([]);
  });

  it('never delivers a message refused not_member when it is routed again after the sender was added; sent again, it goes out', async () => {
    membership.groups.set('g1', ['bob', 'carol']);
    await routeAgainAfterRestChange([message('alice', 'm1', 'g1')], ['alice', 'bob', 'carol']);
    expect(recipientsOf('alice:m1')).toEqual([]);
    expect(errorsTo('alice')).toHaveLength(1);
    // Her app sends it again (a new record) now that she is a member: routed, as protocol.md says.
    await bus.publish(TOPICS.group, [message('alice', 'm1', 'g1')]);
    await waitFor(() => recipientsOf('alice:m1').length > 0);
    expect(recipientsOf('alice:m1').sort()).toEqual(['bob', 'carol']);
  });

  it('does not route again a message its client sent again after the router restarted, whatever the membership did meanwhile', async () => {
    await bus.publish(TOPICS.group, [message('alice', 'm1', 'g1')]);
    await start('router');
    await waitFor(() => recipientsOf('alice:m1').length === 2);
    await router!.stop();
    membership.change('g1', ['alice', 'bob', 'carol', 'erin']);
    await start('router');
    await bus.publish(TOPICS.group, [message('alice', 'm1', 'g1'), message('bob', 'later', 'g1')]);
    await waitFor(() => recipientsOf('bob:later').length > 0);
    expect(recipientsOf('alice:m1').sort()).toEqual(['bob', 'carol']);
    const metrics = await router!.http.inject('/metrics');
    expect(metrics.body).toMatch(/^parley_group_router_resent_total\{[^}]*\} 1$/m);
  });

  /*
   * A run whose deliveries were written (all or some) but not recorded is retried by the bus while
   * the database or Kafka is away; group-ms's REST API goes on meanwhile. Found by
   * replay-invariants.test (seeds 2, 15, 24 among others).
   */
  it('sends a run retried after its record failed to the members it was routed to: a member added over REST meanwhile does not get it', async () => {
    const log = routed;
    let failures = 1;
    routed = {
      routingsOf: (messages) => log.routingsOf(messages),
      async record(routings) {
        if (failures-- > 0) {
          membership.change('g1', ['alice', 'bob', 'carol', 'erin']); // erin added over REST
          throw new TransientError('connection terminated unexpectedly');
        }
        await log.record(routings);
      },
    };
    await bus.publish(TOPICS.group, [message('alice', 'm1', 'g1')]);
    await start('router');
    await bus.publish(TOPICS.group, [message('bob', 'after', 'g1')]);
    await waitFor(() => recipientsOf('bob:after').length > 0);
    expect(failures).toBeLessThan(0); // the record failed once, and the run was retried
    expect([...new Set(recipientsOf('alice:m1'))].sort()).toEqual(['bob', 'carol']);
    expect(recipientsOf('bob:after').sort()).toEqual(['alice', 'carol', 'erin']);
  });

  it('sends a run retried after its deliveries were written in part to the members it was routed to: a sender removed over REST meanwhile is not told not_member', async () => {
    let refused = false;
    bus.refusePublish = (events) => {
      const m2 = events.some((e) => (e as { frame?: { mid?: string } }).frame?.mid === 'alice:m2');
      if (!m2 || refused) return false;
      refused = true;
      membership.change('g1', ['bob', 'carol']); // alice removed over REST while Kafka is away
      return true;
    };
    await bus.publish(TOPICS.group, [message('alice', 'm1', 'g1'), message('alice', 'm2', 'g1')]);
    await start('router', 1); // a batch of deliveries per message: m1's are written, m2's are not
    await bus.publish(TOPICS.group, [message('bob', 'after', 'g1')]);
    await waitFor(() => recipientsOf('bob:after').length > 0);
    expect(refused).toBe(true);
    expect(errorsTo('alice')).toEqual([]);
    expect([...new Set(recipientsOf('alice:m1'))].sort()).toEqual(['bob', 'carol']);
    expect([...new Set(recipientsOf('alice:m2'))].sort()).toEqual(['bob', 'carol']);
  });
});
