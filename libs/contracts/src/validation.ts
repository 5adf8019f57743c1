import Ajv, { ErrorObject, ValidateFunction } from 'ajv';
import addFormats from 'ajv-formats';
import { TSchema, Static } from '@sinclair/typebox';
import { MAX_BODY_DEPTH } from './limits';

/**
 * One Ajv for the contracts. `removeAdditional` drops unknown properties of closed objects (a client's
 * `from` is ignored, never trusted); `useDefaults` fills documented defaults such as `chat: direct`.
 */
export function createAjv(): Ajv {
  const ajv = new Ajv({
    allErrors: false,
    strict: false,
    useDefaults: true,
    removeAdditional: false,
    coerceTypes: false,
  });
  addFormats(ajv);
  return ajv;
}

export type ValidationResult<T> = { ok: true; value: T } | { ok: false; errors: string[] };

export interface Validator<T> {
  (input: unknown): ValidationResult<T>;
}

/** Compile a schema into a validator whose errors read `field: reason`. */
export function compile<S extends TSchema>(schema: S, ajv: Ajv = defaultAjv): Validator<Static<S>> {
  const check: ValidateFunction = ajv.compile(withoutIds(schema));
  return (input) =>
    check(input) ? { ok: true, value: input as Static<S> } : { ok: false, errors: formatErrors(check.errors ?? []) };
}

// Holds compiled code only; validators are pure functions, so sharing the compiler is safe.
const defaultAjv = createAjv();

/**
 * The schema without `$id`s: nested ids would register schemas globally in an Ajv instance (and
 * clash when compiled twice), so every consumer compiles self-contained copies.
 */
export function withoutIds<S extends TSchema>(schema: S): S {
  return JSON.parse(JSON.stringify(schema), (key, value) => (key === '$id' ? undefined : value));
}

export function formatErrors(errors: ErrorObject[]): string[] {
  return errors.map(formatError);
}

export function formatError(error: ErrorObject): string {
  const params = error.params as Record<string, unknown>;
  const base = fieldPath(error.instancePath);
  switch (error.keyword) {
    case 'required':
      return `${join(base, String(params.missingProperty))}: is required`;
    case 'additionalProperties':
      return `${join(base, String(params.additionalProperty))}: is not allowed`;
    case 'pattern':
      return `${base || '(root)'}: must match ${String(params.pattern)}`;
    case 'const':
      return `${base || '(root)'}: must be ${JSON.stringify(params.allowedValue)}`;
    case 'enum':
      return `${base || '(root)'}: must be one of ${(params.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(', ')}`;
    default:
      return `${base || '(root)'}: ${error.message ?? 'is invalid'}`;
  }
}

/** `/members/2` -> `members[2]`, `/body/a` -> `body.a`. */
export function fieldPath(instancePath: string): string {
  return instancePath
    .split('/')
    .slice(1)
    .map((part) => part.replace(/~1/g, '/').replace(/~0/g, '~'))
    .reduce((path, part) => (/^\d+$/.test(part) ? `${path}[${part}]` : path ? `${path}.${part}` : part), '');
}

function join(base: string, prop: string): string {
  return base ? `${base}.${prop}` : prop;
}

/** Depth of a JSON value (a scalar is 0). Stops counting past `limit`, so huge values cost little. */
export function jsonDepth(value: unknown, limit = MAX_BODY_DEPTH + 1): number {
  if (value === null || typeof value !== 'object' || limit <= 0) return 0;
  let deepest = 0;
  for (const child of Object.values(value as object)) {
    deepest = Math.max(deepest, jsonDepth(child, limit - 1));
    if (deepest >= limit) break;
  }
  return deepest + 1;
}
