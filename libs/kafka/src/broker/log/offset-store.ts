import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';

export interface CommittedOffset {
  offset: number;
  metadata: string | null;
}

type Line = { g: string; c: [string, number, number, string | null][] } | { dt: string };

/**
 * Committed consumer-group offsets: a map in memory, an append-only JSON-lines file on disk
 * (`offsets.log`), compacted into a fresh file by rename when it has grown well past the live set.
 * A torn last line is dropped on recovery.
 */
export class OffsetStore {
  private readonly groups = new Map<string, Map<string, CommittedOffset>>();
  private fd: number | null = null;
  private lines = 0;
  private dirty = false;

  constructor(
    private readonly dir: string | null,
    private readonly logger: Logger,
  ) {
    if (!dir) return;
    const file = path.join(dir, 'offsets.log');
    if (fs.existsSync(file)) this.recover(file);
    this.fd = fs.openSync(file, 'a');
  }

  private recover(file: string): void {
    const text = fs.readFileSync(file, 'utf8');
    let good = 0;
    let at = 0;
    while (at < text.length) {
      const nl = text.indexOf('\n', at);
      if (nl < 0) break;
      try {
        this.apply(JSON.parse(text.slice(at, nl)) as Line);
        this.lines++;
      } catch {
        break;
      }
      at = nl + 1;
      good = at;
    }
    const goodBytes = Buffer.byteLength(text.slice(0, good));
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
      for (const offsets of this.groups.values())
        for (const key of [...offsets.keys()]) if (key.startsWith(`${line.dt}\0`)) offsets.delete(key);
      return;
    }
    let offsets = this.groups.get(line.g);
    if (!offsets) this.groups.set(line.g, (offsets = new Map()));
    for (const [topic, partition, offset, metadata] of line.c)
      offsets.set(`${topic}\0${partition}`, { offset, metadata });
  }

  private write(line: Line): void {
    this.apply(line);
    if (this.fd === null) return;
    fs.writeSync(this.fd, JSON.stringify(line) + '\n');
    this.dirty = true;
    if (++this.lines > 10_000 && this.lines > 4 * this.liveCount()) this.compact();
  }

  commit(
    group: string,
    commits: [topic: string, partition: number, offset: number, metadata: string | null][],
  ): void {
    if (commits.length) this.write({ g: group, c: commits });
  }

  get(group: string, topic: string, partition: number): CommittedOffset | undefined {
    return this.groups.get(group)?.get(`${topic}\0${partition}`);
  }

  /** Every committed (topic, partition) of a group. */
  list(group: string): { topic: string; partition: number; committed: CommittedOffset }[] {
    return [...(this.groups.get(group) ?? [])].map(([key, committed]) => {
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
    for (const [group, offsets] of [...this.groups]) {
      const commits: [string, number, number, string | null][] = [];
      for (const [key, committed] of offsets) {
        const [topic, partition] = key.split('\0');
        const end = endOf(topic, Number(partition));
        if (end !== undefined && committed.offset > end)
          commits.push([topic, Number(partition), end, committed.metadata]);
      }
      this.commit(group, commits);
      moved += commits.length;
    }
    return moved;
  }

  deleteTopic(topic: string): void {
    this.write({ dt: topic });
  }

  private liveCount(): number {
    let n = 0;
    for (const offsets of this.groups.values()) n += offsets.size;
    return n;
  }

  private compact(): void {
    const file = path.join(this.dir!, 'offsets.log');
    const tmp = `${file}.tmp`;
    const out: string[] = [];
    for (const [g, offsets] of this.groups) {
      const c = [...offsets].map(([key, v]) => {
        const [topic, partition] = key.split('\0');
        return [topic, Number(partition), v.offset, v.metadata] as [string, number, number, string | null];
      });
      if (c.length) out.push(JSON.stringify({ g, c }) + '\n');
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

  sync(): Promise<void> {
    if (this.fd === null || !this.dirty) return Promise.resolve();
    this.dirty = false;
    const fd = this.fd;
    return new Promise((resolve) => fs.fdatasync(fd, () => resolve()));
  }

  close(): void {
    if (this.fd !== null) fs.closeSync(this.fd);
    this.fd = null;
  }
}
