import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { connectKafkaBus, startBroker, type Broker } from '@parley/kafka';
import { migrate, openDatabase, type SqlDatabase } from '@parley/postgres';
import {
  Closer,
  createRuntime,
  createTokenVerifier,
  DEV_INTERNAL_SECRET,
  DEV_JWT_SECRET,
  type Runtime,
  type Service,
} from '@parley/service-kit';
import { createRestGateway } from '../../rest-gateway/src/app';
import { DEFAULT_UPSTREAM_MAX_IN_FLIGHT } from '../../rest-gateway/src/config';
import { DEFAULT_GROUP_MAX_GROUPS_PER_USER, DEFAULT_GROUP_MAX_MEMBERS } from '../../group-ms/src/config';
import { createHttpUpstreams } from '../../rest-gateway/src/upstream';
import { webClientPlugin } from '../../web-client/src/plugin';
import { createMessageRouter } from '../../message-router/src/app';
import { createSqlBlockReader } from '../../message-router/src/blocks';
import { createSessionService } from '../../session-ms/src/app';
import { createHttpGatewayClient } from '../../session-ms/src/gateway-client';
import { MemorySessionStore } from '../../session-ms/src/store/memory-store';
import { RedisSessionStore } from '../../session-ms/src/store/redis-store';
import { createGroupMs } from '../../group-ms/src/app';
import { GROUP_MIGRATIONS } from '../../group-ms/src/migrations';
import { createSqlReportStore } from '../../group-ms/src/reports';
import { createSqlGroupStore } from '../../group-ms/src/sql-group-store';
import { createGroupMessageRouter } from '../../group-message-router/src/app';
import { createHttpGroupCommandApplier } from '../../group-message-router/src/group-commands';
import { createSqlRoutedLog } from '../../group-message-router/src/routed-log';
import { createSqlMembershipReader } from '../../group-message-router/src/sql-membership';
import { createPersistenceService } from '../../persistence-ms/src/app';
import { createSqlOfflineStore } from '../../persistence-ms/src/sql-store';
import { createPushService } from '../../push-ms/src/app';
import { createSqlDeviceStore } from '../../push-ms/src/device-store';
import { createSqlMuteStore } from '../../push-ms/src/mute-store';
import { createLogPushProvider, type RecordedPush } from '../../push-ms/src/log-provider';
import { embeddedGatewayOnThread } from './embedded-gateway';
import type { ThreadService } from './service-thread';
import { freePort, urlHost } from './ports';

export const DEFAULT_PORTS = {
  wsGateway: 8080,
  restGateway: 8081,
  wsGatewayInternal: 9080,
  broker: 9092,
  messageRouter: 9101,
  groupMessageRouter: 9102,
  sessionMs: 9103,
  groupMs: 9104,
  persistenceMs: 9105,
  pushMs: 9106,
};
export type FleetPorts = typeof DEFAULT_PORTS;

export interface FleetOptions {
  /** Where the broker log and PGlite live; in memory when unset (tests). */
  dataDir?: string;
  /** A real Kafka instead of the embedded broker. */
  kafkaBrokers?: string;
  /** KAFKA_PACK_EVENTS (default true): pack each flush's events per partition into one record. */
  packEvents?: boolean;
  /** KAFKA_CONSUMER_MIN_CYCLE_MS (default 0): the least time between a consumer's fetches. */
  consumerMinCycleMs?: number;
  redisUrl?: string;
  databaseUrl?: string;
  /** `DEFAULT_PORTS`, or `'random'` for free ports (tests). */
  ports?: FleetPorts | 'random';
  /** How `'random'` ports are drawn (free ports outside the ephemeral range by default). */
  drawPorts?: () => Promise<FleetPorts>;
  host?: string;
  logLevel?: string;
  /** TRACE_USERS: every hop of these users' messages is logged, whatever `logLevel` says. */
  traceUsers?: string[];
  jwtSecret?: string;
  internalSecret?: string;
  /** Delivery timing; tests shorten it. */
  ackTimeoutMs?: number;
  maxAttempts?: number;
  /** Faster consumer-group reactions for tests. */
  fastConsumers?: boolean;
  /** Services to leave out (a test runs them as separate processes). */
  without?: string[];
}

export interface Fleet {
  ports: FleetPorts;
  /** `reports`: group-ms's moderators' list of reports (internal: the internal secret's header). */
  urls: { ws: string; rest: string; docs: string; kafka: string; reports: string };
  services: Record<string, Service>;
  jwtSecret: string;
  /** What push-ms's embedded provider would have sent, oldest first (the last 100). */
  pushes: readonly RecordedPush[];
  /** A full GC on every thread of the fleet, where the process runs with --expose-gc (memory benchmarks). */
  collectGarbage(): void;
  stop(): Promise<void>;
}

