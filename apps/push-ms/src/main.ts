import { connectKafkaBus } from '@parley/kafka';
import { connectDatabase } from '@parley/postgres';
import { runMain } from '@parley/service-kit';
import { createPushService } from './app';
import { PushConfig } from './config';
import { createSqlDeviceStore } from './device-store';
import { createSqlMuteStore } from './mute-store';
import { createFcmProvider, fcmOptionsFromServiceAccount } from './fcm-provider';
import { createLogPushProvider } from './log-provider';

void runMain('push-ms', PushConfig, async (config, runtime) => {
  const db = await connectDatabase(config, runtime);
  const provider = config.FCM_SERVICE_ACCOUNT
    ? createFcmProvider({
        ...fcmOptionsFromServiceAccount(config.FCM_SERVICE_ACCOUNT),
        logger: runtime.logger,
      })
    : createLogPushProvider(runtime.logger);
  runtime.logger.info({ provider: provider.name }, 'push provider');
  const bus = await connectKafkaBus('push-ms', config, runtime);
  return createPushService({
    ...runtime,
    bus,
    devices: createSqlDeviceStore(db),
    mutes: createSqlMuteStore(db),
    provider,
    port: config.PORT,
    host: config.HOST,
    internalSecret: config.INTERNAL_SECRET,
    windowMs: config.PUSH_WINDOW_MS,
    includeBody: config.PUSH_INCLUDE_BODY,
    dedupMs: config.PUSH_DEDUP_MS,
    maxAgeMs: config.PUSH_MAX_AGE_MS,
    maxAttempts: config.PUSH_MAX_ATTEMPTS,
    retryBaseMs: config.PUSH_RETRY_BASE_MS,
  });
});
