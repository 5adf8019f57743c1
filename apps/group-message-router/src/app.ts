import { randomUUID } from 'node:crypto';
import { Counter } from 'prom-client';
import {
  DeliveryTopicEvent,
  GroupChangedEvent,
  GroupCommandEvent,
  GroupMessageEvent,
  GroupTopicEvent,
  recipientCount,
  TopicPosition,
  TOPICS,
  TYPING_NOTICE_MAX_AGE_MS,
} from '@parley/contracts';
import { Envelope, EventBus } from '@parley/kafka';
import { buildHttpServer, HttpServer, Runtime, Service, serviceLifecycle } from '@parley/service-kit';
import { BatchPublisher } from './batch-publisher';
import { fanOutMessage, fanOutTyping, notMemberError, PartitionOf } from './fanout';
import { GroupCommandApplier } from './group-commands';
import { comparePlaces, Membership, MembershipReader } from './membership';
import { MembershipCache } from './membership-cache';
import { placeKey, RoutedLog, routedAlready, Routing, SentMessage, sentKey } from './routed-log';

export interface GroupMessageRouterDeps extends Omit<Runtime, 'closer'> {
  bus: EventBus;
  /** Read-only membership (group-ms's tables); cached here. */
  membership: MembershipReader;
  /** group-ms, which applies the group ops met in the group topic. */
  groupCommands: GroupCommandApplier;
  /** The group messages routed, so that one met again is not routed again. */
  routed: RoutedLog;
  port: number;
  host?: string;
  cacheTtlMs?: number;
  cacheMaxGroups?: number;
  cacheMaxMembers?: number;
  deliveryBatchSize?: number;
  /** Consumer group for the group topic; `group-message-router` by default. */
  groupId?: string;
  /** Consumer group for change events: one per instance, since every instance's cache needs them all. */
  changesGroupId?: string;
}

export interface GroupMessageRouter extends Service {
  http: HttpServer;
  cache: MembershipCache;
}

/**
 * Consumes the group topic: group messages are checked against membership and fanned out to every
 * member except the sender, one `deliver-many` event per delivery partition; group typing goes to
 * the other members as ephemeral notices; group commands are applied by group-ms, in line.
 * At-least-once; the fan-out is deterministic (mid `<from>:<id>`), so a replay repeats the same
 * deliverables.
 */
export function createGroupMessageRouter(deps: GroupMessageRouterDeps): GroupMessageRouter {
  const http = buildHttpServer(deps);
  const cache = new MembershipCache(deps.membership, {
    ttlMs: deps.cacheTtlMs ?? 30_000,
    maxGroups: deps.cacheMaxGroups ?? 10_000,
    maxMembers: deps.cacheMaxMembers ?? 1_000_000,
  });
  const counters = createCounters(deps);
  const route = createRoute(deps, cache, counters);

  const groupTopic = deps.bus.subscribe({
    groupId: deps.groupId ?? 'group-message-router',
    topic: TOPICS.group,
    handle: route,
  });
  const changes = deps.bus.subscribe({
    groupId: deps.changesGroupId ?? `group-message-router-cache-${randomUUID()}`,
    metricsGroup: 'group-message-router-cache',
    topic: TOPICS.groupChanges,
    handle: async (batch: Envelope<GroupChangedEvent>[]) => {
      for (const { event } of batch) cache.invalidate(event.group);
    },
  });

  return {
    http,
    cache,
    ...serviceLifecycle(http, deps, deps.readiness, [changes, groupTopic]),
  };
}

type Counters = ReturnType<typeof createCounters>;

/**
 * Routes a batch in its order: a run of group ops is applied by group-ms before anything behind it
 * is routed, and the groups it touched are read again, so a message sent after an op (a group
 * created offline and then written to, a member removed) meets the membership that op made.
 *
 * A message met again is not routed again: the same record in a batch handled again (a crash or a
 * rebalance before the offsets were committed), or a new one its client sent again (its socket
 * closed before `accepted`). Routed again, it would meet the membership of now: a member added since
 * (by an op, or over REST) would get a message sent before they joined, a sender who left since
 * would be told not_member for a message already delivered. The routed log says which were routed
 * (recorded once their deliveries are written). A batch handled again also skips the events placed
 * before its group's last op from the topic that group-ms applied (ops are applied only once
 * everything before them is routed and written); group-ms keeps that op's place, from this router.
 */
