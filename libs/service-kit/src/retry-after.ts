/**
 * How long a client is told to wait before sending again what was refused `unavailable` (a
 * dependency down, a gateway waiting on Kafka): at least `UNAVAILABLE_RETRY_AFTER_MS`, spread at
 * random over as long again, so that the devices refused in one burst do not all come back in the
 * same instant and refill the backlog that refused them. A client backs off further (doubling)
 * while the refusals go on.
 */
export function unavailableRetryAfterMs(random: () => number = Math.random): number {
  return Math.floor(UNAVAILABLE_RETRY_AFTER_MS * (1 + random()));
}

export const UNAVAILABLE_RETRY_AFTER_MS = 1000;
