import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';

export interface CommittedOffset {
  offset: number;
  metadata: string | null;
}

type Commit = [topic: string, partition: number, offset: number, metadata: string | null];

/**
 * A line of `offsets.log`. Every group line carries `c` (possibly empty), so an older broker reading
 * a newer file skips what it does not know instead of truncating there as at a torn write. `t`
 * (absent in files written before offset retention): when `c` was committed; `e`: when the group
 * became empty (null: it has members again); `gone`: the group expired and is forgotten.
 */
type GroupLine = { g: string; c: Commit[]; t?: number; e?: number | null; gone?: true };
type Line = GroupLine | { dt: string };

interface StoredGroup {
  offsets: Map<string, CommittedOffset>;
  /** The newest commit's time; 0 where the file predates offset retention. */
  committedAt: number;
  /** Since when the group has had no members; null while it has (or for a standalone committer). */
  emptySince: number | null;
}

/**
 * Committed consumer-group offsets: a map in memory, an append-only JSON-lines file on disk
 * (`offsets.log`), compacted into a fresh file by rename when it has grown well past the live set.
 * A torn last line is dropped on recovery, and a line a failed write left torn inside the file is skipped. A group that has had no members for the offsets retention
 * (Kafka's `offsets.retention.minutes`, KIP-211: counted from when it became empty, or from its last
 * commit if later) loses its offsets and is forgotten: see `expire`.
 */
export class OffsetStore {
  private readonly groups = new Map<string, StoredGroup>();
  private fd: number | null = null;
  private lines = 0;
  private dirty = false;
  /** The last write may have left part of a line without its newline. */
  private torn = false;

  constructor(
    private readonly dir: string | null,
    private readonly logger: Logger,
  ) {
    if (!dir) return;
    const file = path.join(dir, 'offsets.log');
    if (fs.existsSync(file)) this.recover(file);
    this.fd = fs.openSync(file, 'a');
    // No group has members yet: those that had some when the broker stopped (or that predate
    // offset retention) are empty from now on, as Kafka's groups are once their loaded members
    // time out. Written, so that a later restart does not move their clock again.
    const now = Date.now();
    for (const [g, group] of [...this.groups])
      if (group.emptySince === null && group.offsets.size > 0) this.write({ g, c: [], e: now });
  }

  private recover(file: string): void {
    const text = fs.readFileSync(file, 'utf8');
    let at = 0;
    let skipped = 0;
    for (let nl = text.indexOf('\n'); nl >= 0; at = nl + 1, nl = text.indexOf('\n', at)) {
      try {
        this.apply(JSON.parse(text.slice(at, nl)) as Line);
        this.lines++;
      } catch {
        skipped++; // the fragment of a write that failed partway, ended by the next write
      }
    }
    if (skipped > 0) this.logger.warn({ file, skipped }, 'skipped unreadable lines in the offsets log');
    const goodBytes = Buffer.byteLength(text.slice(0, at));
    if (goodBytes < Buffer.byteLength(text)) {
      this.logger.warn(
        { file, dropped: Buffer.byteLength(text) - goodBytes },
        'truncated a torn write at the end of the offsets log',
      );
      fs.truncateSync(file, goodBytes);
    }
  }

  private apply(line: Line): void {
    if ('dt' in line) {
      for (const { offsets } of this.groups.values())
        for (const key of [...offsets.keys()]) if (key.startsWith(`${line.dt}\0`)) offsets.delete(key);
      return;
    }
    if (line.gone) {
      this.groups.delete(line.g);
      return;
    }
    let group = this.groups.get(line.g);
    if (!group) this.groups.set(line.g, (group = { offsets: new Map(), committedAt: 0, emptySince: null }));
    for (const [topic, partition, offset, metadata] of line.c)
      group.offsets.set(`${topic}\0${partition}`, { offset, metadata });
    if (line.c.length && line.t !== undefined) group.committedAt = Math.max(group.committedAt, line.t);
    // A commit without `t` was written by a broker from before offset retention (a file from before
    // it, or appended to after a rollback): when, and whether the group was empty since, is unknown,
    // so its clock starts again at this load (the constructor writes it), not at an older `e`.
    else if (line.c.length) group.emptySince = null;
    if (line.e !== undefined) group.emptySince = line.e;
  }

  private write(line: Line): void {
    this.apply(line);
    if (this.fd === null) return;
    // After a write that failed partway (a full disk), a newline first ends its fragment: a line of
    // its own, skipped on recovery, rather than the start of this one, which recovery could not read.
    const text = `${this.torn ? '\n' : ''}${JSON.stringify(line)}\n`;
    this.torn = true;
    this.torn = fs.writeSync(this.fd, text) < Buffer.byteLength(text);
    this.dirty = true;
    if (++this.lines > 10_000 && this.lines > 4 * this.liveCount()) this.compact();
  }

