import { Counter, Registry } from 'prom-client';
import {
  compile,
  ErrorBody,
  ErrorCode,
  INTERNAL_REFUSED_HEADER,
  INTERNAL_SECRET_HEADER,
  INTERNAL_USER_HEADER,
  isKnownErrorCode,
  ParleyError,
} from '@parley/contracts';
import { scrapedGauge } from '@parley/service-kit';
import { CallLimit, CallLimitSettings, CallRefusal } from './call-limit';

export const UPSTREAM_NAMES = ['persistence-ms', 'group-ms', 'push-ms', 'session-ms'] as const;
export type UpstreamName = (typeof UPSTREAM_NAMES)[number];

/** How long a call (its answer's body included) may take before it is a 503 naming the service. */
export const UPSTREAM_TIMEOUT_MS = 10_000;
/**
 * How long a call past UPSTREAM_MAX_IN_FLIGHT waits for a slot before it is refused busy: a slot
 * frees in milliseconds while the service is well; waiting longer only piles up requests behind a
 * service that has stalled (whose calls each hold their slot up to UPSTREAM_TIMEOUT_MS).
 */
export const UPSTREAM_MAX_WAIT_MS = 1000;

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

/** The calls let through to each service at once, how long each may take, and where the gauges and refusals are shown. */
export interface UpstreamLimits {
  metrics: Registry;
  /** Default UPSTREAM_TIMEOUT_MS. */
  timeoutMs?: number;
  /** UPSTREAM_MAX_IN_FLIGHT. */
  maxInFlight: number;
  /** Calls that may wait for a slot, per service; default as many as `maxInFlight`. */
  maxWaiting?: number;
  maxWaitMs?: number;
}

/**
 * HTTP with keep-alive, at most `limits.maxInFlight` calls under way to each service (and so as
 * many sockets to it); past that a call waits briefly, then is a 503 naming the service as busy.
 * An upstream's protocol error passes through as it is; an unreachable one is a 503 that names it
 * (nothing was done).
 */
export function createHttpUpstreams(
  urls: Record<UpstreamName, string>,
  internalSecret: string,
  limits: UpstreamLimits,
): Upstreams {
  const timeoutMs = limits.timeoutMs ?? UPSTREAM_TIMEOUT_MS;
  const settings: CallLimitSettings = {
    maxInFlight: limits.maxInFlight,
    maxWaiting: limits.maxWaiting ?? limits.maxInFlight,
    maxWaitMs: limits.maxWaitMs ?? UPSTREAM_MAX_WAIT_MS,
  };
  const callLimits = Object.fromEntries(
    UPSTREAM_NAMES.map((name) => [name, new CallLimit(settings)]),
  ) as Record<UpstreamName, CallLimit>;
  const refusals = upstreamMetrics(limits.metrics, callLimits);
  return {
    async call(service, { method, path, user, body, success }) {
      // Serialized before the call: a failure here is the request's, not an unreachable service.
      const payload = body === undefined ? undefined : JSON.stringify(body);
      const request: RequestInit = {
        method,
        headers: {
          [INTERNAL_SECRET_HEADER]: internalSecret,
          [INTERNAL_USER_HEADER]: user,
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        },
        body: payload,
        // A redirect would carry the internal secret to wherever it points.
        redirect: 'error',
      };
      return callLimits[service].run(
        () => callOnce(service, `${urls[service]}${path}`, request, { timeoutMs, success }),
        (why) => {
          refusals.inc({ upstream: service, reason: why });
          return new ParleyError('unavailable', busyMessage(service, why, settings));
        },
      );
    },
  };
}

function busyMessage(service: UpstreamName, why: CallRefusal, settings: CallLimitSettings): string {
  return why === 'queue_full'
    ? `${service} is busy: ${settings.maxInFlight} calls to it are under way and ${settings.maxWaiting} waiting; try again`
    : `${service} is busy: no call to it finished within ${settings.maxWaitMs} ms to make room; try again`;
}

/** The gauges read the limits when scraped; the refusals' series exist from the start, at 0. */
function upstreamMetrics(metrics: Registry, callLimits: Record<UpstreamName, CallLimit>) {
  const perUpstream = (read: (limit: CallLimit) => number) => () =>
    UPSTREAM_NAMES.map((upstream) => [{ upstream }, read(callLimits[upstream])] as const);
  scrapedGauge(
    metrics,
    {
      name: 'parley_rest_upstream_in_flight',
      help: 'Calls under way from this gateway to each service behind it (UPSTREAM_MAX_IN_FLIGHT caps it)',
      labelNames: ['upstream'],
    },
    perUpstream((limit) => limit.inFlight),
  );
  scrapedGauge(
    metrics,
    {
      name: 'parley_rest_upstream_waiting',
      help: 'Calls to each service waiting for one under way to finish (as many as UPSTREAM_MAX_IN_FLIGHT at most, each up to 1 s)',
      labelNames: ['upstream'],
    },
    perUpstream((limit) => limit.queued),
  );
  const refused = new Counter({
    name: 'parley_rest_upstream_refused_total',
    help: 'Calls to a service refused busy (503 unavailable) without being made: the waiting calls were as many as allowed (queue_full), or one waited 1 s for a slot (wait_timeout)',
    labelNames: ['upstream', 'reason'],
    registers: [metrics],
  });
  for (const upstream of UPSTREAM_NAMES)
    for (const reason of ['queue_full', 'wait_timeout'] satisfies CallRefusal[])
      refused.inc({ upstream, reason }, 0);
  return refused;
}

/** One call, its time counted from when it is made: its answer as the protocol has it, or the error to answer with. */
async function callOnce(
  service: UpstreamName,
  url: string,
  request: RequestInit,
  { timeoutMs, success }: { timeoutMs: number; success?: number },
): Promise<UpstreamResponse> {
  let response: Response;
  try {
    response = await fetch(url, { ...request, signal: AbortSignal.timeout(timeoutMs) });
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
  if (response.status >= 400) {
    // A 4xx without the protocol's error body too: passed on, it failed the error schema (500) or,
    // empty, reached the app with no error body.
    if (!isErrorBody(parsed)) throw new ParleyError('unavailable', `${service} answered ${response.status}`);
    // The upstream's wait passes on with its refusal (a 429's: when its limit takes the next one).
    const retryAfterSeconds = Number(response.headers.get('retry-after') ?? Number.NaN);
    throw new ParleyError(
      knownCode(parsed.error.code, response.status),
      parsed.error.message,
      retryAfterSeconds > 0 ? { retryAfterSeconds } : undefined,
    );
  }
  if (success !== undefined) assertSuccess(service, response.status, parsed, success);
  return { status: response.status, body: parsed };
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

/** The protocol's error body, its code one of this release's or of the same form (a later release's). */
function isErrorBody(value: unknown): value is ErrorBody {
  return validateErrorBody(value).ok;
}

/** This release's code for each status a service answers with. */
const CODE_OF_STATUS: Record<number, ErrorCode> = {
  400: 'invalid_request',
  401: 'unauthorized',
  403: 'forbidden',
  404: 'not_found',
  409: 'conflict',
  413: 'too_large',
  429: 'rate_limited',
  503: 'unavailable',
};

/**
 * A code a newer service added (met during a rolling upgrade) is passed on as the code of this
 * release that its status has, with the service's message: `conflict` for a 409, say.
 */
function knownCode(code: string, status: number): ErrorCode {
  if (isKnownErrorCode(code)) return code;
  return CODE_OF_STATUS[status] ?? (status < 500 ? 'invalid_request' : 'internal');
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
