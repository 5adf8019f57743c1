import type { EventBus } from '@parley/kafka';
import type { Logger } from 'pino';
import type { DeliveryMetrics } from './delivery-metrics';
import type { GatewayClient } from './gateway-client';
import type { SessionStore } from './store/session-store';

export interface DeliverySettings {
  /** How long to wait for an ack before pushing again. */
  ackTimeoutMs: number;
  /** Pushes before a deliverable goes offline. */
  maxAttempts: number;
  /** How long an acked mid is remembered, so a duplicate is not delivered again. */
  rememberAckedMs: number;
  /** A gateway that has not beaten for this long is considered gone. */
  gatewayTtlMs: number;
  /** How often `retryDue` runs (the read-position reports expire after a few ticks). */
  retryTickMs: number;
  /** A reader stalled this far behind no longer holds retries back (default 60 s). */
  maxAckReadLagMs?: number;
  /**
   * Acks of mids that completed nothing a user may leave remembered a minute, on this replica
   * (default UNKNOWN_ACKS_PER_MINUTE); past that, such acks leave no marker.
   */
  unknownAcksPerMinute?: number;
}

/** This replica's reading of the delivery topic (its subscription there). */
export interface DeliveryReader {
  replica: string;
  /**
   * The time up to which it has read acks (`handledUpTo`). Ack timeouts run on the slowest live
   * replica's read position, so an ack still queued behind a backlog is not taken for a silent
   * client: under a burst, retries would only add to the backlog.
   */
  readUpTo(): number;
  /**
   * Reads its partitions again from that time on (`rereadFrom`), to rebuild a lost store; false
   * when it holds none now (joining, a rebalance under way).
   */
  rereadFrom(time: number): Promise<boolean>;
}

/** What the parts of delivery work with; each part takes those it needs. */
export interface DeliveryDeps {
  store: SessionStore;
  gateways: GatewayClient;
  bus: EventBus;
  settings: DeliverySettings;
  logger: Logger;
  metrics: DeliveryMetrics;
  reader: DeliveryReader;
}