function createRoute(deps: GroupMessageRouterDeps, cache: MembershipCache, counters: Counters) {
  /**
   * Per partition, the place of the last event whose run is done (fanned out and written, or
   * applied). A batch retried because a later run failed (group-ms away) skips what is done,
   * instead of fanning out the messages ahead of the ops again on every attempt.
   */
  const doneUpTo = new Map<number, TopicPosition>();
  /**
   * The group messages routed in a run that is not recorded yet, by place, with the membership
   * they were routed by (the group's, shared by the run's messages). A run retried after its
   * deliveries or its record failed (Kafka or the database away a while, the deliveries written in
   * part) routes them by it again, to the same members, not by the membership of now: a member
   * added over REST meanwhile would get a message routed before they joined, a sender removed
   * meanwhile would be told not_member for a message already delivered. Dropped once recorded, or
   * once the partition is done past them (a record set aside on the DLQ).
   */
  const unrecorded = new Map<string, Decided>();
  /** The membership to route this event by; undefined when it was routed before. Adds a group message to `routed`. */
  const membershipFor = (
    envelope: Envelope<Routed>,
    current: Membership,
    earlier: Map<string, Routing[]>,
    routed: Routing[],
  ): Membership | undefined => {
    const { event } = envelope;
    if (placedBeforeLastOp(envelope, current)) {
      counters.replayed.inc();
      return undefined;
    }
    if (event.kind !== 'group-message') return current;
    const place = placeOf(envelope);
    const routing = { ...sentMessageOf(event), place: placeKey(place) };
    const key = sentKey(routing);
    const before = earlier.get(key) ?? [];
    if (routedAlready(before, routing.place)) {
      (before.some((r) => r.place === routing.place) ? counters.replayed : counters.resent).inc();
      return undefined;
    }
    // This very record, routed in a run that then failed: routed as it was, to the same members.
    const retried = unrecorded.get(routing.place);
    const membership = retried && sentKey(retried.routing) === key ? retried.membership : current;
    const decided = { ...routing, delivered: membership.has(event.from) };
    unrecorded.set(routing.place, { place, routing: decided, membership });
    earlier.set(key, [...before, decided]); // the client's repeat in this very run
    routed.push(decided);
    return membership;
  };
  /** A run of messages and typing: fanned out, written, then its group messages recorded as routed. */
  const routeRun = async (
    envelopes: Envelope<Routed>[],
    deliveries: BatchPublisher<DeliveryTopicEvent>,
    partitionOf: PartitionOf,
  ) => {
    const events = envelopes.map((e) => e.event);
    const [memberships, earlier] = await Promise.all([
      lookUpGroups(cache, events),
      routingsOf(deps.routed, events),
    ]);
    const routed: Routing[] = [];
    for (const envelope of envelopes) {
      const membership = membershipFor(envelope, memberships.get(envelope.event.frame.to)!, earlier, routed);
      if (membership) await deliveries.add(routeToMembers(envelope.event, membership, partitionOf, counters));
    }
    await deliveries.flush();
    await deps.routed.record(routed);
    for (const { place } of routed) unrecorded.delete(place);
  };
  return async (batch: Envelope<GroupTopicEvent>[]) => {
    const partitionOf = await deps.bus.partitioner(TOPICS.delivery);
    const deliveries = new BatchPublisher<DeliveryTopicEvent>(deps.bus, TOPICS.delivery, {
      batchSize: deps.deliveryBatchSize ?? 500,
      weigh: recipientCount,
    });
    const todo = batch.filter((e) => {
      const done = doneUpTo.get(e.partition);
      return !done || comparePlaces(placeOf(e), done) > 0;
    });
    for (const run of runsOf(todo)) {
      if (run.commands) {
        await deliveries.flush(); // what was sent before the ops goes out before their notices
        await deps.groupCommands.apply(
          run.commands.map((e) => e.event),
          run.commands.map(placeOf),
        );
        for (const { event } of run.commands) cache.invalidate(event.frame.group);
        markDone(doneUpTo, run.commands);
        continue;
      }
      await routeRun(run.routed, deliveries, partitionOf);
      markDone(doneUpTo, run.routed);
    }
    forgetPassed(unrecorded, doneUpTo);
    for (const { event } of todo) counters.events.inc({ kind: event.kind });
  };
}

/** A group message's routing, not recorded yet, and the membership it was routed by. */
interface Decided {
  place: TopicPosition;
  routing: Routing;
  membership: Membership;
}

/** Drops the decisions of places their partition is done past: never met again by this router. */
function forgetPassed(unrecorded: Map<string, Decided>, doneUpTo: Map<number, TopicPosition>): void {
  for (const [key, { place }] of unrecorded) {
    const done = doneUpTo.get(place.partition);
    if (done && comparePlaces(place, done) <= 0) unrecorded.delete(key);
  }
}

function sentMessageOf(event: GroupMessageEvent): SentMessage {
  return { group: event.frame.to, sender: event.from, id: event.frame.id };
}

/** The routings recorded of these events' group messages, by message (sentKey). */
async function routingsOf(log: RoutedLog, events: Routed[]): Promise<Map<string, Routing[]>> {
  const messages = events.flatMap((e) => (e.kind === 'group-message' ? [sentMessageOf(e)] : []));
  const byMessage = new Map<string, Routing[]>();
  for (const routing of await log.routingsOf(messages)) {
    const key = sentKey(routing);
    byMessage.set(key, [...(byMessage.get(key) ?? []), routing]);
  }
  return byMessage;
}

