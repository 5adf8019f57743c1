import { Counter, Gauge, Histogram, Registry } from 'prom-client';

export type DeliveryMetrics = ReturnType<typeof createDeliveryMetrics>;

/** The metrics of delivery (`parley_session_*`), registered in `registry`. */
export function createDeliveryMetrics(registry: Registry) {
  const counter = (name: string, help: string, labelNames: string[] = []) =>
    new Counter({ name: `parley_session_${name}`, help, labelNames, registers: [registry] });
  return {
    pushed: counter('pushed_total', 'Deliverables pushed to gateways (each attempt)'),
    offline: counter('offline_total', 'Deliverables handed to the offline topic'),
    unknownAcksForgotten: counter(
      'unknown_acks_forgotten_total',
      'Acks of mids that completed nothing, left unremembered: their user passed the quota of such acks a minute (a client acking made-up mids)',
    ),
    acked: counter(
      'acked_total',
      "Acks that completed a deliverable pending here (pushed, or its stored copy replayed), or repeated such an ack (another device, a re-ack); not a sender's ack of its accepted frame, nor one of a mid nothing here awaited",
    ),
    duplicates: counter('duplicates_total', 'Deliverables skipped as already pending or acked'),
    firstPushLatency: new Histogram({
      name: 'parley_session_first_push_latency_seconds',
      help: "From a message's sentAt (stamped by the gateway that took it) to the first answer from a gateway holding the recipient's devices (written to the sockets), once a message, by chat: direct or group",
      labelNames: ['chat'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    }),
    reconnectPushes: counter(
      'reconnect_pushes_total',
      'Pending deliverables pushed at once to a device that connected, a failed gateway call included (pushed_total counts those that went)',
    ),
    pushFailures: counter(
      'push_failures_total',
      'Failed calls to a gateway, by reason: unreachable, timeout, silent (not called: the gateway let a call time out in the last 5 s), http_<status> (503: the gateway is shutting down), bad_answer, other',
      ['reason'],
    ),
    staleConnections: counter(
      'stale_connections_total',
      'Connections found gone without their connection-down (the gateway said it does not hold them, or restarted), removed',
    ),
    announcements: counter(
      'announcements_total',
      'Gateways asked to announce their open connections again: the store may lack some (it lost its state since the gateway started, or forgot the gateway after a long silence; an older gateway names no start)',
    ),
    storeLost: counter(
      'store_lost_total',
      'Times the session store was found empty after holding state (Redis restarted without its data), or lacking writes seen short of its replicas (REDIS_WAIT_REPLICAS: a failover to a replica that lagged)',
    ),
    commitsHeld: counter(
      'commits_held_total',
      'Commits of delivery offsets held back (REDIS_WAIT_REPLICAS), by why: short (fewer replicas had the writes within REDIS_WAIT_TIMEOUT_MS), lost (Redis lacks writes: a failover to a replica that lagged), error (Redis did not answer), reread (a re-read is owed)',
      ['because'],
    ),
    redisWait: new Histogram({
      name: 'parley_session_redis_wait_seconds',
      help: 'How long Redis took to show its replicas have what session-ms wrote (WAIT, REDIS_WAIT_REPLICAS), before each commit of delivery offsets',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
    ackReadLag: new Gauge({
      name: 'parley_session_ack_read_lag_seconds',
      help: 'How far behind the wall clock the slowest replica has read acks; retries wait for it (up to 60 s)',
      registers: [registry],
    }),
  };
}
