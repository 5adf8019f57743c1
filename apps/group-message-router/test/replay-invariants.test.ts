import {
  deliveriesIn,
  DeliveryTopicEvent,
  GroupCommandEvent,
  GroupTopicEvent,
  TopicPosition,
  TopicSpec,
  TOPICS,
} from '@parley/contracts';
import { EventBus, MemoryBus, SubscribeOptions, Subscription } from '@parley/kafka';
import { TransientError } from '@parley/service-kit';
import { SeededRandom, seededRandom, waitFor } from '@parley/test-kit';
import { GroupMessageRouter } from '../src/app';
import { GroupCommandApplier } from '../src/group-commands';
import { createMemoryRoutedLog, placeKey, RoutedLog, Routing, sentKey } from '../src/routed-log';
import { MapGroupCommands } from './support/map-group-commands';
import { MapMembership } from './support/map-membership';
import { message, op, routerOn } from './support/router';

/**
 * A seeded randomized check of what protocol.md promises of group messages met again: "a message
 * routed before a change keeps its recipients", a resend (same sender and id) is not routed again,
 * a refusal stands for its own record only. Per seed: a few router lives over one MemoryBus, one
 * MapMembership (group-ms's tables) and one routed log, each life fed chunks of group messages
 * (some sent again), ops (add, remove, leave), with REST changes between lives, and ending in a
 * graceful stop, a crash (the handler dies at a chosen step, before the batch's offset is
 * committed: the next life reads it again), or a stop while group-ms is away; within a life
 * group-ms, the routed log or the delivery topic may fail for a while (retried), with a REST
 * change made meanwhile. Some lives are a fresh consumer group (the partition's next owner with
 * no offsets: it reads everything again).
 *
 * A crash between a run's deliveries and its record in the log is not drawn: the router documents
 * it as the one window in which a message is routed again (docs/architecture.md). It found a run
 * retried after its record or its deliveries failed routed again to the membership of now (seeds
 * 2, 8, 15, 24 and 65 of these); app.test has each case alone.
 *
 * ROUTER_REPLAY_SEED and ROUTER_REPLAY_SEEDS run other seeds, ROUTER_REPLAY_STATS=1 prints what
 * they exercised.
 */

/** What the seeds exercised, all together (printed with ROUTER_REPLAY_STATS=1). */
const tally = new Map<string, number>();
const count = (what: string, n = 1) => tally.set(what, (tally.get(what) ?? 0) + n);

const USERS = ['ann', 'ben', 'cat', 'dan', 'eve', 'fay', 'gus', 'hal'];
const GROUPS = ['g1', 'g2', 'g3'];

/** Where a life's handler dies: before or after the n-th call of a kind (counted over the life). */
type CrashKind = 'before-lookup' | 'after-record' | 'before-apply' | 'after-apply' | 'after-batch';
const CRASH_KINDS: CrashKind[] = [
  'before-lookup',
  'after-record',
  'before-apply',
  'after-apply',
  'after-batch',
];

/** A failure for a while within a life, retried by the bus: the n-th call fails `times` times. */
interface Blip {
  on: 'group-ms' | 'group-ms-answer-lost' | 'record' | 'publish';
  n: number;
  times: number;
  /** A change over REST made while it fails (group-ms's REST API does not wait for the router). */
  restChange: boolean;
}

interface LifePlan {
  fresh: boolean;
  chunks: number;
  ending:
    { kind: 'stop' } | { kind: 'crash'; at: CrashKind; n: number } | { kind: 'away-stop'; fromChunk: number };
  blip?: Blip;
}

/** One delivery the router published for a message: its recipients, or its refusal, and what held then. */
interface Unit {
  mid: string;
  refused: boolean;
  recipients: string[];
  /** The group's members in group-ms's tables when it was published. */
  members: string[];
  /** Where group-ms's history stood then. */
  history: number;
  /** How many of the topic's ops group-ms had applied then. */
  opsApplied: number;
  life: number;
}

