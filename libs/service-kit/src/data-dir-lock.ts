import fs from 'node:fs';
import path from 'node:path';

/**
 * One owner per data directory (the embedded broker's log, a PGlite database): a lock file with the
 * owner's pid, released by the function returned; a dead owner's lock is taken over. `owner` names
 * what holds it, for a second one in the same process.
 */
export function lockDataDir(dir: string, owner: string): () => void {
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, '.lock');
  const token = `${process.pid}:${Date.now()}:${Math.random()}`;
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      fs.writeFileSync(file, token, { flag: 'wx' });
      return () => {
        try {
          if (fs.readFileSync(file, 'utf8') === token) fs.rmSync(file);
        } catch {
          // already gone
        }
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const [pid, at] = fs.readFileSync(file, 'utf8').split(':').map(Number);
      if (pid === process.pid && !(at < performance.timeOrigin - CLOCK_SLACK_MS))
        throw new Error(`data directory ${dir} is in use by another ${owner} in this process`);
      if (pid && pid !== process.pid && holdsLockWrittenAt(pid, at))
        throw new Error(`data directory ${dir} is in use by process ${pid}`);
      fs.rmSync(file, { force: true }); // left by a process that is gone (killed, a power loss)
    }
  }
  throw new Error(`could not lock ${dir}`);
}

/** Clock steps and the granularity of process start times. */
const CLOCK_SLACK_MS = 2000;

/**
 * Whether process `pid` can be the one that wrote a lock at time `at`: it is alive, and (where
 * Linux tells) it started before then. A pid is reused: after a kill -9 in a container the next
 * run often gets the same pid (then it is this process's own, started after the lock was written),
 * and after a reboot an unrelated process may have it.
 */
function holdsLockWrittenAt(pid: number, at: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  const startedAt = linuxProcessStart(pid);
  return startedAt === undefined || !(startedAt > at + CLOCK_SLACK_MS);
}

/** A process's start time (epoch ms) from /proc; undefined where there is none. */
function linuxProcessStart(pid: number): number | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 22, starttime, in clock ticks since boot; the command name (field 2) may hold spaces.
    const startTicks = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
    const bootSeconds = Number(/^btime (\d+)$/m.exec(fs.readFileSync('/proc/stat', 'utf8'))?.[1]);
    const TICKS_PER_SECOND = 100; // USER_HZ: 100 on every mainstream Linux architecture
    const startedAt = bootSeconds * 1000 + (startTicks * 1000) / TICKS_PER_SECOND;
    return Number.isFinite(startedAt) && startedAt > 0 ? startedAt : undefined;
  } catch {
    return undefined;
  }
}
