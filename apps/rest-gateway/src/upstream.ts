import {
  compile,
  ErrorBody,
  ErrorCode,
  INTERNAL_REFUSED_HEADER,
  INTERNAL_SECRET_HEADER,
  INTERNAL_USER_HEADER,
  ParleyError,
} from '@parley/contracts';

export type UpstreamName = 'persistence-ms' | 'group-ms' | 'push-ms' | 'session-ms';

export interface UpstreamResponse {
  status: number;
  body: unknown;
}

/** The services behind the REST edge, reached on their internal APIs on behalf of a user. */
export interface Upstreams {
  call(
    service: UpstreamName,
    request: {
      method: string;
      path: string;
      user: string;
      body?: unknown;
      /** The one success the caller documents: another status, or that status without a JSON object (nothing for a 204), is a 503 naming the service. */
      success?: number;
    },
  ): Promise<UpstreamResponse>;
}

/**
 * HTTP with keep-alive. An upstream's protocol error passes through as it is; an unreachable one is
 * a 503 that names it (nothing was done).
 */
export function createHttpUpstreams(
  urls: Record<UpstreamName, string>,
  internalSecret: string,
  timeoutMs = 10_000,
): Upstreams {
  return {
    async call(service, { method, path, user, body, success }) {
      let response: Response;
      // Serialized before the call: a failure here is the request's, not an unreachable service.
      const payload = body === undefined ? undefined : JSON.stringify(body);
      try {
        response = await fetch(`${urls[service]}${path}`, {
          method,
          headers: {
            [INTERNAL_SECRET_HEADER]: internalSecret,
            [INTERNAL_USER_HEADER]: user,
            ...(body === undefined ? {} : { 'content-type': 'application/json' }),
          },
          body: payload,
          signal: AbortSignal.timeout(timeoutMs),
          // A redirect would carry the internal secret to wherever it points.
          redirect: 'error',
        });
      } catch (err) {
        throw new ParleyError('unavailable', `${service} is unreachable: ${(err as Error).message}`);
      }
      let text: string;
      try {
        text = await response.text();
      } catch (err) {
        // Cut off mid-body (a reset, or the timeout while the rest never came): as unreachable, not a 500.
        throw new ParleyError(
          'unavailable',
          `${service} answered ${response.status} but its body could not be read: ${(err as Error).message}`,
        );
      }
      // The fleet's misconfiguration, not the user's `forbidden`: logged, answered 500.
      if (response.headers.has(INTERNAL_REFUSED_HEADER))
        throw new Error(
          `${service} refused rest-gateway's internal secret: INTERNAL_SECRET differs between them`,
        );
      const parsed = parseBody(text);
      if (parsed === NOT_JSON)
        throw new ParleyError(
          'unavailable',
          `${service} answered ${response.status} with a body that is not JSON`,
        );
      // A 4xx without the protocol's error body too: passed on, it failed the error schema (500) or,
      // empty, reached the app with no error body.
      if (response.status >= 400 && !isErrorBody(parsed)) {
        throw new ParleyError('unavailable', `${service} answered ${response.status}`);
      }
      if (response.status >= 400 && isErrorBody(parsed)) {
        throw new ParleyError(parsed.error.code, parsed.error.message);
      }
      if (success !== undefined) assertSuccess(service, response.status, parsed, success);
      return { status: response.status, body: parsed };
    },
  };
}

/**
 * A success passes on only as the route documents it: its status, with a JSON object (nothing for
 * a 204). Another (a 202, a 304, a 200 of `null` or of nothing) is no answer the protocol has: a 503
 * naming the service, as a 4xx without the error body.
 */
function assertSuccess(service: UpstreamName, status: number, body: unknown, expected: number): void {
  const isObject = typeof body === 'object' && body !== null && !Array.isArray(body);
  if (status === expected && (expected === 204 ? body === undefined : isObject)) return;
  const what = status !== expected ? '' : expected === 204 ? ' with a body' : ' without a JSON object';
  throw new ParleyError('unavailable', `${service} answered ${status}${what}`);
}

const validateErrorBody = compile(ErrorBody);

/** The protocol's error body: its code one of ERROR_CODES' own (not `toString`, which `in` finds). */
function isErrorBody(value: unknown): value is ErrorBody {
  return validateErrorBody(value).ok;
}

export type { ErrorCode };

const NOT_JSON = Symbol('not JSON');

/** An upstream's body: JSON, nothing, or (a proxy's HTML error page, say) NOT_JSON. */
function parseBody(text: string): unknown {
  if (!text) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return NOT_JSON;
  }
}