/**
 * Every Parley service in this process, wired to the embedded broker (or `kafkaBrokers`), PGlite
 * (or `databaseUrl`) and an in-process session store (or `redisUrl`): what `npm start` runs, and
 * what the fleet tests drive. Each service gets its own runtime and Kafka clients, as in production;
 * the ws-gateway runs on a worker thread of its own, the rest on the main thread.
 */
export async function startFleet(options: FleetOptions = {}): Promise<Fleet> {
  if (options.ports !== 'random') return startFleetOn(options.ports ?? DEFAULT_PORTS, options);
  // A free port drawn can be drawn by another fleet starting beside this one (parallel test suites)
  // before either listens on it: such a start is tried again on ports drawn again.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startFleetOn(await (options.drawPorts ?? randomPorts)(), options);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || attempt === RANDOM_PORT_ATTEMPTS) throw err;
    }
  }
}

/** How many times a fleet on random ports is started on ports drawn again after one was taken. */
const RANDOM_PORT_ATTEMPTS = 3;

async function startFleetOn(ports: FleetPorts, options: FleetOptions): Promise<Fleet> {
  const host = options.host ?? '127.0.0.1';
  const base = (port: number) => `http://${urlHost(host)}:${port}`;
  const jwtSecret = options.jwtSecret ?? DEV_JWT_SECRET;
  const internalSecret = options.internalSecret ?? DEV_INTERNAL_SECRET;
  const logLevel = options.logLevel ?? 'info';
  const closer = new Closer();
  const started: Array<[string, Service]> = [];
  let gatewayThread: ThreadService | undefined;
  let pushes: readonly RecordedPush[] = [];

  try {
    let kafkaBrokers = options.kafkaBrokers;
    if (!kafkaBrokers) {
      const broker: Broker = await startBroker({
        port: ports.broker,
        host,
        dataDir: options.dataDir ? ensureDir(path.join(options.dataDir, 'kafka')) : undefined,
        logger: createRuntime('kafka-broker', logLevel).logger,
      });
      closer.add('broker', () => broker.stop());
      kafkaBrokers = broker.address;
    }
    const db = await openDatabase({
      DATABASE_URL: options.databaseUrl,
      DATABASE_POOL_SIZE: 10,
      PGLITE_DATA_DIR: options.dataDir ? path.join(options.dataDir, 'pglite') : '', // '' keeps PGlite in memory
    });
    closer.add('database', () => db.close());
    await migrate(db, 'group-ms', GROUP_MIGRATIONS);

    const kafkaSettings = {
      KAFKA_BROKERS: kafkaBrokers,
      KAFKA_SSL: false,
      KAFKA_REPLICATION_FACTOR: 1,
      KAFKA_TOPIC_PARTITIONS: options.kafkaBrokers ? undefined : 4,
      KAFKA_PACK_EVENTS: options.packEvents,
      KAFKA_CONSUMER_MIN_CYCLE_MS: options.consumerMinCycleMs,
    };
    const consumer = options.fastConsumers
      ? { heartbeatInterval: 200, maxWaitTimeInMs: 100, sessionTimeout: 6000, rebalanceTimeout: 3000 }
      : undefined;
    const runtimeFor = async (
      name: string,
      withDb = false,
    ): Promise<Runtime & { bus: Awaited<ReturnType<typeof connectKafkaBus>> }> => {
      const runtime = createRuntime(name, logLevel, options.traceUsers);
      closer.add(name, () => runtime.closer.closeAll());
      if (withDb) runtime.readiness.register('database', () => db.ping());
      const bus = await connectKafkaBus(name, kafkaSettings, runtime, { consumer });
      return { ...runtime, bus };
    };
    const skip = new Set(options.without ?? []);
    const add = async (name: string, create: () => Promise<Service>) => {
      if (skip.has(name)) return;
      const service = await create();
      await service.start();
      started.push([name, service]);
    };
    const verifyToken = createTokenVerifier({ JWT_SECRET: jwtSecret });

    await add('message-router', async () => {
      // No database readiness check: message-router routes without its block checks while the
      // database is away (fail open), so it stays ready.
      const runtime = await runtimeFor('message-router');
      return createMessageRouter({
        ...runtime,
        blocks: createSqlBlockReader(db, runtime.logger),
        port: ports.messageRouter,
        host,
      });
    });

    const sessionStore = options.redisUrl
      ? RedisSessionStore.connect(options.redisUrl)
      : new MemorySessionStore();
    closer.add('session-store', () => sessionStore.close());
    const gateways = createHttpGatewayClient(internalSecret);
    closer.add('gateway connections', () => gateways.close?.());
    await add('session-ms', async () =>
      createSessionService({
        ...(await runtimeFor('session-ms')),
        store: sessionStore,
        gateways,
        internalSecret,
        port: ports.sessionMs,
        host,
        settings: {
          ackTimeoutMs: options.ackTimeoutMs ?? 5000,
          maxAttempts: options.maxAttempts ?? 3,
          rememberAckedMs: 24 * 3600 * 1000,
          gatewayTtlMs: 30_000,
          retryTickMs: Math.min(200, options.ackTimeoutMs ?? 200),
        },
      }),
    );

    await add('group-ms', async () =>
      createGroupMs({
        ...(await runtimeFor('group-ms', true)),
        store: createSqlGroupStore(db),
        reports: createSqlReportStore(db),
        port: ports.groupMs,
        host,
        internalSecret,
        maxMembers: DEFAULT_GROUP_MAX_MEMBERS,
        maxGroupsPerUser: DEFAULT_GROUP_MAX_GROUPS_PER_USER,
      }),
    );
    await add('group-message-router', async () => {
      const runtime = await runtimeFor('group-message-router', true);
      return createGroupMessageRouter({
        ...runtime,
        membership: createSqlMembershipReader(db),
        routed: createSqlRoutedLog(db, runtime.logger),
        groupCommands: createHttpGroupCommandApplier(base(ports.groupMs), internalSecret),
        port: ports.groupMessageRouter,
        host,
      });
    });
    await add('persistence-ms', async () =>
      createPersistenceService({
        ...(await runtimeFor('persistence-ms', true)),
        store: createSqlOfflineStore(db),
        port: ports.persistenceMs,
        host,
        internalSecret,
      }),
    );
    await add('push-ms', async () => {
      const runtime = await runtimeFor('push-ms', true);
      const provider = createLogPushProvider(runtime.logger);
      pushes = provider.recorded;
      return createPushService({
        ...runtime,
        devices: createSqlDeviceStore(db),
        mutes: createSqlMuteStore(db),
        provider,
        port: ports.pushMs,
        host,
        internalSecret,
      });
    });

    await add(
      'ws-gateway',
      async () =>
        (gatewayThread = embeddedGatewayOnThread({
          host,
          port: ports.wsGateway,
          internalPort: ports.wsGatewayInternal,
          kafka: kafkaSettings,
          consumer,
          jwtSecret,
          internalSecret,
          logLevel,
          traceUsers: options.traceUsers,
        })),
    );

    await add('rest-gateway', async () => {
      const runtime = await runtimeFor('rest-gateway');
      return createRestGateway({
        ...runtime,
        upstreams: createHttpUpstreams(
          {
            'persistence-ms': base(ports.persistenceMs),
            'group-ms': base(ports.groupMs),
            'push-ms': base(ports.pushMs),
            'session-ms': base(ports.sessionMs),
          },
          internalSecret,
          { metrics: runtime.metrics, maxInFlight: DEFAULT_UPSTREAM_MAX_IN_FLIGHT },
        ),
        verifyToken,
        port: ports.restGateway,
        host,
        settings: {
          devMode: true,
          devToken: { secret: jwtSecret },
          corsOrigins: [],
          rateLimitPerMinute: 6000,
          sendFramesPerSecond: 200,
          sendFramesBurst: 2000,
          maxFrameBytes: 64 * 1024,
        },
        // The browser demo client at `/`; it reaches the ws-gateway on the host the page came from.
        plugins: [webClientPlugin({ wsPort: ports.wsGateway })],
      });
    });
  } catch (err) {
    await stopAll(started, closer).catch(() => undefined); // the start's error is the one to report
    throw err;
  }

  return {
    ports,
    jwtSecret,
    pushes,
    services: Object.fromEntries(started),
    urls: {
      ws: `ws://${urlHost(host)}:${ports.wsGateway}/v1/ws`,
      rest: base(ports.restGateway),
      docs: `${base(ports.restGateway)}/docs`,
      kafka: options.kafkaBrokers ?? `${urlHost(host)}:${ports.broker}`,
      reports: `${base(ports.groupMs)}/internal/reports`,
    },
    collectGarbage: () => {
      (globalThis as { gc?: () => void }).gc?.();
      gatewayThread?.collectGarbage();
    },
    stop: () => stopAll(started, closer),
  };
}

/** Edges first (stop taking traffic), then the consumers, then the infrastructure. */
async function stopAll(started: Array<[string, Service]>, closer: Closer) {
  // Every service stops even when one fails, and the failures are reported: npm start exits 1.
  const failures: Error[] = [];
  for (const [name, service] of [...started].reverse())
    await service.stop().catch((err: unknown) => {
      failures.push(
        new Error(`${name} did not stop cleanly: ${(err as Error)?.message ?? err}`, { cause: err }),
      );
    });
  started.length = 0;
  await closer.closeAll();
  if (failures.length > 0) throw new AggregateError(failures, failures.map((f) => f.message).join('; '));
}

export async function randomPorts(): Promise<FleetPorts> {
  const entries = await Promise.all(
    Object.keys(DEFAULT_PORTS).map(async (key) => [key, await freePort()] as const),
  );
  return Object.fromEntries(entries) as FleetPorts;
}

function ensureDir(dir: string): string {
  mkdirSync(dir, { recursive: true });
  return dir;
}

export type { SqlDatabase };
