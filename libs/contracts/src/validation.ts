import Ajv, { ErrorObject, ValidateFunction } from 'ajv';
import addFormats from 'ajv-formats';
import { TSchema, Static } from '@sinclair/typebox';
import { MAX_BODY_DEPTH } from './limits';

/**
 * One Ajv for the contracts. Unknown properties are kept (`removeAdditional: false`): a newer
 * client's fields pass through, and what is delivered is built field by field. `useDefaults`
 * fills documented defaults such as `chat: direct`.
 */
export function createAjv(): Ajv {
  const ajv = new Ajv({
    allErrors: false,
    strict: false,
    useDefaults: true,
    removeAdditional: false,
    coerceTypes: false,
    discriminator: true,
  });
  addFormats(ajv);
  return ajv;
}

export type ValidationResult<T> = { ok: true; value: T } | { ok: false; errors: string[] };

export interface Validator<T> {
  (input: unknown): ValidationResult<T>;
}

export interface CompileOptions {
  ajv?: Ajv;
  /** The name an error about the value itself gets: `(root)`, or `body` for a request body as the REST routes say. */
  root?: string;
}

/** Compile a schema into a validator whose errors read `field: reason`. */
export function compile<S extends TSchema>(
  schema: S,
  { ajv = defaultAjv, root }: CompileOptions = {},
): Validator<Static<S>> {
  const { compiled, check } = compiledOnce(ajv, schema);
  return (input) =>
    check(input)
      ? { ok: true, value: input as Static<S> }
      : { ok: false, errors: formatErrors(check.errors ?? [], compiled, root) };
}

/**
 * Each schema's compiled copy, per Ajv. Ajv caches what it compiled by the object it was given, and
 * it is given a fresh copy (without ids, with discriminators) each time: without this, every
 * compile of the same schema took milliseconds again and stayed in Ajv's cache for good.
 */
const compiledBy = new WeakMap<Ajv, WeakMap<TSchema, { compiled: TSchema; check: ValidateFunction }>>();

function compiledOnce(ajv: Ajv, schema: TSchema): { compiled: TSchema; check: ValidateFunction } {
  let bySchema = compiledBy.get(ajv);
  if (!bySchema) compiledBy.set(ajv, (bySchema = new WeakMap()));
  let entry = bySchema.get(schema);
  if (!entry) {
    const compiled = withDiscriminators(withoutIds(schema)) as TSchema;
    bySchema.set(schema, (entry = { compiled, check: ajv.compile(compiled) }));
  }
  return entry;
}

/** Tags a union's branches may be told apart by, in the order tried. */
const TAGS = ['kind', 'type', 'op'];

/**
 * Unions whose branches are objects told apart by one literal property (`kind` of an event,
 * `type` of a frame) become Ajv discriminators: only the branch the tag names is checked. A plain
 * `anyOf` tries each branch in turn, and each failed one leaves error objects behind (garbage on
 * every event) and in the message.
 */
function withDiscriminators(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(withDiscriminators);
  if (node === null || typeof node !== 'object') return node;
  const source = node as Record<string, unknown>;
  // A union of unions is spread into one where that keeps the tags distinct; otherwise (the group
  // ops inside a client frame union all say `type: "group"`) the inner union stays one branch.
  const flat = Array.isArray(source.anyOf) ? { ...source, anyOf: flattenUnion(source.anyOf) } : source;
  const spread = flat !== source && TAGS.some((tag) => literalsOf(flat.anyOf as ObjectSchema[], tag));
  const copy: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(spread ? flat : source)) copy[key] = withDiscriminators(value);
  if (!Array.isArray(copy.anyOf)) return copy;
  const branches = copy.anyOf as ObjectSchema[];
  for (const tag of TAGS) {
    const literals = literalsOf(branches, tag);
    if (!literals) continue;
    const { anyOf: _anyOf, ...rest } = copy;
    // Ajv reads the tag from each branch's own `properties`: an intersection or a nested union
    // gets it spelled there.
    // Ajv ignored defaults under anyOf but fills them in a discriminator's branch: dropped, so a
    // missing field (a deliverable's `chat`) is still refused rather than defaulted.
    const tagged = branches.map((branch, i) =>
      withoutDefaults(
        branch.properties?.[tag]
          ? branch
          : { ...branch, required: [tag], properties: { [tag]: { const: literals[i] } } },
      ),
    );
    return { ...rest, type: 'object', oneOf: tagged, discriminator: { propertyName: tag } };
  }
  return copy;
}

