import { Kafka } from 'kafkajs';
import { dlqTopic, segmentMsOf, TOPICS, TopicSpec } from '@parley/contracts';

export interface ProvisionOptions {
  /** Overrides each topic's default partition count. */
  partitions?: number;
  replicationFactor?: number;
  topics?: TopicSpec<never>[];
}

/**
 * Creates the project's topics (and their DLQs) that do not exist yet; existing ones are left as
 * they are. Safe to run from every service at start-up.
 */
export async function provisionTopics(kafka: Kafka, options: ProvisionOptions = {}): Promise<string[]> {
  const specs = options.topics ?? (Object.values(TOPICS) as TopicSpec<never>[]);
  const admin = kafka.admin();
  await admin.connect();
  try {
    const existing = new Set(await admin.listTopics());
    const wanted = specs.flatMap((spec) => [
      { name: spec.name, partitions: options.partitions ?? spec.partitions, retentionMs: spec.retentionMs },
      { name: dlqTopic(spec.name), partitions: 1, retentionMs: 30 * 24 * 3600 * 1000 },
    ]);
    const missing = wanted.filter((t) => !existing.has(t.name));
    if (missing.length > 0) {
      await admin.createTopics({
        waitForLeaders: true,
        topics: missing.map((t) => ({
          topic: t.name,
          numPartitions: t.partitions,
          replicationFactor: options.replicationFactor ?? 1,
          configEntries: [
            { name: 'retention.ms', value: String(t.retentionMs) },
            { name: 'segment.ms', value: String(segmentMsOf(t.retentionMs)) },
          ],
        })),
      });
    }
    return missing.map((t) => t.name);
  } finally {
    await admin.disconnect();
  }
}
