import { ChildProcess, spawn } from 'node:child_process';
import { openSync } from 'node:fs';
import path from 'node:path';
import { waitFor } from '@parley/test-kit';

const ROOT = path.resolve(__dirname, '../../..');

/** A service as its own OS process (`tsx apps/<app>/src/main.ts`), to kill -9 and restart in tests. */
export class ServiceProcess {
  private child?: ChildProcess;

  constructor(
    readonly app: string,
    private readonly env: Record<string, string>,
    private readonly probeUrl: string,
    private readonly logFile = path.join(ROOT, '.data', `test-${app}.log`),
  ) {}

  async start(): Promise<void> {
    const log = openSync(this.logFile, 'a');
    // `--import tsx` keeps the service in this one process (the tsx CLI would fork a child that a kill misses).
    this.child = spawn(process.execPath, ['--import', 'tsx', `apps/${this.app}/src/main.ts`], {
      cwd: ROOT,
      env: { ...process.env, NODE_OPTIONS: '', LOG_LEVEL: 'warn', ...this.env },
      stdio: ['ignore', log, log],
    });
    await waitFor(async () => (await fetch(`${this.probeUrl}/readyz`).catch(() => undefined))?.status === 200, 30_000, `${this.app} to be ready`);
  }

  /** SIGKILL: no shutdown hook runs, nothing is flushed or committed. */
  async kill(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
  }

  async stop(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
    if (child.exitCode === null) await this.kill();
  }
}
