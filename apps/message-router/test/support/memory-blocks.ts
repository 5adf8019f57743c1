import { blockKey, BlockPair, BlockReader } from '../../src/blocks';

/**
 * Blocks the test makes and lifts directly (stands in for group-ms's `user_blocks`), recording each
 * lookup's pairs. `failWith` makes lookups fail until cleared; `hang` makes them never answer.
 */
export class MemoryBlocks implements BlockReader {
  /** The pairs each lookup asked about, one entry per lookup. */
  lookups: BlockPair[][] = [];
  failWith: Error | undefined;
  hang = false;
  private readonly blocked = new Set<string>();

  block(user: string, blocked: string): void {
    this.blocked.add(blockKey(user, blocked));
  }

  unblock(user: string, blocked: string): void {
    this.blocked.delete(blockKey(user, blocked));
  }

  async blockedPairs(pairs: readonly BlockPair[]): Promise<Set<string>> {
    this.lookups.push([...pairs]);
    if (this.failWith) throw this.failWith;
    if (this.hang) return new Promise<never>(() => undefined);
    const keys = pairs.map((p) => blockKey(p.recipient, p.sender));
    return new Set(keys.filter((key) => this.blocked.has(key)));
  }
}
