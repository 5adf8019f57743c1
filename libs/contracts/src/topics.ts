import { TSchema } from '@sinclair/typebox';
import {
  ConnectionTopicEvent,
  DeliveryTopicEvent,
  GroupChangedEvent,
  GroupCommandEvent,
  GroupTopicEvent,
  InboundEvent,
  OfflineTopicEvent,
} from './events';
import type {
  ConnectionTopicEvent as ConnectionEvent,
  DeliveryTopicEvent as DeliveryEvent,
  GroupChangedEvent as GroupChanged,
  GroupCommandEvent as GroupCommand,
  GroupTopicEvent as GroupEvent,
  InboundEvent as Inbound,
  OfflineTopicEvent as OfflineEvent,
} from './events';

/**
 * A topic bound to its event schema and its partition-key rule. Everything about one recipient is
 * keyed by the recipient's user id (so one consumer owns a user and per-user order holds); group
 * traffic is keyed by group id; inbound frames by sender.
 */
export interface TopicSpec<E> {
  readonly name: string;
  readonly schema: TSchema;
  readonly key: (event: E) => string;
  readonly description: string;
  /** Default partition count when the project provisions the topic. */
  readonly partitions: number;
  /** Default retention in milliseconds. */
  readonly retentionMs: number;
}

const DAY = 24 * 60 * 60 * 1000;

/**
 * How often a topic starts a new segment (`segment.ms`) under `retentionMs`: an eighth of it, 12 h
 * at most. Kafka deletes whole segments, each once its newest record is past the retention, so a
 * record stays for its retention plus up to this. With Kafka's default (7 days), a 1-day topic kept
 * records 8 days and a 7-day one 14: past what an erasure promises, and past the ops and ack
 * tombstones group-ms and persistence-ms keep (8 days) to tell a record read again.
 */
export function segmentMsOf(retentionMs: number): number {
  return Math.min(DAY / 2, Math.floor(retentionMs / 8));
}

export const TOPICS = {
  inbound: {
    name: 'parley.inbound.v1',
    schema: InboundEvent,
    key: (e: Inbound) => e.from,
    description: 'Client frames from the gateways, keyed by sender',
    partitions: 12,
    retentionMs: 7 * DAY,
  } satisfies TopicSpec<Inbound>,
  delivery: {
    name: 'parley.delivery.v1',
    schema: DeliveryTopicEvent,
    key: deliveryKey,
    description: 'Deliverables and acks for session-ms, keyed by the user who must act on them',
    partitions: 12,
    retentionMs: 7 * DAY,
  } satisfies TopicSpec<DeliveryEvent>,
  group: {
    name: 'parley.group.v1',
    schema: GroupTopicEvent,
    key: groupKey,
    description: 'Group messages and group operations, keyed by group id',
    partitions: 12,
    retentionMs: 7 * DAY,
  } satisfies TopicSpec<GroupEvent>,
  groupCommands: {
    name: 'parley.group-commands.v1',
    schema: GroupCommandEvent,
    key: (e: GroupCommand) => e.frame.group,
    description: 'Group operations for group-ms, keyed by group id',
    partitions: 12,
    retentionMs: 7 * DAY,
  } satisfies TopicSpec<GroupCommand>,
  groupChanges: {
    name: 'parley.group-changes.v1',
    schema: GroupChangedEvent,
    key: (e: GroupChanged) => e.group,
    description: 'Membership changes, so caches drop stale entries; keyed by group id',
    partitions: 3,
    retentionMs: 1 * DAY,
  } satisfies TopicSpec<GroupChanged>,
  offline: {
    name: 'parley.offline.v1',
    schema: OfflineTopicEvent,
    key: (e: OfflineEvent) => (e.kind === 'offline' ? e.to : e.user),
    description: 'Undelivered deliverables and late acks for persistence-ms and push-ms, keyed by recipient',
    partitions: 12,
    retentionMs: 7 * DAY,
  } satisfies TopicSpec<OfflineEvent>,
  connections: {
    name: 'parley.connections.v1',
    schema: ConnectionTopicEvent,
    key: (e: ConnectionEvent) => (e.kind === 'gateway-heartbeat' ? e.gateway : e.user),
    description:
      'Devices connecting and disconnecting (keyed by user), gateway heartbeats (keyed by gateway)',
    partitions: 12,
    retentionMs: 1 * DAY,
  } satisfies TopicSpec<ConnectionEvent>,
} as const;

function deliveryKey(e: DeliveryEvent): string {
  if (e.kind === 'ack') return e.user;
  return e.kind === 'deliver-many' ? e.to[0] : e.to;
}

function groupKey(e: GroupEvent): string {
  return e.kind === 'group-command' ? e.frame.group : e.frame.to;
}

export type TopicName = keyof typeof TOPICS;
export type EventOf<T extends TopicName> = Parameters<(typeof TOPICS)[T]['key']>[0];

/** The dead-letter topic for records a consumer gave up on. */
export function dlqTopic(topic: string): string {
  return `${topic}.dlq`;
}
