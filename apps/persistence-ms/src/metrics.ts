import { Counter, Registry } from 'prom-client';

export type PersistenceMetrics = ReturnType<typeof createPersistenceMetrics>;

export function createPersistenceMetrics(registry: Registry) {
  const registers = [registry];
  return {
    stored: new Counter({
      name: 'parley_persistence_stored_total',
      help: 'Deliverables newly stored',
      registers,
    }),
    skipped: new Counter({
      name: 'parley_persistence_skipped_total',
      help: 'Offline deliverables not stored: already stored or already acked',
      registers,
    }),
    acked: new Counter({
      name: 'parley_persistence_acked_total',
      help: 'Stored deliverables deleted by an ack, by where the ack came from',
      labelNames: ['source'],
      registers,
    }),
    purged: new Counter({
      name: 'parley_persistence_purged_total',
      help: 'Rows dropped by retention: undelivered deliverables, expired ack tombstones, and the position counters of recipients left with nothing stored (kind: messages, tombstones, sequences)',
      labelNames: ['kind'],
      registers,
    }),
    replayed: new Counter({
      name: 'parley_persistence_replayed_total',
      help: 'Stored deliverables handed back to delivery when a device connected',
      registers,
    }),
  };
}
