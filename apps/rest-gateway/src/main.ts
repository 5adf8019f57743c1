import { connectKafkaBus } from '@parley/kafka';
import { createTokenVerifier, runMain } from '@parley/service-kit';
import { createRestGateway } from './app';
import { RestGatewayConfig } from './config';
import { createHttpUpstreams } from './upstream';
import { webClientPlugin } from '../../web-client/src/plugin';

void runMain('rest-gateway', RestGatewayConfig, async (config, runtime) => {
  const bus = await connectKafkaBus('rest-gateway', config, runtime);
  const upstreams = createHttpUpstreams(
    {
      'persistence-ms': config.PERSISTENCE_URL,
      'group-ms': config.GROUP_URL,
      'push-ms': config.PUSH_URL,
      'session-ms': config.SESSION_URL,
    },
    config.INTERNAL_SECRET,
    { metrics: runtime.metrics, maxInFlight: config.UPSTREAM_MAX_IN_FLIGHT },
  );
  return createRestGateway({
    ...runtime,
    bus,
    upstreams,
    verifyToken: createTokenVerifier(config),
    port: config.PORT,
    host: config.HOST,
    settings: {
      devMode: config.DEV_MODE,
      devToken: config.DEV_MODE
        ? { secret: config.JWT_SECRET, issuer: config.JWT_ISSUER, audience: config.JWT_AUDIENCE }
        : undefined,
      corsOrigins: config.CORS_ORIGINS.split(',')
        .map((o) => o.trim())
        .filter(Boolean),
      rateLimitPerMinute: config.RATE_LIMIT_PER_MINUTE,
      sendFramesPerSecond: config.SEND_FRAMES_PER_SECOND,
      sendFramesBurst: config.SEND_FRAMES_BURST,
      maxFrameBytes: config.MAX_FRAME_BYTES,
      maxPendingPublishBytes: config.MAX_PENDING_PUBLISH_BYTES,
    },
    // The browser demo client at `/` (static files; it uses only the public protocol).
    plugins: config.WEB_CLIENT
      ? [
          webClientPlugin({
            publicWsUrl: config.PUBLIC_WS_URL || undefined,
            root: config.WEB_CLIENT_DIR || undefined,
          }),
        ]
      : [],
  });
});
