import { deliveriesIn, GroupCommandEvent, GroupTopicEvent, TOPICS } from '@parley/contracts';
import { MemoryBus } from '@parley/kafka';
import { createMetricsRegistry, Readiness, silentLogger, TransientError } from '@parley/service-kit';
import { createGroupMessageRouter, GroupMessageRouter } from '../src/app';
import { GroupCommandApplier } from '../src/group-commands';
import { membershipOf, MembershipReader } from '../src/membership';
import { waitFor } from '@parley/test-kit';

/** Membership the test changes directly, counting reads (stands in for group-ms's tables). */
class MapMembership implements MembershipReader {
  groups = new Map<string, string[]>();
  versions = new Map<string, number>();
  reads = 0;
  async membersOf(group: string) {
    this.reads++;
    return membershipOf(this.groups.get(group) ?? [], this.versions.get(group));
  }
  async versionsOf(groups: string[]) {
    return new Map(
      groups.flatMap((g) => (this.versions.has(g) ? [[g, this.versions.get(g)!] as const] : [])),
    );
  }
  /** A change made elsewhere (group-ms's REST API) whose change event has not come yet. */
  change(group: string, members: string[]) {
    this.groups.set(group, members);
    this.versions.set(group, (this.versions.get(group) ?? 0) + 1);
  }
}

/** Applies the ops it is given to the MapMembership, as group-ms would to its tables, and records them. */
class MapGroupCommands implements GroupCommandApplier {
  applied: GroupCommandEvent[] = [];
  constructor(private readonly membership: MapMembership) {}
  async apply(commands: GroupCommandEvent[]) {
    for (const command of commands) {
      const { frame, from } = command;
      const members = this.membership.groups.get(frame.group) ?? [];
      if (frame.op === 'create') this.membership.groups.set(frame.group, [from, ...(frame.members ?? [])]);
      if (frame.op === 'add') this.membership.groups.set(frame.group, [...members, ...(frame.members ?? [])]);
      if (frame.op === 'remove' || frame.op === 'leave') {
        const gone = new Set(frame.op === 'leave' ? [from] : frame.members);
        this.membership.groups.set(
          frame.group,
          members.filter((m) => !gone.has(m)),
        );
      }
      this.applied.push(command);
    }
  }
}

const message = (from: string, id: string, group: string, body: unknown = 'hi'): GroupTopicEvent => ({
  v: 1,
  kind: 'group-message',
  from,
  sentAt: 1000,
  deviceId: 'phone',
  frame: { type: 'message', id, to: group, chat: 'group', body },
});

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
    router = createGroupMessageRouter({
      bus,
      membership,
      groupCommands,
      logger: silentLogger(),
      metrics: createMetricsRegistry('group-message-router', { collectDefaults: false }),
      readiness: new Readiness(),
      port: 0,
      host: '127.0.0.1',
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
      sentAt: 1,
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
    const op = (id: string, frame: Record<string, unknown>): GroupTopicEvent => ({
      v: 1,
      kind: 'group-command',
      from: 'alice',
      sentAt: 5,
      frame: { type: 'group', id, ...frame } as GroupCommandEvent['frame'],
    });
    await bus.publish(TOPICS.group, [
      message('alice', 'before', 'g1'),
      op('o1', { op: 'remove', group: 'g1', members: ['carol'] }),
      message('alice', 'after', 'g1'),
      op('o2', { op: 'create', group: 'fresh', name: 'Fresh', members: ['bob'] }), // made offline, then used
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
});