interface Life {
  index: number;
  sub?: Subscription;
  handledTo: number;
  dead: boolean;
  stopping?: Promise<void>;
  crashAt?: { kind: CrashKind; n: number };
  counts: Record<CrashKind, number>;
  /** Its crash point passed while deliveries were written and not yet recorded: it dies at the next step. */
  crashDue: boolean;
  /** Deliveries written since the router last recorded its routings. */
  unrecorded: boolean;
  away: boolean;
  awayFailures: number;
  blip?: Blip & { calls: number; failed: number };
}

/** group-ms's tables, keeping every state each group had (REST changes and ops alike), in order. */
class HistoryMembership extends MapMembership {
  readonly history: Array<{ group: string; members: string[] }> = [];
  override change(group: string, members: string[]) {
    super.change(group, members);
    this.history.push({ group, members: [...members].sort() });
  }

  /** The states `group` had from history's point `from` (the one then, and those after) up to `to`. */
  statesOf(group: string, from: number, to: number): string[][] {
    const then = this.history.slice(0, from).filter((h) => h.group === group);
    const after = this.history.slice(from, to).filter((h) => h.group === group);
    return [...then.slice(-1), ...after].map((h) => h.members);
  }
}

class Scenario {
  readonly bus = new MemoryBus({ retryDelayMs: 1 });
  readonly membership = new HistoryMembership();
  readonly commands = new MapGroupCommands(this.membership);
  readonly log = createMemoryRoutedLog();
  readonly trace: string[] = [];
  readonly units: Unit[] = [];
  /** Every routing the router asked the log to record, in order. */
  readonly recorded: Routing[] = [];
  /** mid -> group and sender, for every message sent. */
  readonly sent = new Map<string, { group: string; sender: string; id: string }>();
  /** Per record of the group topic, where group-ms's history stood when it was written. */
  private readonly publishedAt: number[] = [];
  private nextId = new Map<string, number>();
  private nextOp = 0;
  private life!: Life;
  private groupId = 'router';
  private readonly deliveryBatchSize: number;

  constructor(private readonly random: SeededRandom) {
    for (const group of GROUPS) {
      const members = USERS.filter(() => random.chance(0.5));
      while (members.length < 3) {
        const user = random.pick(USERS);
        if (!members.includes(user)) members.push(user);
      }
      this.membership.change(group, members);
    }
    this.deliveryBatchSize = random.pick([1, 2, 3, 500]);
    this.trace.push(`deliveryBatchSize ${this.deliveryBatchSize}; start ${this.describeGroups()}`);
  }

  describeGroups(): string {
    return GROUPS.map((g) => `${g}=[${this.membership.groups.get(g)!.join(',')}]`).join(' ');
  }

  /** How many ops of the topic group-ms has applied (they are applied in the topic's order). */
  opsApplied(): number {
    return new Set(this.commands.applied.map((c) => `${c.from}:${c.frame.id}`)).size;
  }

  topic(): GroupTopicEvent[] {
    return this.bus.events(TOPICS.group);
  }

  /** A chunk of records as the gateways write them: messages (some sent again) and ops. */
  chunk(): GroupTopicEvent[] {
    const { random } = this;
    const records: GroupTopicEvent[] = [];
    const earlier = [...this.sent.entries()];
    for (let i = random.between(1, 6); i > 0; i--) {
      const group = random.pick(GROUPS);
      const members = this.membership.groups.get(group)!;
      const roll = random.int(100);
      if (roll < 18 && earlier.length > 0) {
        const [, again] = random.pick(earlier); // its app sends it again: no `accepted` came
        records.push(message(again.sender, again.id, again.group));
      } else if (roll < 35) {
        const opId = `o${++this.nextOp}`;
        const kind = members.length <= 2 ? 'add' : random.pick(['add', 'remove', 'leave'] as const);
        const by = random.pick(members);
        if (kind === 'leave') records.push(op(by, opId, { op: 'leave', group }));
        else records.push(op(by, opId, { op: kind, group, members: [random.pick(USERS)] }));
      } else {
        const sender = random.chance(0.8) ? random.pick(members) : random.pick(USERS);
        const n = (this.nextId.get(sender) ?? 0) + 1;
        this.nextId.set(sender, n);
        const id = `m${n}`;
        this.sent.set(`${sender}:${id}`, { group, sender, id });
        records.push(message(sender, id, group));
      }
    }
    return records;
  }