/** An event's place in the group topic. */
function placeOf(envelope: Envelope<unknown>): TopicPosition {
  return { partition: envelope.partition, offset: Number(envelope.offset), index: envelope.index ?? 0 };
}

/**
 * How far a group topic event's record time may lie after the time its group's last piped op was
 * applied, and the event still be taken for one placed before that op: the clocks of the hosts that
 * wrote them may differ. An event written later than that is routed, whatever its place (offsets
 * that started again: a topic deleted and made again).
 */
const CLOCK_SKEW_MS = 60_000;

/**
 * Whether this event was routed before: its group's last op from the topic lies after it (same
 * partition) and was applied after it was written. Such an op is applied only once everything before
 * it in the partition has been routed and its deliveries written.
 */
function placedBeforeLastOp(envelope: Envelope<Routed>, membership: Membership): boolean {
  const { lastOp } = membership;
  if (!lastOp || lastOp.partition !== envelope.partition) return false;
  return comparePlaces(lastOp, placeOf(envelope)) > 0 && envelope.timestamp <= lastOp.at + CLOCK_SKEW_MS;
}

function markDone(doneUpTo: Map<number, TopicPosition>, envelopes: Envelope<GroupTopicEvent>[]): void {
  for (const envelope of envelopes) {
    const place = placeOf(envelope);
    const done = doneUpTo.get(place.partition);
    if (!done || comparePlaces(place, done) > 0) doneUpTo.set(place.partition, place);
  }
}

type Routed = Exclude<GroupTopicEvent, GroupCommandEvent>;
type Run =
  | { commands: Envelope<GroupCommandEvent>[]; routed?: never }
  | { commands?: never; routed: Envelope<Routed>[] };

/** The batch cut into runs of consecutive group ops and runs of consecutive messages and typing. */
function runsOf(envelopes: Envelope<GroupTopicEvent>[]): Run[] {
  const runs: Run[] = [];
  for (const envelope of envelopes) {
    const last = runs[runs.length - 1];
    if (isCommand(envelope)) {
      if (last?.commands) last.commands.push(envelope);
      else runs.push({ commands: [envelope] });
    } else if (last?.routed) last.routed.push(envelope as Envelope<Routed>);
    else runs.push({ routed: [envelope as Envelope<Routed>] });
  }
  return runs;
}

function isCommand(envelope: Envelope<GroupTopicEvent>): envelope is Envelope<GroupCommandEvent> {
  return envelope.event.kind === 'group-command';
}

function routeToMembers(
  event: Routed,
  membership: Membership,
  partitionOf: PartitionOf,
  counters: Counters,
): DeliveryTopicEvent[] {
  if (event.kind === 'group-typing') {
    // Sent this long ago (read behind a backlog: group-ms away, a burst), it is about a moment gone.
    if (event.sentAt < Date.now() - TYPING_NOTICE_MAX_AGE_MS) {
      counters.staleTyping.inc();
      return [];
    }
    return membership.has(event.from) ? fanOutTyping(event, membership, partitionOf) : [];
  }
  if (!membership.has(event.from)) {
    counters.refused.inc();
    return [notMemberError(event)];
  }
  const fanned = fanOutMessage(event, membership, partitionOf);
  counters.fannedOut.inc(fanned.reduce((sum, e) => sum + recipientCount(e), 0));
  return fanned;
}

/**
 * Membership of every group these events message or type to, read concurrently (once per group),
 * after one check that what the cache holds is still current.
 */
async function lookUpGroups(cache: MembershipCache, events: Routed[]): Promise<Map<string, Membership>> {
  const groups = [...new Set(events.map((e) => e.frame.to))];
  await cache.refresh(groups);
  const found = await Promise.all(groups.map((group) => cache.membersOf(group)));
  return new Map(groups.map((group, i) => [group, found[i]]));
}

function createCounters(deps: Pick<Runtime, 'metrics'>) {
  const registers = [deps.metrics];
  return {
    events: new Counter({
      name: 'parley_group_router_events_total',
      help: 'Group topic events, by kind',
      labelNames: ['kind'],
      registers,
    }),
    fannedOut: new Counter({
      name: 'parley_group_router_deliveries_total',
      help: 'Group message deliverables fanned out',
      registers,
    }),
    replayed: new Counter({
      name: 'parley_group_router_replayed_total',
      help: 'Group events handled again (a replay after a crash or a rebalance) and skipped: routed before',
      registers,
    }),
    resent: new Counter({
      name: 'parley_group_router_resent_total',
      help: 'Group messages a client sent again (the same mid to the same group) and not routed again: routed before',
      registers,
    }),
    staleTyping: new Counter({
      name: 'parley_group_router_stale_typing_total',
      help: 'Group typing notices not fanned out: sent longer ago than 30 s (read behind a backlog)',
      registers,
    }),
    refused: new Counter({
      name: 'parley_group_router_not_member_total',
      help: 'Group messages refused: sender not a member',
      registers,
    }),
  };
}
