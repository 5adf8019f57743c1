import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Client } from 'pg';
import { issueToken } from '@parley/service-kit';
import { TcpFaultProxy } from '@parley/test-kit';
import { freePort } from '../../../apps/launcher/src/ports';
import { ManagedProcess } from './managed-process';

const ROOT = path.resolve(__dirname, '../../..');
const JWT_SECRET = 'parley-faults-jwt-secret-0123456789abcdef';
const INTERNAL_SECRET = 'parley-faults-internal-secret';

export const APPS = [
  'group-ms',
  'persistence-ms',
  'push-ms',
  'message-router',
  'group-message-router',
  'session-ms',
  'ws-gateway',
  'rest-gateway',
] as const;
export type App = (typeof APPS)[number];
export type Part = App | 'broker' | 'redis';

export interface ProcessFleetOptions {
  /** An existing Postgres the fleet may create a throwaway database in. */
  postgresUrl: string;
  /** Extra environment per app (timing knobs). */
  env?: Partial<Record<App, Record<string, string>>>;
}

/**
 * The whole fleet as separate OS processes, as in production: the embedded broker (its own process,
 * log on disk), a Redis server of its own (append-only file, so a restart keeps its data), a
 * throwaway database on a real Postgres reached through a proxy the test can cut, and every app
 * started with `node --import tsx apps/<app>/src/main.ts` and its environment.
 */
export class ProcessFleet {
  private constructor(
    readonly parts: Record<Part, ManagedProcess>,
    readonly postgres: TcpFaultProxy,
    readonly urls: { ws: string; rest: string; wsInternal: string; redis: string },
    private readonly cleanup: () => Promise<void>,
  ) {}