  /** A change over group-ms's REST API: its tables only, nothing in the topic. */
  restChange(): void {
    const { random } = this;
    const group = random.pick(GROUPS);
    const members = this.membership.groups.get(group)!;
    const outsiders = USERS.filter((u) => !members.includes(u));
    let next: string[];
    if (members.length > 2 && (outsiders.length === 0 || random.chance(0.5))) {
      const gone = random.pick(members);
      next = members.filter((m) => m !== gone);
    } else next = [...members, random.pick(outsiders)];
    this.membership.change(group, next);
    this.trace.push(`  REST ${group} -> [${next.join(',')}]`);
    count('REST changes');
  }

  plan(last: boolean): LifePlan {
    const { random } = this;
    const chunks = random.between(1, 3);
    if (last) return { fresh: false, chunks, ending: { kind: 'stop' } };
    const roll = random.int(10);
    const ending: LifePlan['ending'] =
      roll < 3
        ? { kind: 'stop' }
        : roll < 8
          ? { kind: 'crash', at: random.pick(CRASH_KINDS), n: random.between(1, 3) }
          : { kind: 'away-stop', fromChunk: random.int(chunks) };
    const blip: Blip | undefined = random.chance(0.6)
      ? {
          on: random.pick([
            'group-ms',
            'group-ms-answer-lost',
            'record',
            'record',
            'publish',
            'publish',
          ] as const),
          n: random.between(1, 3),
          times: random.between(1, 3),
          restChange: random.chance(0.7),
        }
      : undefined;
    return { fresh: random.chance(0.2), chunks, ending, blip };
  }

  /** One life of the router: started, fed its chunks, ended as planned. */
  async live(index: number, plan: LifePlan): Promise<void> {
    const { ending } = plan;
    this.trace.push(`life ${index}: ${JSON.stringify(plan)}`);
    count('lives');
    if (plan.fresh) count('lives as a fresh consumer group');
    if (plan.fresh) this.groupId = `router-${index}`;
    const life: Life = {
      index,
      handledTo: -1,
      dead: false,
      crashAt: ending.kind === 'crash' ? { kind: ending.at, n: ending.n } : undefined,
      counts: {
        'before-lookup': 0,
        'after-record': 0,
        'before-apply': 0,
        'after-apply': 0,
        'after-batch': 0,
      },
      crashDue: false,
      unrecorded: false,
      away: false,
      awayFailures: 0,
      blip: plan.blip && { ...plan.blip, calls: 0, failed: 0 },
    };
    this.life = life;
    const router = this.router(life);
    for (let c = 0; c < plan.chunks; c++) {
      // group-ms goes away before the chunk is read: its first op is not applied, whatever the timing.
      if (ending.kind === 'away-stop' && c === ending.fromChunk) life.away = true;
      await this.publish(this.chunk());
      if (c === 0) await router.start(); // what the last life left unhandled and the first chunk: one batch
      const end = this.topic().length - 1;
      const settled = () => life.dead || life.handledTo >= end || life.awayFailures > 0;
      // Woken by the handler's progress rather than by waitFor's polling alone: a seed takes less.
      await waitFor(
        async () => settled() || (await this.progress(), settled()),
        10_000,
        `life ${index} to handle up to ${end}`,
      );
      if (life.dead || life.awayFailures > 0) break;
    }
    const crashed = life.dead;
    if (crashed) await life.stopping;
    await router.stop();
    life.dead = true;
    this.trace.push(
      `  ${crashed ? 'crashed' : 'stopped'}, handled to ${life.handledTo}; ${this.describeGroups()}`,
    );
  }

  private async publish(records: GroupTopicEvent[]): Promise<void> {
    const at = this.topic().length;
    this.publishedAt.push(...records.map(() => this.membership.history.length));
    await this.bus.publish(TOPICS.group, records);
    records.forEach((r, i) => this.trace.push(`  @${at + i} ${describeRecord(r)}`));
    count('records', records.length);
  }

