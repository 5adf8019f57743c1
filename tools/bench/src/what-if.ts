import { MemorySessionStore } from '../../../apps/session-ms/src/store/memory-store';

/**
 * Experiments for before/after figures WITHOUT editing the services: each patches a prototype in
 * the benchmark's own fleet process only (`--what-if NAME`), to show what a proposed fix would
 * gain. They are not the fix: the report says which file and function to change.
 */
export const WHAT_IFS: Record<string, { describe: string; apply(): void }> = {
  'sweep-acked': {
    describe:
      'apps/session-ms/src/store/memory-store.ts MemorySessionStore.sweepAcked: stop at the first unexpired entry ' +
      '(entries are in expiry order when complete() deletes before it sets), instead of scanning the whole acked map on every complete() once it holds 10,000',
    apply() {
      type Internals = { acked: Map<string, number>; now: () => number; pending: Map<string, unknown>; due: Map<string, number> };
      const proto = MemorySessionStore.prototype as unknown as Record<string, unknown>;
      proto.sweepAcked = function (this: Internals) {
        const now = this.now();
        for (const [key, expires] of this.acked) {
          if (expires > now) break;
          this.acked.delete(key);
        }
      };
      proto.complete = async function (this: Internals & { sweepAcked(): void }, user: string, mids: string[], rememberMs: number) {
        const expires = this.now() + rememberMs;
        this.sweepAcked();
        return mids.map((mid) => {
          const key = `${user}\n${mid}`;
          const found = this.pending.get(key);
          this.pending.delete(key);
          this.due.delete(key);
          this.acked.delete(key); // re-inserted at the end: the map stays in expiry order
          this.acked.set(key, expires);
          return found;
        });
      };
    },
  },
};

export function applyWhatIfs(names: string[]): string[] {
  return names.filter(Boolean).map((name) => {
    const w = WHAT_IFS[name];
    if (!w) throw new Error(`unknown --what-if ${name}; known: ${Object.keys(WHAT_IFS).join(', ')}`);
    w.apply();
    return `${name}: ${w.describe}`;
  });
}
