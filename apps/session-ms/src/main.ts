import { readFileSync } from 'node:fs';
import { connectKafkaBus } from '@parley/kafka';
import { runMain } from '@parley/service-kit';
import { createSessionService } from './app';
import { SessionConfig } from './config';
import { createHttpGatewayClient } from './gateway-client';
import { MemorySessionStore } from './store/memory-store';
import { RedisSessionStore } from './store/redis-store';

void runMain('session-ms', SessionConfig, async (config, runtime) => {
  const store = config.REDIS_URL
    ? RedisSessionStore.connect(config.REDIS_URL, config.REDIS_KEY_PREFIX, {
        tlsCa: config.REDIS_TLS_CA_FILE ? readFileSync(config.REDIS_TLS_CA_FILE) : undefined,
        onError: (err) => runtime.logger.warn({ err }, 'redis connection failed; retrying'),
        onRecovered: (lastError) =>
          runtime.logger.info({ lastError: lastError.message }, 'redis connection ready again'),
        replicaWait: { replicas: config.REDIS_WAIT_REPLICAS, timeoutMs: config.REDIS_WAIT_TIMEOUT_MS },
      })
    : new MemorySessionStore();
  runtime.closer.add('store', () => store.close());
  if (store instanceof RedisSessionStore)
    void store.setupWarnings().then(
      (warnings) => warnings.forEach((warning) => runtime.logger.warn(warning)),
      () => undefined, // Redis away: its connection errors are logged already
    );
  const bus = await connectKafkaBus('session-ms', config, runtime);
  const gateways = createHttpGatewayClient(config.INTERNAL_SECRET);
  runtime.closer.add('gateway connections', () => gateways.close?.());
  return createSessionService({
    ...runtime,
    bus,
    store,
    gateways,
    internalSecret: config.INTERNAL_SECRET,
    port: config.PORT,
    host: config.HOST,
    settings: {
      ackTimeoutMs: config.ACK_TIMEOUT_MS,
      maxAttempts: config.MAX_ATTEMPTS,
      rememberAckedMs: config.ACKED_TTL_MS,
      gatewayTtlMs: config.GATEWAY_TTL_MS,
      retryTickMs: config.RETRY_TICK_MS,
    },
  });
});