  static async start(options: ProcessFleetOptions): Promise<ProcessFleet> {
    const dir = mkdtempSync(path.join(tmpdir(), 'parley-faults-'));
    const logDir = path.join(ROOT, '.data', 'faults');
    mkdirSync(logDir, { recursive: true });
    const port = Object.fromEntries(
      await Promise.all(['broker', 'redis', 'wsInternal', ...APPS].map(async (k) => [k, await freePort()])),
    ) as Record<string, number>;

    const database = `parley_faults_${randomBytes(4).toString('hex')}`;
    await adminQuery(options.postgresUrl, `CREATE DATABASE ${database}`);
    const pgTarget = new URL(options.postgresUrl);
    const postgres = await TcpFaultProxy.start({
      host: pgTarget.hostname,
      port: Number(pgTarget.port || 5432),
    });
    const databaseUrl = Object.assign(new URL(options.postgresUrl), {
      port: String(postgres.port),
      pathname: `/${database}`,
    }).toString();

    const base = (app: App) => `http://127.0.0.1:${port[app]}`;
    const common = {
      KAFKA_BROKERS: `127.0.0.1:${port.broker}`,
      KAFKA_TOPIC_PARTITIONS: '4',
      KAFKA_SESSION_TIMEOUT_MS: '6000',
      KAFKA_HEARTBEAT_INTERVAL_MS: '300',
      HOST: '127.0.0.1',
      LOG_LEVEL: 'warn',
      INTERNAL_SECRET,
      SHUTDOWN_TIMEOUT_MS: '5000',
    };
    const sql = { DATABASE_URL: databaseUrl, DATABASE_POOL_SIZE: '4' };
    const appEnv: Record<App, Record<string, string>> = {
      'group-ms': sql,
      'persistence-ms': sql,
      'push-ms': sql,
      'group-message-router': { ...sql, GROUP_URL: base('group-ms') },
      'message-router': {},
      'session-ms': {
        REDIS_URL: `redis://127.0.0.1:${port.redis}`,
        ACK_TIMEOUT_MS: '3000',
        MAX_ATTEMPTS: '5',
        GATEWAY_TTL_MS: '10000',
      },
      'ws-gateway': {
        JWT_SECRET,
        INTERNAL_PORT: String(port.wsInternal),
        GATEWAY_INTERNAL_URL: `http://127.0.0.1:${port.wsInternal}`,
        HEARTBEAT_INTERVAL_MS: '1000',
        // These suites test faults; the limits have their own tests.
        RATE_LIMIT_PER_SECOND: '100000',
        RATE_LIMIT_BURST: '100000',
        MAX_UNSENT_BYTES: String(64 * 1024 * 1024),
      },
      'rest-gateway': {
        JWT_SECRET,
        DEV_MODE: 'true',
        WEB_CLIENT: 'false',
        RATE_LIMIT_PER_MINUTE: '100000',
        PERSISTENCE_URL: base('persistence-ms'),
        GROUP_URL: base('group-ms'),
        PUSH_URL: base('push-ms'),
        SESSION_URL: base('session-ms'),
      },
    };

    const node = (
      name: string,
      entry: string,
      args: string[],
      env: Record<string, string>,
      ready: () => Promise<boolean>,
    ) =>
      new ManagedProcess({
        name,
        command: process.execPath,
        // PARLEY_CPU_PROF=<dir>: every Node process writes a V8 CPU profile there when it stops.
        args: [...cpuProfileArgs(name), '--import', 'tsx', entry, ...args],
        cwd: ROOT,
        env,
        ready,
        logFile: path.join(logDir, `${name}.log`),
      });
    const parts = {
      broker: node(
        'broker',
        'libs/kafka/src/broker/cli.ts',
        ['--port', String(port.broker), '--data', path.join(dir, 'kafka'), '--partitions', '4'],
        { LOG_LEVEL: 'warn' },
        () => tcpOpen(port.broker),
      ),
      redis: new ManagedProcess({
        name: 'redis',
        command: 'redis-server',
        args: [
          '--port',
          String(port.redis),
          '--bind',
          '127.0.0.1',
          '--save',
          '',
          '--appendonly',
          'yes',
          '--appendfsync',
          'always',
          '--dir',
          ensureDir(path.join(dir, 'redis')),
        ],
        cwd: ROOT,
        ready: () => redisPing(port.redis),
        logFile: path.join(logDir, 'redis.log'),
      }),
      ...Object.fromEntries(
        APPS.map((app) => {
          const probe = app === 'ws-gateway' ? `http://127.0.0.1:${port.wsInternal}` : base(app);
          return [
            app,
            node(
              app,
              `apps/${app}/src/main.ts`,
              [],
              { ...common, PORT: String(port[app]), ...appEnv[app], ...options.env?.[app] },
              () => httpOk(`${probe}/readyz`),
            ),
          ];
        }),
      ),
    } as Record<Part, ManagedProcess>;

    const fleet = new ProcessFleet(
      parts,
      postgres,
      {
        ws: `ws://127.0.0.1:${port['ws-gateway']}/v1/ws`,
        rest: base('rest-gateway'),
        wsInternal: `http://127.0.0.1:${port.wsInternal}`,
        redis: `redis://127.0.0.1:${port.redis}`,
      },
      async () => {
        await postgres.close();
        await adminQuery(options.postgresUrl, `DROP DATABASE IF EXISTS ${database} WITH (FORCE)`).catch(
          () => undefined,
        );
        rmSync(dir, { recursive: true, force: true });
      },
    );
    try {
      await Promise.all([parts.broker.start(), parts.redis.start()]);
      await parts['group-ms'].start(); // its migrations create the tables group-message-router reads
      await Promise.all(APPS.filter((app) => app !== 'group-ms').map((app) => parts[app].start()));
    } catch (err) {
      await fleet.stop();
      throw err;
    }
    return fleet;
  }

  token(user: string): Promise<string> {
    return issueToken(JWT_SECRET, user);
  }

  async stop(): Promise<void> {
    // Edges first, infrastructure last, as in a rolling shutdown.
    for (const app of [...APPS].reverse()) await this.parts[app].stop();
    await Promise.all([this.parts.broker.stop(), this.parts.redis.stop()]);
    await this.cleanup();
  }
}

async function adminQuery(url: string, sql: string) {
  const client = new Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

async function httpOk(url: string): Promise<boolean> {
  return (await fetch(url).catch(() => undefined))?.status === 200;
}

function tcpOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

function redisPing(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1', () => socket.write('PING\r\n'));
    socket.setTimeout(1000, () => socket.destroy());
    socket.once('data', (data) => {
      socket.destroy();
      resolve(data.toString().startsWith('+PONG'));
    });
    socket.once('error', () => resolve(false));
    socket.once('close', () => resolve(false));
  });
}

function ensureDir(dir: string): string {
  mkdirSync(dir, { recursive: true });
  return dir;
}

function cpuProfileArgs(name: string): string[] {
  const dir = process.env.PARLEY_CPU_PROF;
  return dir ? ['--cpu-prof', '--cpu-prof-dir', path.join(dir, name)] : [];
}
