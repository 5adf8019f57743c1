import { Static, TObject } from '@sinclair/typebox';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { DEV_JWT_SECRET } from './auth';
import { ConfigError, DEV_INTERNAL_SECRET, loadConfig } from './config';
import { Closer, runService, Service } from './lifecycle';
import { createLogger } from './logger';
import { createMetricsRegistry } from './metrics';
import { Readiness } from './readiness';
import { createMessageTrace, MessageTrace, tracedUsers } from './trace';
import { isTransient } from './transient';

/** What every service gets from its bootstrap: logs, metrics, readiness checks, things to close. */
export interface Runtime {
  logger: Logger;
  /** The hops of traced users' messages (TRACE_USERS); none traced where unset. */
  trace?: MessageTrace;
  metrics: Registry;
  readiness: Readiness;
  /** Adapters `main.ts` opened; closed after the service stops, in reverse order. */
  closer: Closer;
}

export function createRuntime(
  service: string,
  logLevel = 'info',
  traceUsers: readonly string[] = [],
): Runtime {
  const logger = createLogger(service, { level: logLevel });
  return {
    logger,
    trace: createMessageTrace(traceUsers, logger),
    metrics: createMetricsRegistry(service),
    readiness: new Readiness(),
    closer: new Closer(logger),
  };
}

function runtimeOf(service: string, config: { LOG_LEVEL: string; TRACE_USERS: string }): Runtime {
  return createRuntime(service, config.LOG_LEVEL, tracedUsers(config.TRACE_USERS));
}

type WithCommon<T extends TObject> = Static<T> & {
  PARLEY_ENV: 'development' | 'production';
  LOG_LEVEL: string;
  TRACE_USERS: string;
  SHUTDOWN_TIMEOUT_MS: number;
  STARTUP_RETRY_MS: number;
};

/**
 * The whole of an app's `main.ts`: read config (exit 2 listing every problem), build the runtime,
 * let `wire` open adapters and return `createXxx(deps)`, then run it until SIGTERM/SIGINT.
 */
export async function runMain<T extends TObject>(
  service: string,
  schema: T,
  wire: (config: WithCommon<T>, runtime: Runtime) => Promise<Service>,
): Promise<void> {
  let config: WithCommon<T>;
  try {
    config = loadConfig(service, schema, process.env) as WithCommon<T>;
    const refused = productionProblems(config);
    if (refused.length > 0) throw new ConfigError(service, refused);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`${err.message}\n`);
    process.exit(2);
  }
  const runtime = runtimeOf(service, config);
  const devSecrets = publicDevSecretsIn(config);
  if (devSecrets.length > 0)
    runtime.logger.warn(
      { settings: devSecrets },
      `${devSecrets.join(' and ')} still hold the public development value: anyone can sign tokens or call internal endpoints; set them outside development`,
    );
  const settings = Object.keys(schema.properties);
  await runService(startingAgainOnDependencyFailures(service, config, settings, runtime, wire), {
    logger: runtime.logger,
    shutdownTimeoutMs: config.SHUTDOWN_TIMEOUT_MS,
  });
}

/**
 * The service `wire` builds, started; when the start fails on a dependency (Kafka, Postgres or
 * Redis unreachable), what it opened is closed and it is wired and started again, with backoff,
 * for up to STARTUP_RETRY_MS. A process that exited at once would be restarted by its orchestrator
 * with a backoff that grows to minutes, long after the dependency came back.
 */
