import type { BrokerContext, Handler } from '../context';
import { isLegalTopicName } from '../log/topic-store';
import { SUPPORTED_VERSIONS } from '../protocol/api';
import { ErrorCode } from '../protocol/errors';
import { Writer } from '../protocol/writer';

/** ApiVersions v0-2. An unsupported version is answered in v0 with UNSUPPORTED_VERSION, as Kafka does. */
export const apiVersions: Handler = ({ apiVersion }) => {
  const [min, max] = SUPPORTED_VERSIONS.get(18)!;
  const ok = apiVersion >= min && apiVersion <= max;
  const w = new Writer().int16(ok ? ErrorCode.NONE : ErrorCode.UNSUPPORTED_VERSION);
  w.array([...SUPPORTED_VERSIONS], (w, [key, [lo, hi]]) => w.int16(key).int16(lo).int16(hi));
  if (ok && apiVersion >= 1) w.int32(0);
  return w;
};

/** Metadata v1-4: brokers, controller, topics; auto-creates requested topics when allowed. */
export const metadata: Handler = ({ apiVersion }, r, broker) => {
  const requested = r.nullableArray((r) => r.string());
  const allowAutoCreate = apiVersion >= 4 ? r.bool() : true;
  const w = new Writer(512);
  if (apiVersion >= 3) w.int32(0);
  w.array([0], (w) => w.int32(broker.nodeId).string(broker.advertisedHost).int32(broker.port).string(null));
  if (apiVersion >= 2) w.string(broker.clusterId);
  w.int32(broker.nodeId);
  const names = requested ?? broker.topics.list().map((t) => t.name);
  w.array(names, (w, name) => {
    let topic = broker.topics.get(name);
    let error: number = ErrorCode.NONE;
    if (!topic && requested && allowAutoCreate && broker.autoCreateTopics && isLegalTopicName(name)) {
      topic = broker.topics.create(name, broker.defaultPartitions);
    }
    if (!topic)
      error = isLegalTopicName(name)
        ? ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        : ErrorCode.INVALID_TOPIC_EXCEPTION;
    w.int16(error).string(name).bool(false);
    w.array(topic?.partitions ?? [], (w, log) =>
      w
        .int16(ErrorCode.NONE)
        .int32(log.partition)
        .int32(broker.nodeId)
        .array([broker.nodeId], (w, n) => w.int32(n))
        .array([broker.nodeId], (w, n) => w.int32(n)),
    );
  });
  return w;
};

/** CreateTopics v0-2. */
export const createTopics: Handler = ({ apiVersion }, r, broker) => {
  const topics = r.array((r) => ({
    name: r.string(),
    partitions: r.int32(),
    replication: r.int16(),
    assignments: r.array((r) => ({ partition: r.int32(), replicas: r.array((r) => r.int32()) })),
    configs: r.array((r) => ({ name: r.string(), value: r.nullableString() })),
  }));
  r.int32(); // timeout
  const validateOnly = apiVersion >= 1 ? r.bool() : false;
  const results = topics.map((t) => {
    const fail = (code: number, message: string) => ({ name: t.name, code, message });
    if (!isLegalTopicName(t.name)) return fail(ErrorCode.INVALID_TOPIC_EXCEPTION, 'illegal topic name');
    if (broker.topics.get(t.name))
      return fail(ErrorCode.TOPIC_ALREADY_EXISTS, `topic ${t.name} already exists`);
    const partitions =
      t.assignments.length > 0
        ? t.assignments.length
        : t.partitions === -1
          ? broker.defaultPartitions
          : t.partitions;
    if (partitions < 1 || partitions > 10_000)
      return fail(ErrorCode.INVALID_PARTITIONS, `invalid partition count ${partitions}`);
    if (t.replication > 1)
      return fail(ErrorCode.INVALID_REPLICATION_FACTOR, 'a single-node broker keeps one replica');
    if (!validateOnly) {
      const configs: Record<string, string> = {};
      for (const c of t.configs) if (c.value !== null) configs[c.name] = c.value;
      broker.topics.create(t.name, partitions, configs);
    }
    return { name: t.name, code: ErrorCode.NONE, message: null as string | null };
  });
  const w = new Writer();
  if (apiVersion >= 2) w.int32(0);
  w.array(results, (w, res) => {
    w.string(res.name).int16(res.code);
    if (apiVersion >= 1) w.string(res.code === ErrorCode.NONE ? null : res.message);
  });
  return w;
};

/** DeleteTopics v0-1; the group offsets of a deleted topic go with it. */
export const deleteTopics: Handler = ({ apiVersion }, r, broker: BrokerContext) => {
  const names = r.array((r) => r.string());
  r.int32(); // timeout
  const w = new Writer();
  if (apiVersion >= 1) w.int32(0);
  w.array(names, (w, name) => {
    const deleted = broker.topics.delete(name);
    if (deleted) broker.offsets.deleteTopic(name);
    w.string(name).int16(deleted ? ErrorCode.NONE : ErrorCode.UNKNOWN_TOPIC_OR_PARTITION);
  });
  return w;
};

/** InitProducerId v0-1: a fresh producer id for an idempotent producer (no transactions). */
export const initProducerId: Handler = (_header, r, broker) => {
  r.nullableString(); // transactional id
  r.int32(); // transaction timeout
  return new Writer().int32(0).int16(ErrorCode.NONE).int64(broker.nextProducerId()).int16(0);
};
