/**
 * Prints the Strimzi KafkaTopic resources for every topic in libs/contracts (TOPICS) and its DLQ:
 *   npx tsx tools/deploy-check/src/kafka-topics.ts > deploy/k8s/base/kafka/topics.yaml
 * The deploy-check tests fail when the committed file and the code disagree.
 */
import { stringify } from 'yaml';
import { dlqTopic, segmentMsOf, TOPICS } from '@parley/contracts';

export const KAFKA_CLUSTER = 'parley';
export const DLQ_PARTITIONS = 1;
export const DLQ_RETENTION_MS = 30 * 24 * 3600 * 1000;

export interface TopicPlan {
  name: string;
  partitions: number;
  retentionMs: number;
  /** `segment.ms`: how much longer than its retention a record may stay (segmentMsOf). */
  segmentMs: number;
  description: string;
}

/** Every topic the code uses, with the partitions, retention and segment time it is provisioned with. */
export function plannedTopics(): TopicPlan[] {
  return Object.values(TOPICS).flatMap((spec) => [
    {
      name: spec.name,
      partitions: spec.partitions,
      retentionMs: spec.retentionMs,
      segmentMs: segmentMsOf(spec.retentionMs),
      description: spec.description,
    },
    {
      name: dlqTopic(spec.name),
      partitions: DLQ_PARTITIONS,
      retentionMs: DLQ_RETENTION_MS,
      segmentMs: segmentMsOf(DLQ_RETENTION_MS),
      description: `Dead letters of ${spec.name}`,
    },
  ]);
}

/** A Kubernetes name for a topic: parley.group-commands.v1.dlq -> parley-group-commands-v1-dlq. */
export function resourceName(topic: string): string {
  return topic.toLowerCase().replace(/[^a-z0-9-]/g, '-');
}

export function kafkaTopicsYaml(replicas = 3): string {
  const header = [
    '# Generated from libs/contracts/src/topics.ts by tools/deploy-check/src/kafka-topics.ts; regenerate,',
    '# do not edit: npx tsx tools/deploy-check/src/kafka-topics.ts > deploy/k8s/base/kafka/topics.yaml',
    '# Partitions, retention and segment time per topic as in the code; every topic has a <name>.dlq (1 partition, 30 days).',
    '# replicas: 3 here; the dev overlay sets 1. min.insync.replicas comes from the Kafka cluster config.',
    '',
  ].join('\n');
  const docs = plannedTopics().map((t) =>
    stringify(
      {
        apiVersion: 'kafka.strimzi.io/v1beta2',
        kind: 'KafkaTopic',
        metadata: {
          name: resourceName(t.name),
          labels: { 'strimzi.io/cluster': KAFKA_CLUSTER },
          annotations: { 'parley.io/description': t.description },
        },
        spec: {
          topicName: t.name,
          partitions: t.partitions,
          replicas,
          config: { 'retention.ms': t.retentionMs, 'segment.ms': t.segmentMs, 'cleanup.policy': 'delete' },
        },
      },
      { lineWidth: 0 },
    ),
  );
  return header + docs.join('---\n');
}

if (require.main === module) process.stdout.write(kafkaTopicsYaml());
