import { connectKafkaBus } from '@parley/kafka';
import { runMain } from '@parley/service-kit';
import { createMessageRouter } from './app';
import { MessageRouterConfig } from './config';

void runMain('message-router', MessageRouterConfig, async (config, runtime) => {
  const bus = await connectKafkaBus('message-router', config, runtime);
  return createMessageRouter({ ...runtime, bus, port: config.PORT, host: config.HOST });
});
