import { accessSync, constants, statSync } from 'node:fs';
import Ajv from 'ajv';
import addFormats from 'ajv-formats';
import { Static, StringOptions, TObject, TProperties, TString, Type } from '@sinclair/typebox';
import { formatErrors } from '@parley/contracts';
import { MAX_TRACED_USERS } from './trace';

/** Milliseconds in a day, for settings given in days. */
export const DAY_MS = 24 * 60 * 60 * 1000;

/** A configuration problem: every bad or missing variable, listed in one message. */
export class ConfigError extends Error {
  constructor(
    readonly service: string,
    readonly problems: string[],
  ) {
    super(`${service}: invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

/**
 * Secrets refused when set but empty, instead of taken as unset: a Secret key that exists but is
 * empty (made from an unset shell variable) would otherwise fall back to a public development
 * secret, or to an in-process store where the fleet needs a shared one.
 */
export const NON_EMPTY_SECRETS = ['INTERNAL_SECRET', 'JWT_SECRET', 'DATABASE_URL', 'REDIS_URL'];

/** Variables holding secrets (or credentials inside URLs): their values never appear in a message. */
export const SECRET_VARS = [
  ...NON_EMPTY_SECRETS,
  'JWT_JWKS_URL',
  'FCM_SERVICE_ACCOUNT',
  'KAFKA_SASL_PASSWORD',
];

/**
 * Variables another one needs, where a schema has both: JWT_JWKS_URL without JWT_AUDIENCE would let
 * a token the identity provider minted for another application in (createTokenVerifier refuses it
 * too, but only once main.ts reaches it, after Kafka connected); a SASL mechanism without its
 * credentials would log in to Kafka with empty ones.
 */
const REQUIRED_WITH: Array<{ key: string; needs: string; why: string }> = [
  {
    key: 'JWT_JWKS_URL',
    needs: 'JWT_AUDIENCE',
    why: "the audience your identity provider puts in Parley's tokens",
  },
  { key: 'KAFKA_SASL_MECHANISM', needs: 'KAFKA_SASL_USERNAME', why: 'the Kafka user to log in as' },
  { key: 'KAFKA_SASL_MECHANISM', needs: 'KAFKA_SASL_PASSWORD', why: "that user's password" },
];

/**
 * Typed configuration from the environment. The schema's keys are the variable names; values are
 * coerced to the declared types and defaults filled in. Every problem is reported at once.
 */
export function loadConfig<T extends TObject>(
  service: string,
  schema: T,
  env: NodeJS.ProcessEnv = process.env,
): Static<T> {
  const ajv = new Ajv({ allErrors: true, coerceTypes: true, useDefaults: true, strict: false });
  addFormats(ajv);
  ajv.addFormat('readable-file', { type: 'string', validate: isReadableFile });
  const validate = ajv.compile(schema);
  const candidate: Record<string, unknown> = {};
  const problems: string[] = [];
  for (const key of Object.keys(schema.properties)) {
    const raw = env[key];
    if (raw === '' && NON_EMPTY_SECRETS.includes(key))
      problems.push(`${key}: is set but empty; give it a value, or unset it for the development default`);
    if (raw !== undefined && raw !== '') candidate[key] = raw;
  }
  const dependent: string[] = [];
  for (const { key, needs, why } of REQUIRED_WITH)
    if (needs in schema.properties && candidate[key] !== undefined && candidate[needs] === undefined)
      dependent.push(`${needs}: is required with ${key} (${why})`);
  if (validate(candidate) && problems.length === 0 && dependent.length === 0) return candidate as Static<T>;
  // Simplified as for requests: an enum's alternatives read as one `must be one of`.
  for (const text of formatErrors(validate.errors ?? [])) {
    const name = text.slice(0, text.indexOf(':'));
    const shown = SECRET_VARS.includes(name) ? '(value withheld: a secret)' : JSON.stringify(candidate[name]);
    problems.push(name in candidate ? `${text} (got ${shown})` : text);
  }
  throw new ConfigError(service, [...problems, ...dependent]);
}

/** Variables every service reads. */
export const CommonConfig = {
  LOG_LEVEL: Type.Union(
    ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((l) => Type.Literal(l)),
    { default: 'info' },
  ),
  HOST: Type.String({ default: '0.0.0.0', description: 'Interface the HTTP servers listen on' }),
  TRACE_USERS: Type.String({
    default: '',
    pattern: `^[^,]*(,[^,]*){0,${MAX_TRACED_USERS - 1}}$`,
    description: `Comma-separated user ids (at most ${MAX_TRACED_USERS}) whose messages are logged at every hop, whatever LOG_LEVEL says ({"trace":true}, with their mids): to follow a message a user reports missing. Empty: none`,
  }),
  PARLEY_ENV: Type.Union([Type.Literal('development'), Type.Literal('production')], {
    default: 'development',
    description:
      'production refuses to start on the public development secrets (JWT_SECRET, INTERNAL_SECRET) or with DEV_MODE=true (rest-gateway); development warns of the secrets',
  }),
  SHUTDOWN_TIMEOUT_MS: Type.Integer({
    minimum: 100,
    default: 25_000,
    description: 'Graceful shutdown deadline',
  }),
  STARTUP_RETRY_MS: Type.Integer({
    minimum: 0,
    default: 120_000,
    description:
      'How long a start that fails on a dependency (Kafka, Postgres, Redis unreachable) is tried again before the process exits 1; 0: exit at the first failure',
  }),
} satisfies TProperties;

/**
 * Where one service reaches another over HTTP: `http(s)://host:port` and nothing after it (the
 * callers add their paths). Anything else is refused at start, not found at the first call.
 */
export function serviceUrl(options: StringOptions): TString {
  return Type.String({ pattern: '^https?://[^/?#\\s]+$', ...options });
}

/** A file the service reads at start (a CA certificate): one it cannot read is refused with the rest. */
export function readableFile(options: StringOptions): TString {
  return Type.String({ format: 'readable-file', ...options });
}

function isReadableFile(path: string): boolean {
  try {
    accessSync(path, constants.R_OK);
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

/** The built-in internal secret: public, so only for development. */
export const DEV_INTERNAL_SECRET = 'parley-dev-internal-secret';

export const InternalConfig = {
  INTERNAL_SECRET: Type.String({
    minLength: 16,
    default: DEV_INTERNAL_SECRET,
    description: 'Shared secret for internal HTTP calls between services',
  }),
} satisfies TProperties;
