/**
 * What the deployment must provide, read from the code itself: the deployable apps (every
 * apps/<name>/src/main.ts except the dev launcher), each app's TypeBox config schema (the one
 * `...Config` object exported by apps/<name>/src/config.ts), its ports (schema defaults) and the
 * variables it reads. A new app, or a new variable in a schema, is covered without editing this.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type { TObject, TSchema } from '@sinclair/typebox';
import {
  ConfigError,
  loadConfig,
  NON_EMPTY_SECRETS,
  productionProblems,
  SECRET_VARS,
} from '@parley/service-kit';

export const ROOT = path.resolve(__dirname, '../../..');

/** Apps that are not deployed as their own process (kept in step with bundle.mjs). */
export const NOT_DEPLOYED = ['launcher'];

/** Apps whose PORT is public (load balancer / ingress); every other port is internal. */
export const PUBLIC_APPS = ['ws-gateway', 'rest-gateway'];

/** Apps that must autoscale (gateways and routers), and the topics the routers consume. */
export const AUTOSCALED: Record<string, string[]> = {
  'ws-gateway': [],
  'rest-gateway': [],
  'message-router': ['inbound'],
  'group-message-router': ['group'],
};

/**
 * Optional variables a deployment must still set explicitly (an empty value means "off" / "the
 * default" where the schema allows it): the shared Kafka, logging, shutdown and secret settings,
 * the upstream URLs, and how session-ms finds each gateway pod.
 */
export const IMPORTANT_VARS = [
  'KAFKA_BROKERS',
  'KAFKA_SSL',
  'KAFKA_SASL_MECHANISM',
  'KAFKA_SASL_USERNAME',
  'KAFKA_SASL_PASSWORD',
  'KAFKA_TOPIC_PARTITIONS',
  'KAFKA_REPLICATION_FACTOR',
  'LOG_LEVEL',
  'SHUTDOWN_TIMEOUT_MS',
  'INTERNAL_SECRET',
  'JWT_SECRET',
  'JWT_JWKS_URL',
  'JWT_AUDIENCE',
  'JWT_ISSUER',
  'DATABASE_URL',
  'REDIS_URL',
  'FCM_SERVICE_ACCOUNT',
  'PERSISTENCE_URL',
  'GROUP_URL',
  'PUSH_URL',
  'SESSION_URL',
  'PORT',
  'INTERNAL_PORT',
  'GATEWAY_ID',
  'GATEWAY_INTERNAL_URL',
  'DEV_MODE',
];

/** Variables that hold secrets: in Kubernetes they must come from a Secret (secretKeyRef). */
export { SECRET_VARS };

/** Secret variables that must be present (not `optional`) wherever an app reads them (and are refused empty). */
export const MANDATORY_SECRETS = NON_EMPTY_SECRETS;

/** Variables set on a container that are for Node, not for the app's schema. */
export const RUNTIME_VARS = ['NODE_OPTIONS', 'NODE_EXTRA_CA_CERTS'];

export interface AppSpec {
  name: string;
  schemaName: string;
  schema: TObject;
  vars: string[];
  /** Required by the schema and without a default: the app refuses to start without it. */
  required: string[];
  /** What a deployment must set: `required` plus the IMPORTANT_VARS the schema has. */
  expected: string[];
  port: number;
  internalPort?: number;
  /** Where /healthz, /readyz and /metrics are scraped: the internal port when there is one. */
  probePort: number;
  public: boolean;
}

export function deployableApps(): string[] {
  return readdirSync(path.join(ROOT, 'apps'))
    .filter((name) => !NOT_DEPLOYED.includes(name))
    .filter((name) => existsSync(path.join(ROOT, 'apps', name, 'src/main.ts')))
    .sort();
}

function isObjectSchema(value: unknown): value is TObject {
  return (
    typeof value === 'object' &&
    value !== null &&
    (value as TSchema).type === 'object' &&
    'properties' in value
  );
}

export function defaultOf(schema: TObject, key: string): unknown {
  return (schema.properties[key] as TSchema | undefined)?.default;
}

export function loadApp(name: string): AppSpec {
  const file = `apps/${name}/src/config.ts`;
  const mod = require(path.join(ROOT, file)) as Record<string, unknown>;
  const schemas = Object.entries(mod).filter(
    ([key, value]) => key.endsWith('Config') && isObjectSchema(value),
  );
  if (schemas.length !== 1) {
    throw new Error(
      `${file} must export exactly one *Config object schema (found ${schemas.map(([k]) => k).join(', ') || 'none'})`,
    );
  }
  const [schemaName, schema] = schemas[0] as [string, TObject];
  const vars = Object.keys(schema.properties).sort();
  const required = (schema.required ?? []).filter((key) => defaultOf(schema, key) === undefined).sort();
  const expected = [...new Set([...required, ...IMPORTANT_VARS.filter((v) => vars.includes(v))])].sort();
  const port = defaultOf(schema, 'PORT');
  if (typeof port !== 'number') throw new Error(`${name}: PORT has no numeric default`);
  const internal = defaultOf(schema, 'INTERNAL_PORT');
  const internalPort = typeof internal === 'number' ? internal : undefined;
  return {
    name,
    schemaName,
    schema,
    vars,
    required,
    expected,
    port,
    internalPort,
    probePort: internalPort ?? port,
    public: PUBLIC_APPS.includes(name),
  };
}

let cached: AppSpec[] | undefined;
export function fleet(): AppSpec[] {
  cached ??= deployableApps().map(loadApp);
  return cached;
}

/**
 * Upstream URL variables (`*_URL` whose default is a local http address): which app they must
 * point at, found by the default's port. PERSISTENCE_URL (default http://127.0.0.1:9105) -> the
 * app whose PORT is 9105.
 */
export function upstreamOf(app: AppSpec, variable: string): AppSpec | undefined {
  const value = defaultOf(app.schema, variable);
  if (!variable.endsWith('_URL') || typeof value !== 'string') return undefined;
  const match = /^http:\/\/(127\.0\.0\.1|localhost):(\d+)/.exec(value);
  if (!match) return undefined;
  return fleet().find((other) => other.port === Number(match[2]));
}

/** validateConfig for a container of the image: `env` over what the Dockerfile sets. */
export function validateInImage(app: AppSpec, env: Record<string, string>): string[] {
  return validateConfig(app, { ...imageEnv(), ...env });
}

/** The ENV the Dockerfile's runtime stage sets: what every container starts with, under its own env. */
export function imageEnv(): Record<string, string> {
  const dockerfile = readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8').replace(/\\\n/g, ' ');
  const runtime = dockerfile.slice(dockerfile.search(/^FROM .* AS runtime/im));
  const env: Record<string, string> = {};
  for (const line of runtime.split('\n').filter((l) => /^ENV\s/.test(l)))
    for (const [, name, value] of line.slice(4).matchAll(/(\w+)=(\S+)/g)) env[name] = value;
  return env;
}

/**
 * The problems the app's own loadConfig and runMain find with `env` (empty when it would start). ajv's
 * "unknown format ... ignored" console warnings (the apps' loader has no ajv-formats) are muted.
 */
export function validateConfig(app: AppSpec, env: Record<string, string>): string[] {
  const warn = console.warn;
  console.warn = (...args: unknown[]) => {
    if (typeof args[0] === 'string' && args[0].startsWith('unknown format')) return;
    warn(...args);
  };
  try {
    // What runMain checks next, before it starts anything.
    return productionProblems(loadConfig(app.name, app.schema, env));
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  } finally {
    console.warn = warn;
  }
}