  private woken?: () => void;

  /** Resolves when the handler next ends a batch, dies or meets group-ms away (or after 50 ms). */
  private progress(): Promise<void> {
    return new Promise<void>((resolve) => {
      this.woken = resolve;
      setTimeout(resolve, 50);
    });
  }

  private wake(): void {
    this.woken?.();
    this.woken = undefined;
  }

  /** Dies here if this is the life's crash point: stops its consumer (nothing committed), and throws. */
  private step(kind: CrashKind): void {
    const life = this.life;
    if (life.dead) throw new Error('the process is gone');
    life.counts[kind]++;
    const due = life.crashDue || (life.crashAt?.kind === kind && life.counts[kind] === life.crashAt.n);
    if (!due) return;
    // Not between deliveries written and their record (the window the router documents): later.
    life.crashDue = life.unrecorded;
    if (life.crashDue) return;
    this.trace.push(`  crash ${kind} #${life.counts[kind]}`);
    count(`crashes ${kind}`);
    life.dead = true;
    life.stopping = life.sub!.stop();
    throw new Error(`crash ${kind}`);
  }

  /** Whether this call of `on` fails (the blip), making the REST change it brings on its first failure. */
  private blipFails(on: Blip['on'][]): boolean {
    const blip = this.life.blip;
    if (!blip || !on.includes(blip.on)) return false;
    blip.calls++;
    if (blip.calls < blip.n || blip.failed >= blip.times) return false;
    blip.failed++;
    this.trace.push(`  ${blip.on} fails (${blip.failed}/${blip.times})`);
    count(`failures of ${blip.on}`);
    if (blip.failed === 1 && blip.restChange) this.restChange();
    return true;
  }

  private router(life: Life): GroupMessageRouter {
    const inner = this.bus;
    const bus: EventBus = {
      publish: async <T>(topic: TopicSpec<T>, events: T[], options?: { traceId?: string }) => {
        if (topic === (TOPICS.delivery as unknown)) {
          if (life.dead) throw new Error('the process is gone');
          if (this.blipFails(['publish'])) throw new TransientError('kafka is unreachable');
          await inner.publish(TOPICS.delivery, events as DeliveryTopicEvent[], options);
          life.unrecorded = true;
          this.observe(events as DeliveryTopicEvent[]);
          return;
        }
        return inner.publish(topic, events, options);
      },
      subscribe: <T>(options: SubscribeOptions<T>): Subscription => {
        if (options.topic !== (TOPICS.group as unknown)) return inner.subscribe(options);
        const sub = inner.subscribe({
          ...options,
          groupId: this.groupId,
          handle: async (batch) => {
            try {
              if (life.dead) throw new Error('the process is gone');
              count('records handed to the router', batch.length);
              await options.handle(batch);
              this.step('after-batch');
              life.handledTo = Math.max(life.handledTo, Number(batch[batch.length - 1].offset));
            } finally {
              this.wake();
            }
          },
        });
        life.sub = sub;
        return sub;
      },
      partitioner: () => inner.partitioner(),
      ping: () => inner.ping(),
      close: () => inner.close(),
    };
    const groupCommands: GroupCommandApplier = {
      apply: async (commands: GroupCommandEvent[], positions?: TopicPosition[]) => {
        this.step('before-apply');
        if (life.away) {
          if (life.awayFailures++ === 0) count('stops with group-ms away, ops unapplied');
          throw new TransientError('group-ms is unreachable');
        }
        if (this.blipFails(['group-ms'])) throw new TransientError('group-ms is unreachable');
        await this.commands.apply(commands, positions);
        if (this.blipFails(['group-ms-answer-lost'])) throw new TransientError('group-ms timed out'); // applied all the same
        this.step('after-apply');
      },
    };
    const routed: RoutedLog = {
      routingsOf: async (messages) => {
        this.step('before-lookup');
        return this.log.routingsOf(messages);
      },
      record: async (routings) => {
        if (life.dead) throw new Error('the process is gone');
        if (this.blipFails(['record'])) throw new TransientError('connection terminated unexpectedly');
        await this.log.record(routings);
        life.unrecorded = false;
        this.recorded.push(...routings.map((r) => ({ ...r })));
        this.step('after-record');
      },
    };
    return routerOn({
      bus,
      membership: this.membership,
      groupCommands,
      routed,
      groupId: this.groupId,
      changesGroupId: `changes-${life.index}`,
      deliveryBatchSize: this.deliveryBatchSize,
    });
  }

