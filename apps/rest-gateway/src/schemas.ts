import { TSchema } from '@sinclair/typebox';
import { ERROR_CODE_LIST, ERROR_CODES, ErrorBody, withoutIds } from '@parley/contracts';

// The schema pieces the public routes share.

/** A contract schema as a route's schema: a self-contained copy, without `$id`s (see withoutIds). */
export const s = <T extends TSchema>(schema: T): T => withoutIds(schema);

/** A refusal to wait out (`rate_limited`, `unavailable`) says how long: sendError's header. */
const retryAfter = {
  'Retry-After': {
    type: 'integer',
    minimum: 1,
    description: 'Seconds to wait before sending the same request again',
  },
};

/**
 * The error body a route answers with `status`, described by the codes it carries there (the
 * OpenAPI document's response description; the codes are those of docs/protocol.md's table).
 */
export const errorAnswer = (status: number) => ({
  ...s(ErrorBody),
  description: ERROR_CODE_LIST.filter((code) => ERROR_CODES[code].status === status).join(', '),
  ...(status === 429 || status === 503 ? { headers: retryAfter } : {}),
});
export const errors = {
  400: errorAnswer(400),
  401: errorAnswer(401),
  403: errorAnswer(403),
  404: errorAnswer(404),
  429: errorAnswer(429),
  500: errorAnswer(500),
  503: errorAnswer(503),
};
/** A route that takes a body also answers 413 (over the body limit). */
export const bodyErrors = { ...errors, 413: errorAnswer(413) };
export const secured = [{ bearer: [] as string[] }];