  commit(group: string, commits: Commit[], at = Date.now()): void {
    if (commits.length) this.write({ g: group, c: commits, t: at });
  }

  get(group: string, topic: string, partition: number): CommittedOffset | undefined {
    return this.groups.get(group)?.offsets.get(`${topic}\0${partition}`);
  }

  /** Every group with committed offsets. */
  groupIds(): string[] {
    return [...this.groups.keys()];
  }

  /** Every committed (topic, partition) of a group. */
  list(group: string): { topic: string; partition: number; committed: CommittedOffset }[] {
    return [...(this.groups.get(group)?.offsets ?? [])].map(([key, committed]) => {
      const [topic, partition] = key.split('\0');
      return { topic, partition: Number(partition), committed };
    });
  }

  /**
   * Brings back every committed offset past its partition's end (`endOf`; undefined: no such
   * partition, left alone) to that end, and returns how many moved. After a power loss the log may
   * have kept less than this file: a consumer resuming past the end would be answered
   * OFFSET_OUT_OF_RANGE and start over from the earliest record, replaying the whole retention.
   */
  clampTo(endOf: (topic: string, partition: number) => number | undefined): number {
    let moved = 0;
    for (const [group, { offsets, committedAt }] of [...this.groups]) {
      const commits: Commit[] = [];
      for (const [key, committed] of offsets) {
        const [topic, partition] = key.split('\0');
        const end = endOf(topic, Number(partition));
        if (end !== undefined && committed.offset > end)
          commits.push([topic, Number(partition), end, committed.metadata]);
      }
      this.commit(group, commits, committedAt); // a correction, not a commit: the clock stays
      moved += commits.length;
    }
    return moved;
  }

  deleteTopic(topic: string): void {
    this.write({ dt: topic });
  }

  /**
   * The group's members are gone (`empty`, at `at`) or it has some again: the start of its
   * retention clock, kept on disk so that it survives a restart. Nothing to keep for a group
   * without offsets.
   */
  setEmpty(group: string, empty: boolean, at = Date.now()): void {
    const stored = this.groups.get(group);
    if (!stored || (stored.emptySince !== null) === empty) return;
    this.write({ g: group, c: [], e: empty ? at : null });
  }

  /**
   * Forgets every group without members (`hasMembers`) whose offsets are older than `retentionMs`
   * (-1: never): last committed, and empty, at least that long ago. A group whose offsets all went
   * with their topics goes at once. Returns the ids of the groups forgotten.
   */
  expire(retentionMs: number, hasMembers: (group: string) => boolean, now = Date.now()): string[] {
    if (retentionMs < 0) return [];
    const expired: string[] = [];
    for (const [g, group] of [...this.groups]) {
      if (hasMembers(g)) continue;
      const since = Math.max(group.committedAt, group.emptySince ?? 0);
      if (group.offsets.size > 0 && now - since < retentionMs) continue;
      this.write({ g, c: [], gone: true });
      expired.push(g);
    }
    return expired;
  }

  private liveCount(): number {
    let n = 0;
    for (const { offsets } of this.groups.values()) n += offsets.size;
    return n;
  }

  private compact(): void {
    const file = path.join(this.dir!, 'offsets.log');
    const tmp = `${file}.tmp`;
    const out: string[] = [];
    for (const [g, { offsets, committedAt, emptySince }] of this.groups) {
      const c = [...offsets].map(([key, v]): Commit => {
        const [topic, partition] = key.split('\0');
        return [topic, Number(partition), v.offset, v.metadata];
      });
      const line: GroupLine = { g, c, t: committedAt };
      if (emptySince !== null) line.e = emptySince;
      if (c.length) out.push(JSON.stringify(line) + '\n');
    }
    fs.writeFileSync(tmp, out.join(''));
    const fd = fs.openSync(tmp, 'r');
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fs.renameSync(tmp, file);
    fs.closeSync(this.fd!);
    this.fd = fs.openSync(file, 'a');
    this.lines = out.length;
  }

  /** Syncs what was written since the last sync; one that failed leaves it to the next to try again. */
  sync(): Promise<void> {
    if (this.fd === null || !this.dirty) return Promise.resolve();
    this.dirty = false;
    const fd = this.fd;
    return new Promise((resolve, reject) =>
      fs.fdatasync(fd, (err) => {
        if (!err) return resolve();
        this.dirty = true;
        reject(err);
      }),
    );
  }

  close(): void {
    if (this.fd !== null) fs.closeSync(this.fd);
    this.fd = null;
  }
}
