import { hostname, networkInterfaces } from 'node:os';
import { randomBytes } from 'node:crypto';
import { connectKafkaBus } from '@parley/kafka';
import { createTokenVerifier, runMain } from '@parley/service-kit';
import { createWsGateway, gatewaySettings, WsGatewayConfig } from './app';

void runMain('ws-gateway', WsGatewayConfig, async (config, runtime) => {
  const bus = await connectKafkaBus('ws-gateway', config, runtime);
  const gatewayId = config.GATEWAY_ID ?? `${hostname()}-${randomBytes(3).toString('hex')}`;
  // Each replica advertises an address of its own: loopback would send session-ms to itself.
  const internalUrl =
    config.GATEWAY_INTERNAL_URL ??
    `http://${config.POD_IP ?? ownAddress(config.HOST)}:${config.INTERNAL_PORT}`;
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

/**
 * The address the internal server listens on, when that is one address; listening on all, this
 * host's first non-loopback IPv4 (a container's own, in compose), else loopback.
 */
function ownAddress(host: string | undefined): string {
  if (host && host !== '0.0.0.0' && host !== '::') return host.includes(':') ? `[${host}]` : host;
  const addresses = Object.values(networkInterfaces()).flat();
  return addresses.find((a) => a && a.family === 'IPv4' && !a.internal)?.address ?? '127.0.0.1';
}
