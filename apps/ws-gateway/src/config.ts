import { NetworkInterfaceInfo, networkInterfaces } from 'node:os';
import { Static, Type } from '@sinclair/typebox';
import { MaxFrameBytesSetting } from '@parley/contracts';
import { KafkaSettingsSchema } from '@parley/kafka';
import {
  AuthConfig,
  CommonConfig,
  frameBudgets,
  InternalConfig,
  KeyedBudgets,
  PublishBudgetConfig,
  serviceUrl,
  TokenBucket,
} from '@parley/service-kit';
import { MAX_UNSENT_ANSWER_BYTES, STALLED_READER_MS } from './connections';

export const DEFAULT_MAX_CONNECTIONS_PER_USER = 16;
export const DEFAULT_USER_RATE_FACTOR = 4;
export const DEFAULT_CONNECTS_PER_MINUTE = 30;
export const DEFAULT_CONNECT_BURST = 20;
/** Connection-ups per publish when announcing every open connection again. */
export const DEFAULT_ANNOUNCE_CHUNK = 1000;

export const WsGatewayConfig = Type.Object({
  ...CommonConfig,
  ...KafkaSettingsSchema,
  ...InternalConfig,
  ...AuthConfig,
  PORT: Type.Integer({ minimum: 0, maximum: 65535, default: 8080, description: 'Public WebSocket port' }),
  INTERNAL_PORT: Type.Integer({
    minimum: 0,
    maximum: 65535,
    default: 9080,
    description: 'Internal /send, probes, metrics',
  }),
  GATEWAY_ID: Type.Optional(
    Type.String({ pattern: '^[A-Za-z0-9_.-]{1,100}$', description: 'Instance id; random when unset' }),
  ),
  GATEWAY_INTERNAL_URL: Type.Optional(
    serviceUrl({
      description:
        "How session-ms reaches this instance; when unset, http://<POD_IP (an IPv6 one in brackets), else HOST when it names one address, else this host's first non-loopback IPv4>:INTERNAL_PORT",
    }),
  ),
  POD_IP: Type.Optional(Type.String()),
  MAX_FRAME_BYTES: MaxFrameBytesSetting,
  RATE_LIMIT_PER_SECOND: Type.Number({
    minimum: 0.1,
    default: 20,
    description: 'Frames per second per connection',
  }),
  RATE_LIMIT_BURST: Type.Integer({ minimum: 1, default: 50 }),
  RATE_LIMIT_USER_FACTOR: Type.Number({
    minimum: 1,
    default: DEFAULT_USER_RATE_FACTOR,
    description:
      "A user's sockets on one gateway together get this many sockets' frame and ack budgets (rate and burst), on top of each socket's own",
  }),
  RATE_LIMIT_CLOSE_AFTER: Type.Integer({
    minimum: 1,
    default: 20,
    description: 'Refusals in a row before close 4029',
  }),
  MAX_UNSENT_BYTES: Type.Integer({
    minimum: 1024,
    default: 1024 * 1024,
    description: `Per socket: frames pushed while a reader is this far behind are not written (pushed again at their retry), and answers to its own frames (pong, accepted, error) only up to ${MAX_UNSENT_ANSWER_BYTES / 1024} KiB of them unsent; a socket that takes none of its unsent bytes for ${STALLED_READER_MS / 1000} s past it is cut off`,
  }),
  MAX_CONNECTIONS: Type.Integer({ minimum: 1, default: 200_000 }),
  MAX_CONNECTIONS_PER_USER: Type.Integer({
    minimum: 1,
    default: DEFAULT_MAX_CONNECTIONS_PER_USER,
    description:
      "A user's sockets on one gateway at once (a device each, plus a reconnect racing its old socket's timeout); past it the new socket is closed with 1008",
  }),
  CONNECT_RATE_PER_MINUTE: Type.Number({
    minimum: 1,
    default: DEFAULT_CONNECTS_PER_MINUTE,
    description:
      "A user's new sockets a minute on one gateway, sustained, once CONNECT_BURST is spent; a socket opened past it is closed with 4029, its reason saying when to retry",
  }),
  CONNECT_BURST: Type.Integer({
    minimum: 1,
    default: DEFAULT_CONNECT_BURST,
    description:
      "A user's new sockets on one gateway in a burst (a gateway restart reconnects each device once)",
  }),
  ...PublishBudgetConfig,
  PING_INTERVAL_MS: Type.Integer({ minimum: 100, default: 30_000 }),
  HEARTBEAT_INTERVAL_MS: Type.Integer({
    minimum: 100,
    default: 10_000,
    description: 'Gateway heartbeat to session-ms',
  }),
  ALLOWED_ORIGINS: Type.String({
    default: '',
    description: 'Comma-separated Origin allowlist; empty allows any',
  }),
});

