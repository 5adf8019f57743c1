import { Counter, Registry } from 'prom-client';

/** The bus's Prometheus counters, registered on `registry` when there is one. */
export function createCounters(registry?: Registry) {
  const registers = registry ? [registry] : [];
  return {
    published: new Counter({
      name: 'parley_kafka_published_total',
      help: 'Events published',
      labelNames: ['topic'],
      registers,
    }),
    records: new Counter({
      name: 'parley_kafka_records_produced_total',
      help: 'Kafka records written; fewer than events published where events are packed',
      labelNames: ['topic'],
      registers,
    }),
    consumed: new Counter({
      name: 'parley_kafka_consumed_total',
      help: 'Events read and done with: handled, or parked on the DLQ (parley_kafka_dead_lettered_total counts those)',
      labelNames: ['topic', 'group'],
      registers,
    }),
    retried: new Counter({
      name: 'parley_kafka_retries_total',
      help: 'Handler retries',
      labelNames: ['topic', 'group'],
      registers,
    }),
    deadLettered: new Counter({
      name: 'parley_kafka_dead_lettered_total',
      help: 'Records parked on the DLQ',
      labelNames: ['topic', 'group'],
      registers,
    }),
  };
}

export type Counters = ReturnType<typeof createCounters>;
