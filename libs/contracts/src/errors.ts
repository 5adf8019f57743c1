/**
 * The one table of stable error codes. Codes are part of the public protocol: add, never rename.
 * `status` is the HTTP status a REST edge answers with.
 */
export const ERROR_CODES = {
  invalid_frame: { status: 400, description: 'A frame failed validation; the message names the field' },
  invalid_request: { status: 400, description: 'A REST body, path or query failed validation' },
  unauthorized: { status: 401, description: 'Missing, malformed, expired or wrongly signed token' },
  forbidden: { status: 403, description: 'Authenticated, but not allowed to do this' },
  not_member: { status: 403, description: 'The sender is not a member of the group' },
  not_found: { status: 404, description: 'No such resource, or not visible to this user' },
  conflict: { status: 409, description: 'The resource already exists with other content' },
  group_full: { status: 409, description: 'The group reached its member limit' },
  too_many_groups: {
    status: 409,
    description: 'A user the change would add to a group is in as many groups as one user may be',
  },
  too_many_blocks: { status: 409, description: 'The user blocked as many users as one user may' },
  too_many_mutes: { status: 409, description: 'The user muted as many conversations as one user may' },
  too_large: { status: 413, description: 'A frame or body is larger than allowed' },
  rate_limited: { status: 429, description: 'Too many requests; retry after the indicated time' },
  internal: { status: 500, description: 'An unexpected server error' },
  unavailable: { status: 503, description: 'A dependency is down; nothing was accepted' },
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;
export const ERROR_CODE_LIST = Object.keys(ERROR_CODES) as ErrorCode[];
/** The form of every code, those a later release adds included. */
export const ERROR_CODE_PATTERN = '^[a-z][a-z0-9_]{0,63}$';

/** One of this release's codes (its own: not `constructor`, which `in` finds). */
export function isKnownErrorCode(code: string): code is ErrorCode {
  return Object.hasOwn(ERROR_CODES, code);
}

/** A code this release does not know (a later one's, read from a frame) answers as `internal`. */
export function statusOf(code: ErrorCode): number {
  return isKnownErrorCode(code) ? ERROR_CODES[code].status : ERROR_CODES.internal.status;
}

/** An error that carries a protocol code; edges turn it into an `error` frame or an HTTP error body. */
export class ParleyError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details?: { retryAfterSeconds?: number },
  ) {
    super(message);
    this.name = 'ParleyError';
  }

  get status(): number {
    return statusOf(this.code);
  }
}
