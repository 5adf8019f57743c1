import { freePort } from '../../../apps/launcher/src/ports';
import { spawnTs, type Child } from './proc';

export interface StandaloneGateway {
  child: Child;
  wsUrl: string;
  metricsUrl: string;
}

/**
 * One ws-gateway process of its own (apps/ws-gateway/src/main.ts, as deployed) joined to a running
 * fleet through its broker: the subject of the idle-connection target, which the one-process fleet
 * cannot be (its RSS holds every service).
 */
export async function startStandaloneGateway(options: {
  kafka: string;
  jwtSecret: string;
  maxConnections: number;
  cpus?: string;
}): Promise<StandaloneGateway> {
  const port = await freePort();
  const internalPort = await freePort();
  const child = await spawnTs(
    'apps/ws-gateway/src/main.ts',
    (line) => (line.includes('"msg":"ws-gateway listening"') ? {} : undefined),
    {
      env: {
        KAFKA_BROKERS: options.kafka,
        JWT_SECRET: options.jwtSecret,
        HOST: '127.0.0.1',
        PORT: String(port),
        INTERNAL_PORT: String(internalPort),
        GATEWAY_ID: `bench-idle-${process.pid}`,
        MAX_CONNECTIONS: String(options.maxConnections),
        LOG_LEVEL: 'info',
      },
      timeoutMs: 60_000,
      cpus: options.cpus,
    },
  );
  return {
    child,
    wsUrl: `ws://127.0.0.1:${port}/v1/ws`,
    metricsUrl: `http://127.0.0.1:${internalPort}/metrics`,
  };
}
