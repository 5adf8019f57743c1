import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { connectKafkaBus } from '@parley/kafka';
import { createTokenVerifier, runMain } from '@parley/service-kit';
import { createWsGateway } from './app';
import { advertisedInternalUrl, gatewaySettings, WsGatewayConfig } from './config';

void runMain('ws-gateway', WsGatewayConfig, async (config, runtime) => {
  const bus = await connectKafkaBus('ws-gateway', config, runtime);
  const gatewayId = config.GATEWAY_ID ?? `${hostname()}-${randomBytes(3).toString('hex')}`;
  const internalUrl = advertisedInternalUrl(config);
  return createWsGateway({
    ...runtime,
    bus,
    verifyToken: createTokenVerifier(config),
    internalSecret: config.INTERNAL_SECRET,
    port: config.PORT,
    internalPort: config.INTERNAL_PORT,
    host: config.HOST,
    settings: gatewaySettings(config, { gatewayId, internalUrl }),
  });
});