/** A schema without `default` keywords (a property named `default` stays). */
function withoutDefaults(node: unknown, isPropertyMap = false): unknown {
  if (Array.isArray(node)) return node.map((item) => withoutDefaults(item));
  if (node === null || typeof node !== 'object') return node;
  const copy: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(node)) {
    if (key === 'default' && !isPropertyMap) continue;
    copy[key] = withoutDefaults(value, !isPropertyMap && PROPERTY_MAPS.has(key));
  }
  return copy;
}

const PROPERTY_MAPS = new Set(['properties', 'patternProperties', '$defs', 'definitions']);

/** A union's branches, with nested unions (a union of unions) spread into it. */
function flattenUnion(branches: unknown[]): unknown[] {
  return branches.flatMap((branch) => {
    const b = branch as Record<string, unknown>;
    const onlyUnion =
      Array.isArray(b.anyOf) && Object.keys(b).every((k) => k === 'anyOf' || k === 'description');
    return onlyUnion ? flattenUnion(b.anyOf as unknown[]) : [branch];
  });
}

interface ObjectSchema {
  type?: string;
  required?: string[];
  properties?: Record<string, { const?: unknown }>;
  allOf?: ObjectSchema[];
  anyOf?: ObjectSchema[];
  oneOf?: ObjectSchema[];
}

/** Each branch's literal value of `tag`, if every branch requires a distinct one. */
function literalsOf(branches: ObjectSchema[], tag: string): string[] | undefined {
  const values = branches.map((branch) => literalOf(branch, tag));
  if (values.some((v) => v === undefined) || new Set(values).size !== values.length) return undefined;
  return values as string[];
}

/** The literal an object schema (or a part of an intersection) requires `tag` to be. */
function literalOf(schema: ObjectSchema, tag: string): string | undefined {
  if (schema.allOf) return schema.allOf.map((part) => literalOf(part, tag)).find((v) => v !== undefined);
  const parts = schema.anyOf ?? schema.oneOf;
  if (parts) {
    const values = new Set(parts.map((part) => literalOf(part, tag)));
    const [only] = values;
    return values.size === 1 ? only : undefined; // a union whose branches all say the same
  }
  const value = schema.properties?.[tag]?.const;
  const required = schema.type === 'object' && schema.required?.includes(tag);
  return required && typeof value === 'string' ? value : undefined;
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

/** `schema`: what was compiled, where a discriminator's error finds the tags it knows. */
export function formatErrors(errors: ErrorObject[], schema?: unknown, root?: string): string[] {
  return simplifyErrors(errors).map((error) => formatError(error, schema, root));
}

/** One error as `field: reason`; `root` names the value itself. */
export function formatError(error: ErrorObject, schema?: unknown, root = '(root)'): string {
  return `${errorField(error) || root}: ${errorReason(error, schema)}`;
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
  if (error.keyword === 'discriminator') return join(base, String(params.tag));
  return base;
}

function errorReason(error: ErrorObject, schema?: unknown): string {
  const params = error.params as Record<string, unknown>;
  switch (error.keyword) {
    case 'discriminator': {
      if (params.error === 'tag') return params.tagValue === undefined ? 'is required' : 'must be a string';
      const union = schemaAt(schema, error.schemaPath.replace(/\/discriminator$/, '')) as {
        oneOf?: ObjectSchema[];
      };
      const allowed = (union?.oneOf ?? []).map((branch) => branch.properties?.[String(params.tag)]?.const);
      return allowed.length > 0
        ? `must be one of ${allowed.map((v) => JSON.stringify(v)).join(', ')}`
        : 'is not known';
    }
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

/** The node at a JSON pointer such as Ajv's `schemaPath` (`#/properties/frame`). */
function schemaAt(schema: unknown, pointer: string): unknown {
  return pointer
    .replace(/^#\/?/, '')
    .split('/')
    .filter(Boolean)
    .map((part) => decodeURIComponent(part).replace(/~1/g, '/').replace(/~0/g, '~'))
    .reduce<unknown>((node, part) => (node as Record<string, unknown> | undefined)?.[part], schema);
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

/**
 * Why `record` is refused for nesting, naming its first field nested deeper than `maxDepth` (a
 * field no schema names included: one nested thousands deep would overflow the stack wherever it
 * is serialized or walked); undefined when none is.
 */
export function nestingRefusal(record: object, maxDepth = MAX_BODY_DEPTH): string | undefined {
  const fields = record as Record<string, unknown>;
  const field = Object.keys(fields).find((key) => jsonDepth(fields[key], maxDepth + 1) > maxDepth);
  return field === undefined ? undefined : `${field}: must not be nested deeper than ${maxDepth} levels`;
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
