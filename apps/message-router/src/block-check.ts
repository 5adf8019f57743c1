import type { Logger } from 'pino';
import { Counter, Gauge, Registry } from 'prom-client';
import { withDeadline } from '@parley/service-kit';
import { BlockPair, BlockReader, cacheBlocks } from './blocks';

export interface BlockCheckOptions {
  blocks: BlockReader;
  metrics: Registry;
  logger: Logger;
  clock: () => number;
  /** How long a batch waits for its check before it is routed without it; 1 s by default. */
  timeoutMs?: number;
  /** After a failed check, how long batches are routed without asking again; 5 s by default. */
  retryMs?: number;
  /** How often the users whose blocks changed are read (a block applies within it); 1 s by default. */
  pollMs?: number;
}

class BlockCheckTimeout extends Error {
  constructor(ms: number) {
    super(`the block check took longer than ${ms} ms`);
    this.name = 'BlockCheckTimeout';
  }
}

const NOT_CHECKED: ReadonlySet<string> = new Set();
/**
 * What a router keeps of recipients' blocks: 200,000 ids (a recipient, and each user they blocked),
 * some 15 MB, whoever blocks how many (a user may block 1,000).
 */
const KEPT_ENTRIES = 200_000;

/**
 * The blocks among a batch's pairs, best-effort: 1:1 messaging must not stop because Postgres is
 * down or slow, so a lookup that fails or takes longer than `timeoutMs` lets the batch
 * be routed unchecked (a blocked sender's frames reach the blocker meanwhile), and batches are
 * routed without asking for `retryMs` after it, instead of each waiting out a database
 * that does not answer. Counted (`parley_router_block_checks_failed_total`) and logged once per
 * failed lookup, not per frame.
 */
export function createBlockCheck(
  options: BlockCheckOptions,
): (pairs: BlockPair[]) => Promise<ReadonlySet<string>> {
  const { clock, logger } = options;
  const lookup = cacheBlocks(countReads(options.blocks, options.metrics), {
    pollMs: options.pollMs ?? 1000,
    maxEntries: KEPT_ENTRIES,
    clock,
  });
  new Gauge({
    name: 'parley_router_block_cache_ids',
    help: 'Ids the block check keeps: a recipient, and each user they blocked (at most 200,000)',
    registers: [options.metrics],
    collect() {
      this.set(lookup.keptIds());
    },
  });
  const timeoutMs = options.timeoutMs ?? 1000;
  const retryMs = options.retryMs ?? 5000;
  const failed = new Counter({
    name: 'parley_router_block_checks_failed_total',
    help: 'Batches routed without their block check, by reason: the lookup failed (error), took too long (timeout), or was not tried, a recent one having failed (skipped)',
    labelNames: ['reason'],
    registers: [options.metrics],
  });
  let uncheckedUntil = 0;
  let failing = false;
  return async (pairs) => {
    if (pairs.length === 0) return NOT_CHECKED;
    if (clock() < uncheckedUntil) {
      failed.inc({ reason: 'skipped' });
      return NOT_CHECKED;
    }
    try {
      const blocked = await withDeadline(lookup(pairs), timeoutMs, () => new BlockCheckTimeout(timeoutMs));
      if (failing) logger.info('block checks succeed again');
      failing = false;
      return blocked;
    } catch (err) {
      failing = true;
      uncheckedUntil = clock() + retryMs;
      failed.inc({ reason: err instanceof BlockCheckTimeout ? 'timeout' : 'error' });
      logger.warn(
        { err, frames: pairs.length, uncheckedForMs: retryMs },
        "block check failed: routing 1:1 frames without it (a blocked sender's frames reach the blocker) until one succeeds",
      );
      return NOT_CHECKED;
    }
  };
}

/** The reader, its reads of Postgres counted: the blocks of recipients not kept, and the changes. */
function countReads(reader: BlockReader, metrics: Registry): BlockReader {
  const reads = new Counter({
    name: 'parley_router_block_reads_total',
    help: "The block check's reads of Postgres: the blocks of recipients it did not keep (blocks), and the users whose blocks changed (changes)",
    labelNames: ['read'],
    registers: [metrics],
  });
  return {
    blocksOf: (users) => (reads.inc({ read: 'blocks' }), reader.blocksOf(users)),
    changesSince: (since, limit) => (reads.inc({ read: 'changes' }), reader.changesSince(since, limit)),
  };
}
