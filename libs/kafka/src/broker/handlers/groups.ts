import type { Handler } from '../context';
import { ErrorCode } from '../protocol/errors';
import { Writer } from '../protocol/writer';

const throttle = (w: Writer, apiVersion: number, from: number) => (apiVersion >= from ? w.int32(0) : w);

/** FindCoordinator v0-1: this broker coordinates every group. */
export const findCoordinator: Handler = ({ apiVersion }, r, broker) => {
  r.string(); // key
  if (apiVersion >= 1) r.int8(); // key type
  const w = throttle(new Writer(), apiVersion, 1).int16(ErrorCode.NONE);
  if (apiVersion >= 1) w.string(null);
  return w.int32(broker.nodeId).string(broker.advertisedHost).int32(broker.port);
};

/** JoinGroup v0-3 (v4's MEMBER_ID_REQUIRED round trip is not needed below v4). */
export const joinGroup: Handler = async (header, r, broker) => {
  const groupId = r.string();
  const sessionTimeout = r.int32();
  const rebalanceTimeout = header.apiVersion >= 1 ? r.int32() : sessionTimeout;
  const memberId = r.string();
  const protocolType = r.string();
  const protocols = r.array((r) => ({
    name: r.string(),
    metadata: Buffer.from(r.bytes() ?? Buffer.alloc(0)),
  }));
  const res = await broker.groups.join({
    groupId,
    memberId,
    clientId: header.clientId ?? '',
    clientHost: header.clientHost,
    sessionTimeout,
    rebalanceTimeout,
    protocolType,
    protocols,
  });
  const w = throttle(new Writer(), header.apiVersion, 2);
  w.int16(res.errorCode)
    .int32(res.generationId)
    .string(res.protocol ?? '')
    .string(res.leaderId)
    .string(res.memberId);
  return w.array(res.members, (w, m) => w.string(m.memberId).bytes(m.metadata));
};

/** SyncGroup v0-1: the leader's assignments reach every member. */
export const syncGroup: Handler = async ({ apiVersion }, r, broker) => {
  const groupId = r.string();
  const generation = r.int32();
  const memberId = r.string();
  const assignments = r.array((r) => ({ memberId: r.string(), assignment: r.bytes() ?? Buffer.alloc(0) }));
  const res = await broker.groups.sync(groupId, generation, memberId, assignments);
  return throttle(new Writer(), apiVersion, 1).int16(res.errorCode).bytes(res.assignment);
};

/** Heartbeat v0-1. */
export const heartbeat: Handler = ({ apiVersion }, r, broker) => {
  const groupId = r.string();
  const generation = r.int32();
  const memberId = r.string();
  return throttle(new Writer(), apiVersion, 1).int16(broker.groups.heartbeat(groupId, generation, memberId));
};

/** LeaveGroup v0-1. */
export const leaveGroup: Handler = ({ apiVersion }, r, broker) => {
  const groupId = r.string();
  const memberId = r.string();
  return throttle(new Writer(), apiVersion, 1).int16(broker.groups.leave(groupId, memberId));
};

/** DescribeGroups v0-1. */
export const describeGroups: Handler = ({ apiVersion }, r, broker) => {
  const ids = r.array((r) => r.string());
  const w = throttle(new Writer(), apiVersion, 1);
  return w.array(ids, (w, id) => {
    const g = broker.groups.describe(id);
    // Known by its offsets alone (committed standalone, or before a restart): Empty, as in Kafka.
    const state = g.state === 'Dead' && broker.offsets.list(id).length > 0 ? 'Empty' : g.state;
    w.int16(ErrorCode.NONE).string(id).string(state).string(g.protocolType).string(g.protocol);
    w.array(g.members, (w, m) =>
      w.string(m.memberId).string(m.clientId).string(m.clientHost).bytes(m.metadata).bytes(m.assignment),
    );
  });
};

/** ListGroups v0-2: the groups with members or committed offsets (those alone: protocol type ''). */
export const listGroups: Handler = ({ apiVersion }, _r, broker) => {
  const listed = new Map(broker.groups.list().map((g) => [g.groupId, g.protocolType]));
  for (const id of broker.offsets.groupIds()) if (!listed.has(id)) listed.set(id, '');
  const w = throttle(new Writer(), apiVersion, 1).int16(ErrorCode.NONE);
  return w.array([...listed], (w, [id, protocolType]) => w.string(id).string(protocolType));
};

/** OffsetCommit v2-3: checked against the group's generation, then stored durably. */
export const offsetCommit: Handler = async ({ apiVersion }, r, broker) => {
  const groupId = r.string();
  const generation = r.int32();
  const memberId = r.string();
  r.int64(); // retention time
  const topics = r.array((r) => ({
    name: r.string(),
    partitions: r.array((r) => ({ partition: r.int32(), offset: r.int64(), metadata: r.nullableString() })),
  }));
  const groupError = groupId
    ? broker.groups.checkCommit(groupId, generation, memberId)
    : ErrorCode.INVALID_GROUP_ID;
  const commits: [string, number, number, string | null][] = [];
  const w = throttle(new Writer(), apiVersion, 3);
  w.array(topics, (w, t) => {
    w.string(t.name).array(t.partitions, (w, p) => {
      let code = groupError;
      if (code === ErrorCode.NONE && !broker.topics.partition(t.name, p.partition))
        code = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION;
      if (code === ErrorCode.NONE) commits.push([t.name, p.partition, p.offset, p.metadata]);
      w.int32(p.partition).int16(code);
    });
  });
  broker.offsets.commit(groupId, commits);
  // As a produce under `fsync: always`: on disk before it is acknowledged. A failed sync fails the
  // request (its connection closes, as a produce's): the client commits again.
  if (broker.topics.fsync === 'always' && commits.length > 0) await broker.offsets.sync();
  return w;
};

/** OffsetFetch v1-3 (v3: a null topic list asks for every committed partition). */
export const offsetFetch: Handler = ({ apiVersion }, r, broker) => {
  const groupId = r.string();
  const requested = r.nullableArray((r) => ({ name: r.string(), partitions: r.array((r) => r.int32()) }));
  let topics: { name: string; partitions: number[] }[];
  if (requested) topics = requested;
  else {
    const byTopic = new Map<string, number[]>();
    for (const c of broker.offsets.list(groupId))
      byTopic.set(c.topic, [...(byTopic.get(c.topic) ?? []), c.partition]);
    topics = [...byTopic].map(([name, partitions]) => ({ name, partitions }));
  }
  const w = throttle(new Writer(), apiVersion, 3);
  w.array(topics, (w, t) => {
    w.string(t.name).array(t.partitions, (w, partition) => {
      const committed = broker.offsets.get(groupId, t.name, partition);
      w.int32(partition)
        .int64(committed?.offset ?? -1)
        .string(committed?.metadata ?? '')
        .int16(ErrorCode.NONE);
    });
  });
  if (apiVersion >= 2) w.int16(ErrorCode.NONE);
  return w;
};
