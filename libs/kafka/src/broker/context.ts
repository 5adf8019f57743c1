import type { Logger } from 'pino';
import type { GroupCoordinator } from './group/coordinator';
import type { OffsetStore } from './log/offset-store';
import type { TopicStore } from './log/topic-store';
import type { Reader } from './protocol/reader';
import type { Writer } from './protocol/writer';

/** What every request handler can reach. */
export interface BrokerContext {
  nodeId: number;
  /** Host and port advertised in Metadata and FindCoordinator. */
  advertisedHost: string;
  port: number;
  clusterId: string;
  topics: TopicStore;
  offsets: OffsetStore;
  groups: GroupCoordinator;
  logger: Logger;
  autoCreateTopics: boolean;
  defaultPartitions: number;
  nextProducerId(): number;
  /** Cancels of long-polling fetches, run when the broker stops. */
  pendingFetches: Set<() => void>;
  stopping: boolean;
}

export interface RequestHeader {
  apiKey: number;
  apiVersion: number;
  correlationId: number;
  clientId: string | null;
  clientHost: string;
}

/** A handler answers with a response body, or null for no response (Produce with acks=0). */
export type Handler = (
  header: RequestHeader,
  body: Reader,
  broker: BrokerContext,
) => Writer | null | Promise<Writer | null>;
