import { blockKey, BlockedPairs, BlockPair, BlockReader } from '../../src/blocks';

/**
 * Blocks the test makes and lifts directly (stands in for group-ms's `user_blocks`), recording each
 * lookup's pairs. `failWith` makes lookups fail until cleared; `hang` makes them never answer.
 */
export class MemoryBlocks implements BlockReader {
  /** The pairs each lookup asked about, one entry per lookup. */
  lookups: BlockPair[][] = [];
  failWith: Error | undefined;
  hang = false;
  /** user -> the users they blocked */
  private readonly blocks = new Map<string, Set<string>>();

  block(user: string, blocked: string): void {
    this.blocks.set(user, new Set([...(this.blocks.get(user) ?? []), blocked]));
  }

  unblock(user: string, blocked: string): void {
    this.blocks.get(user)?.delete(blocked);
    if (this.blocks.get(user)?.size === 0) this.blocks.delete(user);
  }

  async blockedPairs(pairs: readonly BlockPair[]): Promise<BlockedPairs> {
    this.lookups.push([...pairs]);
    if (this.failWith) throw this.failWith;
    if (this.hang) return new Promise<never>(() => undefined);
    const found: BlockedPairs = { blocked: new Set(), blockingAnyone: new Set() };
    for (const { recipient, sender } of pairs) {
      if (this.blocks.has(recipient)) found.blockingAnyone.add(recipient);
      if (this.blocks.get(recipient)?.has(sender)) found.blocked.add(blockKey(recipient, sender));
    }
    return found;
  }
}
