import path from 'node:path';
import { connectKafkaBus, type KafkaBusOptions, type KafkaSettings } from '@parley/kafka';
import { createRuntime, createTokenVerifier, type Service } from '@parley/service-kit';
import { createWsGateway } from '../../ws-gateway/src/app';
import { urlHost } from './ports';
import { threadService, type ThreadService } from './service-thread';

/** What the embedded fleet's ws-gateway is built from: plain data, so that it can cross to a thread. */
export interface EmbeddedGatewayData {
  host: string;
  port: number;
  internalPort: number;
  kafka: KafkaSettings;
  consumer?: KafkaBusOptions['consumer'];
  jwtSecret: string;
  internalSecret: string;
  logLevel: string;
  traceUsers?: string[];
  /** Its instance id (GATEWAY_ID); one per process when unset. */
  gatewayId?: string;
}

/** The ws-gateway with its own runtime and Kafka clients, as `npm start` configures it. */
export async function buildEmbeddedGateway(data: EmbeddedGatewayData): Promise<Service> {
  const runtime = createRuntime('ws-gateway', data.logLevel, data.traceUsers);
  const bus = await connectKafkaBus('ws-gateway', data.kafka, runtime, { consumer: data.consumer });
  const gateway = createWsGateway({
    ...runtime,
    bus,
    verifyToken: createTokenVerifier({ JWT_SECRET: data.jwtSecret }),
    internalSecret: data.internalSecret,
    port: data.port,
    internalPort: data.internalPort,
    host: data.host,
    settings: {
      gatewayId: data.gatewayId ?? `embedded-${process.pid}`,
      internalUrl: `http://${urlHost(data.host)}:${data.internalPort}`,
      maxFrameBytes: 64 * 1024,
      ratePerSecond: 200,
      rateBurst: 400,
      rateCloseAfter: 50,
      connectBurst: 200,
      connectsPerMinute: 600,
      maxUnsentBytes: 4 * 1024 * 1024,
      maxConnections: 200_000,
      pingIntervalMs: 30_000,
      heartbeatIntervalMs: 10_000,
      allowedOrigins: [],
    },
  });
  return {
    start: () => gateway.start(),
    stop: async () => {
      await gateway.stop();
      await runtime.closer.closeAll();
    },
  };
}

/**
 * The embedded ws-gateway on a worker thread of its own. The gateway does a third to a half of the
 * fleet's work per message (frames in and out, `/send`), so the fleet in one process then uses a
 * second core: see docs/benchmarks.md.
 */
export function embeddedGatewayOnThread(data: EmbeddedGatewayData): ThreadService {
  // Beside this module: the .ts source, or, in a bundle, the thread's own bundle.
  const entry = path.join(__dirname, `embedded-gateway.thread${path.extname(__filename)}`);
  return threadService('ws-gateway', entry, data);
}