  private observe(events: DeliveryTopicEvent[]): void {
    const opsApplied = this.opsApplied();
    for (const event of events) {
      const deliveries = deliveriesIn(event);
      if (deliveries.length === 0) continue;
      const { frame } = deliveries[0];
      if (!('mid' in frame)) continue;
      const refused = frame.type === 'error';
      const mid = refused ? `${deliveries[0].to}:${frame.id}` : frame.mid;
      const sent = this.sent.get(mid);
      if (!sent) throw new Error(`a delivery of a message never sent: ${JSON.stringify(event)}`);
      const unit: Unit = {
        mid,
        refused,
        recipients: deliveries.map((d) => d.to).sort(),
        members: [...this.membership.groups.get(sent.group)!].sort(),
        history: this.membership.history.length,
        opsApplied,
        life: this.life.index,
      };
      this.units.push(unit);
      count(refused ? 'refusals written' : 'fan-outs written');
      this.trace.push(
        `  -> ${mid} ${refused ? 'refused' : `to [${unit.recipients.join(',')}]`} (members [${unit.members.join(',')}], ${opsApplied} ops applied)`,
      );
    }
  }

  /** What protocol.md promises, checked on everything that happened. */
  violations(): string[] {
    const found: string[] = [];
    const records = this.topic().map((event, offset) => ({ event, offset }));
    const opKeys = records.flatMap(({ event }) =>
      event.kind === 'group-command' ? [`${event.from}:${event.frame.id}`] : [],
    );
    // group-ms applied the topic's ops in its order (none set aside): "ops applied" is a prefix.
    const decided = [...new Set(this.commands.applied.map((c) => `${c.from}:${c.frame.id}`))];
    if (decided.some((key, i) => opKeys[i] !== key))
      found.push(`ops applied out of order: ${decided.join(' ')}`);
    // Each record of each message, with how many ops lie before it.
    const recordsOf = new Map<string, Array<{ place: string; opsBefore: number; history: number }>>();
    let ops = 0;
    for (const { event, offset } of records) {
      if (event.kind === 'group-command') ops++;
      if (event.kind !== 'group-message') continue;
      const mid = `${event.from}:${event.frame.id}`;
      recordsOf.set(mid, [
        ...(recordsOf.get(mid) ?? []),
        {
          place: placeKey({ partition: 0, offset, index: 0 }),
          opsBefore: ops,
          history: this.publishedAt[offset],
        },
      ]);
    }
    const byMid = new Map<string, Unit[]>();
    for (const unit of this.units) byMid.set(unit.mid, [...(byMid.get(unit.mid) ?? []), unit]);
    for (const [mid, units] of byMid) {
      const { sender, group } = this.sent.get(mid)!;
      const first = units.find((u) => !u.refused);
      for (const [i, unit] of units.entries()) {
        const what = `${mid} (${unit.refused ? 'refused' : 'delivered'} in life ${unit.life})`;
        // Routed in its place: every op before one of its records applied, none after it.
        const record = recordsOf.get(mid)!.find((r) => r.opsBefore === unit.opsApplied);
        if (!record) {
          found.push(
            `${what} routed out of place: ${unit.opsApplied} ops applied, its records after ${recordsOf
              .get(mid)!
              .map((r) => r.opsBefore)
              .join('/')}`,
          );
          continue;
        }
        // The members it was routed to: the group's, at a moment between its record and this.
        const states = this.membership.statesOf(group, record.history, unit.history);
        const routedTo = unit.refused
          ? states.find((members) => !members.includes(sender))
          : states.find(
              (members) =>
                members.includes(sender) &&
                members.filter((m) => m !== sender).join(',') === unit.recipients.join(','),
            );
        if (unit.refused) {
          if (first && units.indexOf(first) < i)
            found.push(`${what} refused not_member after it was delivered`);
          else if (!routedTo) found.push(`${what} refused though ${sender} was a member all along`);
          continue;
        }
        if (unit === first) {
          if (!routedTo)
            found.push(
              `${what} went to [${unit.recipients.join(',')}], the members meanwhile ${states.map((m) => `[${m.join(',')}]`).join(' ')}`,
            );
        } else {
          const extra = unit.recipients.filter((r) => !first!.recipients.includes(r));
          if (extra.length > 0)
            found.push(
              `${what} routed again reached [${extra.join(',')}], not members when it was first routed`,
            );
        }
      }
    }
    // A record is routed one way: delivered or refused, never both.
    const outcomes = new Map<string, Set<boolean>>();
    for (const r of this.recorded) {
      const key = `${sentKey(r)}@${r.place}`;
      outcomes.set(key, (outcomes.get(key) ?? new Set()).add(r.delivered));
    }
    for (const [key, both] of outcomes)
      if (both.size > 1) found.push(`${key.split('\u0000').join('/')} recorded both delivered and refused`);
    // Nothing lost: every record was routed, or its message had gone out before it.
    for (const [mid, recs] of recordsOf) {
      const sent = this.sent.get(mid)!;
      const routings = this.recorded.filter((r) => sentKey(r) === sentKey(sent));
      for (const rec of recs) {
        const placeOf = (place: string) => Number(place.split(':')[1]);
        const accounted = routings.some(
          (r) => r.place === rec.place || (r.delivered && placeOf(r.place) < placeOf(rec.place)),
        );
        if (!accounted) found.push(`${mid} at ${rec.place} was never routed`);
      }
    }
    return found;
  }
}

