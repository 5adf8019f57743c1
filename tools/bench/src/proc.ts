import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import os from 'node:os';
import path from 'node:path';
import { bundleOf } from './bundles';
import { parseMachineStat, parseProcStat, parseRss } from './stats';

/** CPU and RSS of a process, or the sum over several, through /proc (Linux). */
export class ProcSampler {
  private readonly hz = 100; // USER_HZ on Linux
  readonly pids: number[];
  constructor(pids: number | number[]) {
    this.pids = Array.isArray(pids) ? pids : [pids];
  }

  cpuSeconds(): number {
    return this.sum((pid) => parseProcStat(readFileSync(`/proc/${pid}/stat`, 'utf8')).ticks / this.hz);
  }

  rssBytes(): number {
    return this.sum((pid) => parseRss(readFileSync(`/proc/${pid}/status`, 'utf8')));
  }

  private sum(read: (pid: number) => number): number {
    try {
      return this.pids.reduce((total, pid) => total + read(pid), 0);
    } catch {
      return NaN;
    }
  }

  /**
   * Waits until the processes use at most `cores` over a `windowMs` window (a fleet working off a
   * backlog the clients cannot see: stores, retries, acks), at most `maxMs`; returns how long it took.
   */
  async waitForIdle(
    cores: number,
    windowMs: number,
    maxMs: number,
  ): Promise<{ waitedMs: number; cores: number }> {
    const start = Date.now();
    for (;;) {
      const window = this.window();
      await sleep(windowMs);
      const used = window.end().cores;
      if (used <= cores || Date.now() - start >= maxMs) return { waitedMs: Date.now() - start, cores: used };
    }
  }

  /** Starts a window; `end()` returns cores used (CPU seconds / wall seconds) and RSS at the end. */
  window(): { end(): { cores: number; rssMiB: number } } {
    const cpu0 = this.cpuSeconds();
    const t0 = Date.now();
    return {
      end: () => {
        const wall = (Date.now() - t0) / 1000;
        return {
          cores: round2((this.cpuSeconds() - cpu0) / wall),
          rssMiB: Math.round(this.rssBytes() / 1048576),
        };
      },
    };
  }
}

const round2 = (n: number) => Math.round(n * 100) / 100;

/** Starts a window over the whole machine's CPU (`/proc/stat`); `end()` gives the cores busy, NaN off Linux. */
export function machineCpuWindow(): { end(): number } {
  const read = () => {
    try {
      return parseMachineStat(readFileSync('/proc/stat', 'utf8'));
    } catch {
      return { busy: NaN, total: NaN };
    }
  };
  const a = read();
  return {
    end: () => {
      const b = read();
      return round2(((b.busy - a.busy) / (b.total - a.total || NaN)) * os.cpus().length);
    },
  };
}

/** Whether the bench runs from its bundles (tools/bench/src/bundle.ts), not under tsx. */
export const RUNS_FROM_BUNDLE = !__filename.endsWith('.ts');

export interface Child {
  proc: ChildProcess;
  pid: number;
  ready: Record<string, unknown>;
  stderrTail(): string;
  stop(): Promise<void>;
}

/**
 * Spawns a TypeScript entry point under Node + tsx in its own process, with the file-descriptor
 * soft limit raised to the hard limit (`ulimit -n`), and waits until it is ready: a
 * `<MARKER> {json}` line on its stdout, or the first line `ready` turns into a value. `exec` keeps
 * the pid: it is the Node process itself, which the sampler then reads. Where this module runs
 * from a bundle (tools/bench/src/bundle.ts), the entry's own bundle beside it runs instead, under
 * Node alone.
 */
export function spawnTs(
  entry: string,
  ready: string | ((line: string) => Record<string, unknown> | undefined),
  options: {
    nodeArgs?: string[];
    env?: Record<string, string>;
    timeoutMs?: number;
    /** Run it on these cores only (`taskset -c`), e.g. "0,1": a 2-core service on a bigger machine. */
    cpus?: string;
  } = {},
): Promise<Child> {
  const root = RUNS_FROM_BUNDLE ? __dirname : path.resolve(__dirname, '../../..');
  const args = RUNS_FROM_BUNDLE
    ? [...(options.nodeArgs ?? []), path.join(__dirname, bundleOf(entry))]
    : [...(options.nodeArgs ?? []), '--import', 'tsx', entry];
  const command = options.cpus ? ['taskset', '-c', options.cpus, process.execPath] : [process.execPath];
  const proc = spawn(
    'sh',
    ['-c', 'ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$0" "$@"', ...command, ...args],
    {
      cwd: root,
      env: { ...process.env, ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-20_000);
  });
  const stderrTail = () => stderr;
  const readyOf = typeof ready === 'string' ? markerLine(ready) : ready;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`${entry} did not start within ${options.timeoutMs ?? 60_000} ms\n${stderr}`));
    }, options.timeoutMs ?? 60_000);
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${entry} exited with ${code}\n${stderr}`));
    });
    let partial = '';
    let found: Record<string, unknown> | undefined;
    proc.stdout!.on('data', (d: Buffer) => {
      // Logs (pino writes to stdout) are kept with stderr: the tail is saved with the results.
      const text = d.toString();
      stderr = (stderr + text).slice(-20_000);
      if (found) return;
      const lines = (partial + text).split('\n');
      partial = lines.pop()!;
      found = lines.map(readyOf).find((value) => value !== undefined);
      if (!found) return;
      clearTimeout(timer);
      proc.removeAllListeners('exit');
      resolve({
        proc,
        pid: proc.pid!,
        ready: found,
        stderrTail,
        stop: () =>
          new Promise<void>((done) => {
            if (proc.exitCode !== null) return done();
            const kill = setTimeout(() => proc.kill('SIGKILL'), 25_000);
            const giveUp = setTimeout(done, 30_000); // never hang the run on a child that will not die
            proc.once('exit', () => {
              clearTimeout(kill);
              clearTimeout(giveUp);
              done();
            });
            proc.kill('SIGTERM');
          }),
      });
    });
  });
}

/** A `<MARKER> {json}` line's JSON. */
function markerLine(marker: string): (line: string) => Record<string, unknown> | undefined {
  return (line) => {
    const at = line.indexOf(`${marker} `);
    return at < 0 ? undefined : (JSON.parse(line.slice(at + marker.length + 1)) as Record<string, unknown>);
  };
}

/** The soft file-descriptor limit of this process (from /proc/self/limits). */
export function openFilesLimit(pid: number | 'self' = 'self'): number {
  try {
    const m = /Max open files\s+(\d+|unlimited)/.exec(readFileSync(`/proc/${pid}/limits`, 'utf8'));
    return m && m[1] !== 'unlimited' ? Number(m[1]) : Infinity;
  } catch {
    return Infinity;
  }
}
