/** A failure worth waiting out (a dependency is down), as opposed to a poison record. */
export class TransientError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TransientError';
  }
}

const TRANSIENT_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EHOSTUNREACH', // the host is gone from the network: a failed-over address, a node being replaced
  'ENETUNREACH',
  'EHOSTDOWN',
  'ENETDOWN',
  'ECONNABORTED',
  'EPIPE',
  'ENOTFOUND',
  'EAI_AGAIN',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
  '40001', // Postgres serialization failure
  '40P01', // Postgres deadlock
  '57014', // Postgres cancelled the statement: statement_timeout (a database too slow or locked), or an operator
  '55P03', // Postgres lock_timeout
  '25006', // Postgres read-only transaction: a failover demoted the primary this connection is on
]);

/**
 * SQLSTATE classes of a database that is unreachable, overloaded or shutting down; and those of a
 * login or a grant the operator has yet to fix (28: a rotated password; 42501: a role without the
 * grant), which no record causes.
 */
const TRANSIENT_SQLSTATE = /^(08|53|57P|28)[0-9A-Z]{2,3}$|^42501$/;

/**
 * Errors that say a dependency is down, by name (ioredis gives up on a command while Redis is away),
 * or that it refuses this service's credentials.
 */
const TRANSIENT_NAMES = new Set(['MaxRetriesPerRequestError', 'KafkaJSSASLAuthenticationError']);

/**
 * Kafka's refusals of this service's principal (an ACL missing or not yet applied), which kafkajs
 * marks not retriable: every record would meet them, and each would be parked on the DLQ.
 */
const TRANSIENT_KAFKA_TYPES = new Set([
  'TOPIC_AUTHORIZATION_FAILED',
  'GROUP_AUTHORIZATION_FAILED',
  'CLUSTER_AUTHORIZATION_FAILED',
  'SASL_AUTHENTICATION_FAILED',
]);

// Redis: loading, a replica or failover, out of memory (maxmemory with noeviction), a failed
// snapshot (MISCONF), a busy script, too few replicas: all pass once Redis recovers; an ACL or a
// password changed under the service (NOPERM, NOAUTH, WRONGPASS) once the operator fixes it.
// ioredis aborts the commands of a MULTI under way when its connection closes (a reconnect on
// READONLY too).
const TRANSIENT_MESSAGE =
  /Connection terminated|connect ECONNREFUSED|Connection is closed|Command aborted due to connection close|timeout exceeded when trying to connect|Query read timeout|not queryable|^(LOADING|READONLY|MASTERDOWN|TRYAGAIN|CLUSTERDOWN|OOM|MISCONF|BUSY|NOREPLICAS|NOPERM|NOAUTH|WRONGPASS) /i;

/**
 * Failures of a dependency (Kafka, Redis, Postgres, the network) are transient: retrying them
 * forever keeps order and loses nothing. Anything else is the record's fault (a poison record).
 * kafkajs marks its own errors `retriable`; a "retries exceeded" error carries the last one as its cause.
 */
export function isTransient(err: unknown): boolean {
  for (let e: unknown = err; e && typeof e === 'object'; e = (e as { cause?: unknown }).cause) {
    if (e instanceof TransientError) return true;
    const { code, message, name, retriable, type } = e as {
      code?: unknown;
      message?: unknown;
      name?: unknown;
      retriable?: unknown;
      type?: unknown;
    };
    if (retriable === true) return true;
    if (typeof type === 'string' && TRANSIENT_KAFKA_TYPES.has(type)) return true;
    if (typeof name === 'string' && TRANSIENT_NAMES.has(name)) return true;
    if (typeof code === 'string' && (TRANSIENT_CODES.has(code) || TRANSIENT_SQLSTATE.test(code))) return true;
    if (typeof message === 'string' && TRANSIENT_MESSAGE.test(message)) return true;
    if (Array.isArray((e as { errors?: unknown }).errors))
      return (e as AggregateError).errors.some(isTransient);
    // A Redis MULTI whose commands Redis refused as it queued them (OOM, READONLY) fails as a whole
    // with EXECABORT; ioredis gives the refusals as `previousErrors`.
    if (Array.isArray((e as { previousErrors?: unknown }).previousErrors))
      return (e as { previousErrors: unknown[] }).previousErrors.some(isTransient);
  }
  return false;
}
