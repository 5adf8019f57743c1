import { withDeadline } from './deadline';

/** Each dependency registers a check; `/readyz` is ready only when every check answers in time. */
export type Check = () => Promise<unknown> | unknown;

export interface CheckReport {
  ready: boolean;
  checks: Record<string, string>;
}

/** What a check that ran out of time knows of why (the dependency's last error), if anything. */
export type LateReason = () => string | undefined;

/**
 * How long `/readyz` waits for a check before it reports it late. Probes wait longer
 * (deploy/k8s: 3 s), so a slow dependency reads as a 503 naming it, not as a probe timeout.
 */
export const READINESS_CHECK_TIMEOUT_MS = 2000;

export class Readiness {
  private readonly checks = new Map<string, { check: Check; lateReason?: LateReason }>();
  private draining = false;
  private brokenBy: string | undefined;

  constructor(private readonly timeoutMs = READINESS_CHECK_TIMEOUT_MS) {}

  register(name: string, check: Check, lateReason?: LateReason): void {
    this.checks.set(name, { check, lateReason });
  }

  /** Once shutdown starts, report not-ready so load balancers stop sending traffic. */
  markDraining(): void {
    this.draining = true;
  }

  /**
   * Something the process cannot recover from by itself (a Kafka consumer stopped for good): it
   * reports not-ready and fails `/healthz` too, so the orchestrator restarts it. The first reason
   * stands.
   */
  markBroken(reason: string): void {
    this.brokenBy ??= reason;
  }

  /** Why the process must be restarted, if it must. */
  broken(): string | undefined {
    return this.brokenBy;
  }

  async report(): Promise<CheckReport> {
    const entries = await Promise.all(
      [...this.checks].map(
        async ([name, { check, lateReason }]) => [name, await this.run(check, lateReason)] as const,
      ),
    );
    const checks = Object.fromEntries(entries);
    if (this.draining) checks.shutdown = 'draining';
    if (this.brokenBy) checks.broken = this.brokenBy;
    const ready = !this.draining && !this.brokenBy && entries.every(([, result]) => result === 'ok');
    return { ready, checks };
  }

  private async run(check: Check, lateReason?: LateReason): Promise<string> {
    const late = () => {
      const why = lateReason?.();
      return new Error(`timed out after ${this.timeoutMs} ms${why ? `: ${why}` : ''}`);
    };
    try {
      await withDeadline(Promise.resolve().then(check), this.timeoutMs, late);
      return 'ok';
    } catch (err) {
      return (err as Error).message || String(err);
    }
  }
}
