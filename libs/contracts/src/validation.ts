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
    check(input)
      ? { ok: true, value: input as Static<S> }
      : { ok: false, errors: formatErrors(check.errors ?? []) };
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
  return simplifyErrors(errors).map((error) => formatError(error));
}

/** One error as `field: reason`. */
export function formatError(error: ErrorObject): string {
  return `${errorField(error) || '(root)'}: ${errorReason(error)}`;
}

/** The REST part an input came from, as fastify names it. */
export type InputPart = 'body' | 'querystring' | 'params' | 'headers';

/**
 * The message of a refused REST input: `name: …` and `body: …` for the body, `query limit: …` for
 * the query string, `params id: …` for the path.
 */
export function describeInputErrors(errors: ErrorObject[], part: InputPart | string): string {
  const where = part === 'querystring' ? 'query' : part;
  const name = (field: string) => (part === 'body' ? field || 'body' : field ? `${where} ${field}` : where);
  return simplifyErrors(errors)
    .map((error) => `${name(errorField(error))}: ${errorReason(error)}`)
    .join('; ');
}

/** The field an error is about (`members[1]`, `body.a`); empty for the value itself. */
function errorField(error: ErrorObject): string {
  const base = fieldPath(error.instancePath);
  const params = error.params as Record<string, unknown>;
  if (error.keyword === 'required') return join(base, String(params.missingProperty));
  if (error.keyword === 'additionalProperties') return join(base, String(params.additionalProperty));
  return base;
}

function errorReason(error: ErrorObject): string {
  const params = error.params as Record<string, unknown>;
  switch (error.keyword) {
    case 'required':
      return 'is required';
    case 'additionalProperties':
      return 'is not allowed';
    case 'pattern':
      return `must match ${String(params.pattern)}`;
    case 'const':
      return `must be ${JSON.stringify(params.allowedValue)}`;
    case 'enum':
      return `must be one of ${(params.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(', ')}`;
    default:
      return error.message ?? 'is invalid';
  }
}

const UNION_KEYWORDS = new Set(['anyOf', 'oneOf']);

/**
 * A union reports every branch's failure and then "must match a schema in anyOf". Keep what helps:
 * drop the summary, drop a branch's type mismatch where another branch of the right type said what
 * is wrong at that field, and merge literal alternatives into one `must be one of`.
 */
function simplifyErrors(errors: ErrorObject[]): ErrorObject[] {
  const specific = errors.filter((error) => !UNION_KEYWORDS.has(error.keyword));
  if (specific.length === 0) return errors;
  const kept = specific.filter(
    (error) => error.keyword !== 'type' || !specific.some((other) => explains(other, error.instancePath)),
  );
  return mergeAlternatives(kept);
}

/** An error below `path`, or other than a type mismatch at it: its branch had the right type there. */
function explains(error: ErrorObject, path: string): boolean {
  return (
    error.instancePath.startsWith(`${path}/`) || (error.instancePath === path && error.keyword !== 'type')
  );
}

/** Errors of the same kind at one field, one per union branch, become one error. */
function mergeAlternatives(errors: ErrorObject[]): ErrorObject[] {
  const byField = new Map<string, ErrorObject[]>();
  const groups: ErrorObject[][] = [];
  for (const error of errors) {
    const mergeable = error.keyword === 'const' || error.keyword === 'type';
    const key = `${error.keyword} ${error.instancePath}`;
    const group = mergeable ? byField.get(key) : undefined;
    if (group) {
      group.push(error);
      continue;
    }
    groups.push([error]);
    if (mergeable) byField.set(key, groups[groups.length - 1]);
  }
  return groups.map(mergeGroup);
}

function mergeGroup(group: ErrorObject[]): ErrorObject {
  const [first] = group;
  if (group.length === 1) return first;
  const param = first.keyword === 'const' ? 'allowedValue' : 'type';
  const allowed = group.map((error) => (error.params as Record<string, unknown>)[param]);
  return first.keyword === 'const'
    ? { ...first, keyword: 'enum', params: { allowedValues: allowed } }
    : { ...first, message: `must be ${allowed.join(' or ')}` };
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