export interface WsGatewaySettings {
  gatewayId: string;
  internalUrl: string;
  maxFrameBytes: number;
  ratePerSecond: number;
  rateBurst: number;
  /** A user's sockets on this gateway together: this many sockets' budgets; default 4. */
  userRateFactor?: number;
  rateCloseAfter: number;
  maxUnsentBytes: number;
  maxConnections: number;
  /** A user's sockets on this gateway at once; default 16. */
  maxConnectionsPerUser?: number;
  /** A user's new sockets a minute on this gateway, past `connectBurst`; default 30. */
  connectsPerMinute?: number;
  /** A user's new sockets on this gateway in a burst; default 20. */
  connectBurst?: number;
  pingIntervalMs: number;
  heartbeatIntervalMs: number;
  allowedOrigins: string[];
  /** Bytes of client frames waiting for Kafka at once; default 64 MiB. */
  maxPendingPublishBytes?: number;
  /** Connection-ups per publish when announcing the open connections again; default 1,000. */
  announceChunk?: number;
}

/**
 * How session-ms reaches this replica: GATEWAY_INTERNAL_URL, else the pod's address, else the
 * address the internal server listens on when that is one, else this host's first non-loopback
 * IPv4 (a container's own, in compose), else loopback. Each replica advertises an address of its
 * own: loopback would send session-ms to itself.
 */
export function advertisedInternalUrl(
  config: Pick<Static<typeof WsGatewayConfig>, 'GATEWAY_INTERNAL_URL' | 'POD_IP' | 'HOST' | 'INTERNAL_PORT'>,
  interfaces: NodeJS.Dict<NetworkInterfaceInfo[]> = networkInterfaces(),
): string {
  if (config.GATEWAY_INTERNAL_URL) return config.GATEWAY_INTERNAL_URL;
  const listening =
    config.HOST && config.HOST !== '0.0.0.0' && config.HOST !== '::' ? config.HOST : undefined;
  const address =
    config.POD_IP ??
    listening ??
    Object.values(interfaces)
      .flat()
      .find((a) => a && a.family === 'IPv4' && !a.internal)?.address ??
    '127.0.0.1';
  // An IPv6 address (an IPv6-only cluster's pod IP) goes in brackets in a URL.
  return `http://${address.includes(':') ? `[${address}]` : address}:${config.INTERNAL_PORT}`;
}

/** The settings a configuration gives (main.ts; tests that want the production defaults). */
export function gatewaySettings(
  config: Static<typeof WsGatewayConfig>,
  where: { gatewayId: string; internalUrl: string },
): WsGatewaySettings {
  return {
    ...where,
    maxFrameBytes: config.MAX_FRAME_BYTES,
    ratePerSecond: config.RATE_LIMIT_PER_SECOND,
    rateBurst: config.RATE_LIMIT_BURST,
    userRateFactor: config.RATE_LIMIT_USER_FACTOR,
    rateCloseAfter: config.RATE_LIMIT_CLOSE_AFTER,
    maxUnsentBytes: config.MAX_UNSENT_BYTES,
    maxPendingPublishBytes: config.MAX_PENDING_PUBLISH_BYTES,
    maxConnections: config.MAX_CONNECTIONS,
    maxConnectionsPerUser: config.MAX_CONNECTIONS_PER_USER,
    connectsPerMinute: config.CONNECT_RATE_PER_MINUTE,
    connectBurst: config.CONNECT_BURST,
    pingIntervalMs: config.PING_INTERVAL_MS,
    heartbeatIntervalMs: config.HEARTBEAT_INTERVAL_MS,
    allowedOrigins: config.ALLOWED_ORIGINS.split(',')
      .map((o) => o.trim())
      .filter(Boolean),
  };
}

/**
 * Each user's budget of new sockets on this gateway: a reconnect loop (an app bug, a crash loop)
 * costs Kafka and session-ms a connect and a disconnect a turn. A budget refilled is dropped.
 */
export const connectBudgets = (settings: WsGatewaySettings) =>
  new KeyedBudgets(
    () =>
      new TokenBucket(
        (settings.connectsPerMinute ?? DEFAULT_CONNECTS_PER_MINUTE) / 60,
        settings.connectBurst ?? DEFAULT_CONNECT_BURST,
      ),
    (bucket) => bucket.isFull(),
  );

/** A socket's frame budgets, or (`factor`) those of that many sockets. */
export const socketBudgets = (settings: WsGatewaySettings, factor = 1) =>
  frameBudgets(settings.ratePerSecond * factor, settings.rateBurst * factor);
