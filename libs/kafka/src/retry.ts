// Which failures are a dependency's (retried) and which a record's (parked): shared with the HTTP edge.
export { isTransient, TransientError } from '@parley/service-kit';

export function backoffMs(attempt: number, baseMs = 100, maxMs = 5000): number {
  const exp = Math.min(maxMs, baseMs * 2 ** attempt);
  return Math.round(exp / 2 + Math.random() * (exp / 2));
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
