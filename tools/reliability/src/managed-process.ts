import { ChildProcess, spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { waitFor } from '@parley/test-kit';

export interface ProcessSpec {
  name: string;
  command: string;
  args: string[];
  cwd: string;
  env?: Record<string, string>;
  /** Resolves true once the process serves (probe, port, PING). */
  ready: () => Promise<boolean>;
  logFile: string;
  readyTimeoutMs?: number;
}

/** One OS process a fault test can SIGKILL and start again, with its output appended to a log file. */
export class ManagedProcess {
  private child?: ChildProcess;
  /** How the last run ended: its exit code, or the signal that ended it. */
  lastExit?: { code: number | null; signal: NodeJS.Signals | null };

  constructor(readonly spec: ProcessSpec) {}

  get name(): string {
    return this.spec.name;
  }

  get pid(): number | undefined {
    return this.running ? this.child?.pid : undefined;
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  async start(): Promise<void> {
    if (this.running) throw new Error(`${this.name} is already running`);
    const log = openSync(this.spec.logFile, 'a');
    const child = spawn(this.spec.command, this.spec.args, {
      cwd: this.spec.cwd,
      env: { ...process.env, NODE_OPTIONS: '', ...this.spec.env },
      stdio: ['ignore', log, log],
    });
    closeSync(log);
    this.child = child;
    let exited = false;
    child.once('exit', (code, signal) => {
      exited = true;
      this.lastExit = { code, signal };
    });
    await waitFor(
      async () => {
        if (exited) throw new Error(`${this.name} exited while starting; see ${this.spec.logFile}`);
        return this.spec.ready().catch(() => false);
      },
      this.spec.readyTimeoutMs ?? 60_000,
      `${this.name} to be ready`,
    );
  }

  /** SIGKILL: no shutdown hook runs, nothing is flushed or committed. */
  kill(): Promise<void> {
    return this.signal('SIGKILL');
  }

  /** SIGTERM, then SIGKILL after `graceMs`; `lastExit` says which ended it. */
  async stop(graceMs = 10_000): Promise<void> {
    const child = this.child;
    if (!child || !this.running) return;
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await this.signal('SIGTERM');
    clearTimeout(timer);
  }

  private async signal(signal: NodeJS.Signals): Promise<void> {
    const child = this.child;
    if (!child || !this.running) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill(signal);
    await exited;
  }
}
