import { Static, TObject } from '@sinclair/typebox';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { DEV_JWT_SECRET } from './auth';
import { ConfigError, DEV_INTERNAL_SECRET, loadConfig } from './config';
import { Closer, runService, Service } from './lifecycle';
import { createLogger } from './logger';
import { createMetricsRegistry } from './metrics';
import { Readiness } from './readiness';

/** What every service gets from its bootstrap: logs, metrics, readiness checks, things to close. */
export interface Runtime {
  logger: Logger;
  metrics: Registry;
  readiness: Readiness;
  /** Adapters `main.ts` opened; closed after the service stops, in reverse order. */
  closer: Closer;
}

export function createRuntime(service: string, logLevel = 'info'): Runtime {
  const logger = createLogger(service, { level: logLevel });
  return {
    logger,
    metrics: createMetricsRegistry(service),
    readiness: new Readiness(),
    closer: new Closer(logger),
  };
}

type WithCommon<T extends TObject> = Static<T> & { LOG_LEVEL: string; SHUTDOWN_TIMEOUT_MS: number };

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
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`${err.message}\n`);
    process.exit(2);
  }
  const runtime = createRuntime(service, config.LOG_LEVEL);
  const devSecrets = publicDevSecretsIn(config);
  if (devSecrets.length > 0)
    runtime.logger.warn(
      { settings: devSecrets },
      `${devSecrets.join(' and ')} still hold the public development value: anyone can sign tokens or call internal endpoints; set them outside development`,
    );
  const fail = async (err: unknown) => {
    runtime.logger.fatal({ err }, 'failed to start');
    // What was opened is closed within the shutdown deadline, however a dependency behaves.
    setTimeout(() => process.exit(1), config.SHUTDOWN_TIMEOUT_MS);
    await runtime.closer.closeAll();
    process.exit(1);
  };
  let app: Service;
  try {
    app = await wire(config, runtime);
  } catch (err) {
    return fail(err);
  }
  const service_: Service = {
    start: () => app.start(),
    stop: async () => {
      runtime.readiness.markDraining();
      await app.stop();
      await runtime.closer.closeAll();
    },
  };
  await runService(service_, {
    logger: runtime.logger,
    shutdownTimeoutMs: config.SHUTDOWN_TIMEOUT_MS,
  });
}

/** Settings left on the public development secrets (JWT_SECRET counts only without a JWKS). */
export function publicDevSecretsIn(config: Record<string, unknown>): string[] {
  const found: string[] = [];
  if (config.JWT_SECRET === DEV_JWT_SECRET && !config.JWT_JWKS_URL) found.push('JWT_SECRET');
  if (config.INTERNAL_SECRET === DEV_INTERNAL_SECRET) found.push('INTERNAL_SECRET');
  return found;
}
