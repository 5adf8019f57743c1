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
      type Internals = {
        acked: Map<string, number>;
        now: () => number;
        pending: Map<string, unknown>;
        due: Map<string, number>;
      };
      const proto = MemorySessionStore.prototype as unknown as Record<string, unknown>;
      proto.sweepAcked = function (this: Internals) {
        const now = this.now();
        for (const [key, expires] of this.acked) {
          if (expires > now) break;
          this.acked.delete(key);
        }
      };
      proto.complete = async function (
        this: Internals & { sweepAcked(): void },
        user: string,
        mids: string[],
        rememberMs: number,
      ) {
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

/** Models chunking in the gateway client by splitting the process's own POST …/send calls. */
const chunkSend = {
  describe:
    'apps/session-ms/src/gateway-client.ts createHttpGatewayClient().send: split `deliveries` into requests of at most ~512 KiB of JSON ' +
    "(the gateway's internal server keeps fastify's 1 MiB bodyLimit, so one POST /send of 1,000 group-create frames (~16 KB each) answers 413 and every member's copy fails, retries and goes offline)",
  apply() {
    const original = globalThis.fetch;
    const LIMIT = 512 * 1024;
    globalThis.fetch = (async (input: string | URL | Request, init?: RequestInit) => {
      const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
      if (!url.endsWith('/send') || typeof init?.body !== 'string' || init.body.length <= LIMIT)
        return original(input, init);
      const { deliveries } = JSON.parse(init.body) as { deliveries: unknown[] };
      const chunks: unknown[][] = [];
      let chunk: unknown[] = [];
      let size = 0;
      for (const d of deliveries) {
        const n = JSON.stringify(d).length;
        if (chunk.length > 0 && size + n > LIMIT) {
          chunks.push(chunk);
          chunk = [];
          size = 0;
        }
        chunk.push(d);
        size += n;
      }
      if (chunk.length > 0) chunks.push(chunk);
      const results: unknown[] = [];
      for (const part of chunks) {
        const response = await original(input, { ...init, body: JSON.stringify({ deliveries: part }) });
        if (!response.ok) return response;
        results.push(...((await response.json()) as { results: unknown[] }).results);
      }
      return new Response(JSON.stringify({ results }), {
        status: 200,
        headers: { 'content-type': 'application/json' },
      });
    }) as typeof fetch;
  },
};
WHAT_IFS['chunk-send'] = chunkSend;

export function applyWhatIfs(names: string[]): string[] {
  return names.filter(Boolean).map((name) => {
    const w = WHAT_IFS[name];
    if (!w) throw new Error(`unknown --what-if ${name}; known: ${Object.keys(WHAT_IFS).join(', ')}`);
    w.apply();
    return `${name}: ${w.describe}`;
  });
}
