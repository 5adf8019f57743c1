import { BlockChanges, BlockReader } from '../../src/blocks';

/**
 * Blocks the test makes and lifts directly (stands in for group-ms's `user_blocks` and
 * `user_block_changes`: each user's latest change, versioned as group-ms does), recording the users each
 * `blocksOf` asked about and counting the reads of changes. `failWith` makes every read fail until
 * cleared; `hang` makes them never answer.
 */
export class MemoryBlocks implements BlockReader {
  /** The users each `blocksOf` asked about, one entry per call. */
  lookups: string[][] = [];
  changeReads = 0;
  failWith: Error | undefined;
  hang = false;
  /** user -> the users they blocked */
  private readonly blocks = new Map<string, Set<string>>();
  /** user -> the version of their latest change */
  private readonly changed = new Map<string, number>();
  private version = 0;

  block(user: string, blocked: string): void {
    if (this.blocks.get(user)?.has(blocked)) return;
    this.blocks.set(user, new Set([...(this.blocks.get(user) ?? []), blocked]));
    this.changed.set(user, ++this.version);
  }

  unblock(user: string, blocked: string): void {
    if (!this.blocks.get(user)?.delete(blocked)) return;
    if (this.blocks.get(user)?.size === 0) this.blocks.delete(user);
    this.changed.set(user, ++this.version);
  }

  async blocksOf(users: readonly string[]): Promise<Map<string, ReadonlySet<string>>> {
    this.lookups.push([...users]);
    await this.failOrHang();
    return new Map(users.map((user) => [user, new Set(this.blocks.get(user))]));
  }

  async changesSince(since: string | undefined, limit: number): Promise<BlockChanges> {
    this.changeReads++;
    await this.failOrHang();
    if (since === undefined) return { users: [], position: String(this.version) };
    const after = [...this.changed]
      .filter(([, version]) => version > Number(since))
      .sort(([, a], [, b]) => a - b)
      .slice(0, limit);
    return { users: after.map(([user]) => user), position: String(after.at(-1)?.[1] ?? since) };
  }

  private async failOrHang(): Promise<void> {
    if (this.failWith) throw this.failWith;
    if (this.hang) await new Promise<never>(() => undefined);
  }
}
