import { Type } from '@sinclair/typebox';
import { KafkaSettingsSchema } from '@parley/kafka';
import { MaxFrameBytesSetting } from '@parley/contracts';
import {
  AuthConfig,
  type DevTokenClaims,
  CommonConfig,
  InternalConfig,
  PublishBudgetConfig,
  serviceUrl,
} from '@parley/service-kit';

export const DEFAULT_SEND_FRAMES_PER_SECOND = 20;
export const DEFAULT_SEND_FRAMES_BURST = 200;
export const DEFAULT_UPSTREAM_MAX_IN_FLIGHT = 64;

export const RestGatewayConfig = Type.Object({
  ...CommonConfig,
  ...KafkaSettingsSchema,
  ...InternalConfig,
  ...AuthConfig,
  ...PublishBudgetConfig,
  PORT: Type.Integer({ minimum: 0, maximum: 65535, default: 8081 }),
  DEV_MODE: Type.Boolean({
    default: false,
    description:
      'Serves POST /v1/dev/token: tokens for any user, signed with JWT_SECRET, with JWT_ISSUER and JWT_AUDIENCE when set (never in production)',
  }),
  PERSISTENCE_URL: serviceUrl({ default: 'http://127.0.0.1:9105' }),
  GROUP_URL: serviceUrl({ default: 'http://127.0.0.1:9104' }),
  PUSH_URL: serviceUrl({ default: 'http://127.0.0.1:9106' }),
  SESSION_URL: serviceUrl({ default: 'http://127.0.0.1:9103' }),
  UPSTREAM_MAX_IN_FLIGHT: Type.Integer({
    minimum: 1,
    default: DEFAULT_UPSTREAM_MAX_IN_FLIGHT,
    description:
      'Calls this gateway has under way to each service behind it (persistence-ms, group-ms, push-ms, session-ms, each counted on its own), and so its sockets to it; past it a call waits, as many again at most and each up to 1 s, then is refused 503 unavailable ("group-ms is busy", say). A call answered in 5 ms lets 64 carry 12,800 a second from one gateway to one service, so the cap binds only when a service slows; then it holds what each gateway piles on it to 64 calls, several times the 10 database connections a replica of group-ms or persistence-ms works with (more would only wait there)',
  }),
  CORS_ORIGINS: Type.String({
    default: '',
    description: 'Comma-separated allowed origins; empty disables CORS',
  }),
  RATE_LIMIT_PER_MINUTE: Type.Integer({
    minimum: 1,
    default: 600,
    description:
      'Requests per user per minute, counted by each replica on its own (behind a load balancer a user gets up to this times the replicas)',
  }),
  SEND_FRAMES_PER_SECOND: Type.Number({
    minimum: 0.1,
    default: DEFAULT_SEND_FRAMES_PER_SECOND,
    description:
      'Frames a user may send through POST /v1/send per second, counted by each replica on its own (acks ten times that); past it a frame is rejected rate_limited',
  }),
  SEND_FRAMES_BURST: Type.Integer({ minimum: 1, default: DEFAULT_SEND_FRAMES_BURST }),
  MAX_FRAME_BYTES: MaxFrameBytesSetting,
  WEB_CLIENT: Type.Boolean({
    default: true,
    description: 'Serves the browser demo client at / (static files, public protocol only)',
  }),
  PUBLIC_WS_URL: Type.String({
    default: '',
    description: 'WebSocket URL the web client connects to; empty: port 8080 on the host the page came from',
  }),
  WEB_CLIENT_DIR: Type.String({
    default: '',
    description: 'Folder of the web client files; empty: found next to the code (apps/web-client/public)',
  }),
});

/** What the gateway is told (main.ts reads it from RestGatewayConfig; the launcher sets it). */
export interface RestGatewaySettings {
  devMode: boolean;
  /** Signs dev tokens (dev mode only), with the `iss` and `aud` the gateways check. */
  devToken?: { secret: string } & DevTokenClaims;
  corsOrigins: string[];
  rateLimitPerMinute: number;
  /** Frames a user may send through /v1/send per second (acks ten times that); default 20, burst 200. */
  sendFramesPerSecond?: number;
  sendFramesBurst?: number;
  maxFrameBytes: number;
  /** Bytes of client frames waiting for Kafka at once; default 64 MiB. */
  maxPendingPublishBytes?: number;
}
