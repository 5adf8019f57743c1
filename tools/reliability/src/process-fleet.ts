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
  /**
   * Replicas per app (default 1), as Kubernetes runs them: one consumer group, each its own ports;
   * each ws-gateway its own gateway id and internal URL, as a pod has its name and IP.
   */
  replicas?: Partial<Record<App, number>>;
}

/** One replica of an app: its process and where it serves. */
export interface Replica {
  app: App;
  /** `<app>-<n>`, n counting every replica the app ever had (a rolled one gets a new n, as a new pod a new name). */
  name: string;
  process: ManagedProcess;
  /** Its PORT: the public one for the gateways, the internal API otherwise. */
  url: string;
  /** ws-gateway: its internal URL (POST /send). */
  internalUrl?: string;
  /** Out of the load balancer's rotation: stopping, as a pod's endpoint is removed before SIGTERM. */
  leaving: boolean;
}

/** What one rolling step did. */
export interface Roll {
  old: string;
  fresh: string;
  /** SIGTERM to exit. */
  stopMs: number;
  /** Start to ready. */
  startMs: number;
  /** How the old one ended (0: its shutdown ran to the end within SHUTDOWN_TIMEOUT_MS). */
  exit?: { code: number | null; signal: NodeJS.Signals | null };
}

/**
 * The whole fleet as separate OS processes, as in production: the embedded broker (its own process,
 * log on disk), a Redis server of its own (append-only file, so a restart keeps its data), a
 * throwaway database on a real Postgres reached through a proxy the test can cut, and every app
 * started with `node --import tsx apps/<app>/src/main.ts` and its environment.
 */
export class ProcessFleet {
  private readonly rotation = new Map<App, number>();

  private constructor(
    /** The broker, Redis, and each app's first replica (what the single-replica tests use). */
    readonly parts: Record<Part, ManagedProcess>,
    /** Every app's replicas now running (or stopping), in order; rollReplica replaces one in place. */
    readonly replicas: Record<App, Replica[]>,
    private readonly newReplica: (app: App) => Promise<Replica>,
    readonly postgres: TcpFaultProxy,
    readonly urls: { ws: string; rest: string; wsInternal: string; redis: string },
    private readonly cleanup: () => Promise<void>,
  ) {}

  /**
   * A replica of `app` in the load balancer's rotation (round robin): where a client connecting now
   * (ws-gateway) or calling now (rest-gateway) lands.
   */
  urlOf(app: App): string {
    const live = this.replicas[app].filter((r) => !r.leaving);
    if (live.length === 0) throw new Error(`no ${app} replica in rotation`);
    const n = this.rotation.get(app) ?? 0;
    this.rotation.set(app, n + 1);
    return live[n % live.length]!.url;
  }

  /** A ws-gateway's WebSocket URL, round robin over those in rotation. */
  wsUrl(): string {
    return `${this.urlOf('ws-gateway').replace('http://', 'ws://')}/v1/ws`;
  }

  /**
   * One step of a rolling update: replica `index` of `app` leaves the rotation, gets SIGTERM and is
   * waited for (SIGKILL only past `graceMs`), and a fresh replica (new name, new ports) takes its
   * place once ready. `surge`: the fresh one starts first, as a Deployment with maxSurge does.
   */
  async rollReplica(app: App, index: number, { surge = false, graceMs = 15_000 } = {}): Promise<Roll> {
    const old = this.replicas[app][index];
    if (!old) throw new Error(`${app} has no replica ${index}`);
    const fresh = await this.newReplica(app);
    let startMs = 0;
    const start = async () => {
      const at = Date.now();
      await fresh.process.start();
      startMs = Date.now() - at;
      this.replicas[app].splice(this.replicas[app].indexOf(old), 1, fresh);
      if (this.parts[app] === old.process) this.parts[app] = fresh.process;
    };
    if (surge) await start();
    old.leaving = true;
    const stopAt = Date.now();
    await old.process.stop(graceMs);
    const stopMs = Date.now() - stopAt;
    if (!surge) await start();
    return { old: old.name, fresh: fresh.name, stopMs, startMs, exit: old.process.lastExit };
  }

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
      'message-router': { ...sql, DATABASE_POOL_SIZE: '2' },
      'session-ms': {
        REDIS_URL: `redis://127.0.0.1:${port.redis}`,
        ACK_TIMEOUT_MS: '3000',
        MAX_ATTEMPTS: '5',
        GATEWAY_TTL_MS: '10000',
      },
      'ws-gateway': {
        JWT_SECRET,
        HEARTBEAT_INTERVAL_MS: '1000',
        // These suites test faults; the limits have their own tests.
        RATE_LIMIT_PER_SECOND: '100000',
        RATE_LIMIT_BURST: '100000',
        CONNECT_RATE_PER_MINUTE: '100000',
        CONNECT_BURST: '100000',
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
    const replicaSeq = new Map<App, number>();
    /** A replica with fresh ports (the first of each app on the ports above, which `urls` name). */
    const newReplica = async (app: App): Promise<Replica> => {
      const n = (replicaSeq.get(app) ?? 0) + 1;
      replicaSeq.set(app, n);
      const first = n === 1;
      const name = `${app}-${n}`;
      const ownPort = first ? port[app] : await freePort();
      const env: Record<string, string> = {
        ...common,
        PORT: String(ownPort),
        ...appEnv[app],
        ...options.env?.[app],
      };
      let internalUrl: string | undefined;
      if (app === 'ws-gateway') {
        const internalPort = first ? port.wsInternal : await freePort();
        internalUrl = `http://127.0.0.1:${internalPort}`;
        // No GATEWAY_ID: each process takes a new one, as a new pod has a new name.
        Object.assign(env, { INTERNAL_PORT: String(internalPort), GATEWAY_INTERNAL_URL: internalUrl });
      }
      const probe = internalUrl ?? `http://127.0.0.1:${ownPort}`;
      // An app run once keeps the log name the fault suite's readers know.
      const logName = first && (options.replicas?.[app] ?? 1) === 1 ? app : name;
      return {
        app,
        name,
        url: `http://127.0.0.1:${ownPort}`,
        internalUrl,
        leaving: false,
        process: node(logName, `apps/${app}/src/main.ts`, [], env, () => httpOk(`${probe}/readyz`)),
      };
    };
    const replicas = {} as Record<App, Replica[]>;
    for (const app of APPS) {
      replicas[app] = [];
      for (let i = 0; i < Math.max(1, options.replicas?.[app] ?? 1); i++)
        replicas[app].push(await newReplica(app));
    }
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
      ...Object.fromEntries(APPS.map((app) => [app, replicas[app][0]!.process])),
    } as Record<Part, ManagedProcess>;

    const fleet = new ProcessFleet(
      parts,
      replicas,
      newReplica,
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
      await parts['group-ms'].start(); // its migrations create the tables the routers read
      await Promise.all(
        APPS.flatMap((app) => replicas[app].map((r) => r.process))
          .filter((p) => p !== parts['group-ms'])
          .map((p) => p.start()),
      );
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
    for (const app of [...APPS].reverse()) await Promise.all(this.replicas[app].map((r) => r.process.stop()));
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