function describeRecord(event: GroupTopicEvent): string {
  if (event.kind === 'group-message') return `${event.from}:${event.frame.id} -> ${event.frame.to}`;
  if (event.kind === 'group-command') {
    const { op: kind, group, members } = event.frame as { op: string; group: string; members?: string[] };
    return `op ${event.from}:${event.frame.id} ${kind} ${group}${members ? ` [${members.join(',')}]` : ''}`;
  }
  return event.kind;
}

async function runSeed(seed: number): Promise<{ violations: string[]; trace: string[] }> {
  const random = seededRandom(seed);
  const scenario = new Scenario(random);
  const lives = random.between(3, 6);
  for (let index = 0; index < lives; index++) {
    const last = index === lives - 1;
    await scenario.live(index, scenario.plan(last));
    if (!last) for (let n = random.int(3); n > 0; n--) scenario.restChange();
  }
  return { violations: scenario.violations(), trace: scenario.trace };
}

const FIRST_SEED = Number(process.env.ROUTER_REPLAY_SEED ?? 1);
const SEEDS = Number(process.env.ROUTER_REPLAY_SEEDS ?? 150);

describe('group-message-router: messages met again, randomized (seeded)', () => {
  it(`keeps protocol.md's promises over ${SEEDS} seeds from ${FIRST_SEED}`, async () => {
    const failures: string[] = [];
    for (let seed = FIRST_SEED; seed < FIRST_SEED + SEEDS; seed++) {
      const { violations, trace } = await runSeed(seed);
      if (violations.length > 0 && failures.length === 0)
        failures.push(
          `seed ${seed} (ROUTER_REPLAY_SEED=${seed} ROUTER_REPLAY_SEEDS=1):\n${violations.join('\n')}\n${trace.join('\n')}`,
        );
      else if (violations.length > 0) failures.push(`seed ${seed}: ${violations[0]}`);
    }
    count('seeds', SEEDS);
    if (process.env.ROUTER_REPLAY_STATS) console.log(Object.fromEntries(tally));
    expect(failures).toEqual([]);
  }, 120_000);
});
