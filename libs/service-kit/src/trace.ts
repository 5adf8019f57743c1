import type { Logger } from 'pino';

/**
 * Message tracing for support: every hop of a message to or from one of a few users (TRACE_USERS)
 * is logged, whatever LOG_LEVEL says, as `{"trace":true,"hop":...}` with its mids, so that
 * "alice's message never reached bob" can be followed through the fleet by its mid. Off (no user)
 * it costs a property read per event.
 */
export interface MessageTrace {
  /** Whether any user is traced: the hops skip looking at their events when not. */
  readonly on: boolean;
  /** Those of `users` who are traced: a message between them is traced when any is. */
  tracedAmong(users: Iterable<string | undefined>): string[];
  /** Logs one hop of a traced message: what happened (`hop`) and where. */
  hop(hop: string, fields: Record<string, unknown>): void;
}

/** Traces nothing. */
export const NO_TRACE: MessageTrace = { on: false, tracedAmong: () => [], hop: () => undefined };

/** The most users one setting may trace: a support tool, not an audit log. */
export const MAX_TRACED_USERS = 100;

export function createMessageTrace(users: readonly string[], logger: Logger): MessageTrace {
  if (users.length === 0) return NO_TRACE;
  const traced = new Set(users);
  // Its own level: a trace asked for is written even where LOG_LEVEL is warn.
  const log = logger.child({ trace: true }, { level: 'info' });
  return {
    on: true,
    tracedAmong(candidates) {
      const found = new Set<string>();
      for (const user of candidates) if (user !== undefined && traced.has(user)) found.add(user);
      return [...found];
    },
    hop(hop, fields) {
      log.info({ hop, ...fields }, `trace: ${hop}`);
    },
  };
}

/** TRACE_USERS as a list: comma-separated user ids, blanks ignored. */
export function tracedUsers(setting: string | undefined): string[] {
  return (setting ?? '')
    .split(',')
    .map((user) => user.trim())
    .filter((user) => user.length > 0);
}