function startingAgainOnDependencyFailures<T extends TObject>(
  service: string,
  config: WithCommon<T>,
  settings: string[],
  firstRuntime: Runtime,
  wire: (config: WithCommon<T>, runtime: Runtime) => Promise<Service>,
): Service {
  const { logger } = firstRuntime;
  let current: Service | undefined;
  let stopped = false;
  let wakeUp: (() => void) | undefined;
  /** Closing what a failed attempt opened, however a dependency behaves, within the shutdown deadline. */
  const close = (closing: () => Promise<void>) =>
    Promise.race([
      closing().catch((err: unknown) => logger.warn({ err }, 'closing failed')),
      new Promise((resolve) => setTimeout(resolve, config.SHUTDOWN_TIMEOUT_MS).unref()),
    ]);
  const attempt = async (runtime: Runtime) => {
    let app: Service;
    try {
      app = await wire(config, runtime);
    } catch (err) {
      await close(() => runtime.closer.closeAll());
      throw err;
    }
    current = {
      start: () => app.start(),
      stop: async () => {
        runtime.readiness.markDraining();
        await app.stop();
        await runtime.closer.closeAll();
      },
    };
    await current.start();
  };
  return {
    async start() {
      const giveUpAt = Date.now() + config.STARTUP_RETRY_MS;
      let runtime = firstRuntime;
      for (let tries = 1; !stopped; tries++) {
        try {
          await attempt(runtime);
          logger.info({ ...startedWith(config, settings), tries }, 'started');
          return;
        } catch (err) {
          if (stopped) throw err;
          const failed = current;
          current = undefined;
          if (failed) await close(() => failed.stop());
          const waitMs = Math.min(1000 * 2 ** (tries - 1), 15_000);
          if (!isTransient(err) || Date.now() + waitMs > giveUpAt) throw err;
          // What it reaches for, so that the error's address (`ECONNREFUSED 10.0.3.7:5432`) names one.
          logger.warn(
            { err, tries, retryInMs: waitMs, reaching: startedWith(config, settings) },
            'a dependency is not available: starting again',
          );
          await new Promise<void>((resolve) => {
            const timer = setTimeout(resolve, waitMs);
            wakeUp = () => (clearTimeout(timer), resolve());
          });
          runtime = runtimeOf(service, config); // the failed one's metrics stay registered there
        }
      }
    },
    async stop() {
      stopped = true;
      wakeUp?.();
      await current?.stop();
    },
  };
}

/** With PARLEY_ENV=production, the public development secrets and rest-gateway's DEV_MODE are configuration problems. */
export function productionProblems(config: Record<string, unknown>): string[] {
  if (config.PARLEY_ENV !== 'production') return [];
  const problems = publicDevSecretsIn(config).map(
    (name) =>
      `${name}: holds the public development value, refused with PARLEY_ENV=production (anyone could sign tokens or call internal endpoints); set a secret of your own`,
  );
  if (config.DEV_MODE === true)
    problems.push(
      'DEV_MODE: is true, refused with PARLEY_ENV=production (POST /v1/dev/token hands anyone a token for any user); set it to false',
    );
  return problems;
}

/** Settings left on the public development secrets (JWT_SECRET counts only without a JWKS). */
export function publicDevSecretsIn(config: Record<string, unknown>): string[] {
  const found: string[] = [];
  if (config.JWT_SECRET === DEV_JWT_SECRET && !config.JWT_JWKS_URL) found.push('JWT_SECRET');
  if (config.INTERNAL_SECRET === DEV_INTERNAL_SECRET) found.push('INTERNAL_SECRET');
  return found;
}

/**
 * Where a started service listens and which Kafka, Redis and Postgres it reached, for its `started`
 * line: passwords in URLs are replaced by `***`, and settings the app does not have are left out.
 */
export function startedWith(
  config: Record<string, unknown>,
  /** The app's settings (its schema's keys): an optional one left unset is absent from `config`. */
  settings: string[] = Object.keys(config),
): Record<string, unknown> {
  const has = (name: string) => settings.includes(name);
  const fields: Record<string, unknown> = {
    host: config.HOST,
    port: config.PORT,
    internalPort: config.INTERNAL_PORT,
    kafka: config.KAFKA_BROKERS,
    redis: has('REDIS_URL') ? (withoutPassword(config.REDIS_URL) ?? 'in-process store') : undefined,
    database: has('DATABASE_URL')
      ? (withoutPassword(config.DATABASE_URL) ?? `PGlite (${String(config.PGLITE_DATA_DIR)})`)
      : undefined,
  };
  return Object.fromEntries(Object.entries(fields).filter(([, value]) => value !== undefined));
}

function withoutPassword(url: unknown): string | undefined {
  if (typeof url !== 'string' || url === '') return undefined;
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return '(not a URL)';
  }
}
