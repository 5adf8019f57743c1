/** `npm start` (apps/launcher/src/main.ts) refuses bad settings as the services do: exit 2, naming them. */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

const root = path.join(__dirname, '../../..');

describe('npm start', () => {
  it('exits 2 naming a LOG_LEVEL pino has no level for, before it starts anything', () => {
    const dataDir = mkdtempSync(path.join(tmpdir(), 'launcher-main-'));
    try {
      const run = spawnSync(process.execPath, ['--import', 'tsx', path.join(__dirname, '../src/main.ts')], {
        env: { ...process.env, PARLEY_DATA_DIR: dataDir, LOG_LEVEL: 'verbose' },
        encoding: 'utf8',
        timeout: 30_000,
      });
      expect(run.stderr).toMatch(
        /^parley: invalid configuration:\n {2}- LOG_LEVEL: must be one of .*\(got "verbose"\)\n$/,
      );
      expect(run.status).toBe(2);
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});

describe('npm start stopping on Ctrl-C', () => {
  /**
   * package.json's start command, run as npm runs it (`sh -c`, in a process group of its own, as a
   * terminal's foreground job), on the launcher's signal handling around a fleet whose stop takes
   * `stopMs`. `ended` resolves with the output once every process of it has exited.
   */
  function startCommand(stopMs: number | 'never', env: Record<string, string> = {}) {
    const { scripts } = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8'));
    const main = 'apps/launcher/src/main.ts';
    expect(scripts.start).toContain(main);
    const job = spawn(scripts.start.replace(main, 'apps/launcher/test/fixtures/slow-stop.ts'), {
      shell: true,
      detached: true,
      cwd: root,
      env: {
        ...process.env,
        PATH: `${path.join(root, 'node_modules/.bin')}:${process.env.PATH}`,
        STOP_MS: String(stopMs),
        ...env,
      },
    });
    let output = '';
    const ended = new Promise<string>((resolve) => job.on('close', () => resolve(output)));
    const printed = (pattern: RegExp) =>
      new Promise<RegExpExecArray>((resolve, reject) => {
        const check = () => {
          const found = pattern.exec(output);
          if (found) resolve(found);
        };
        job.stdout.on('data', check);
        check();
        void ended.then(() => reject(new Error(`ended without printing ${pattern}: ${output}`)));
      });
    job.stdout.on('data', (chunk) => (output += chunk));
    job.stderr.on('data', (chunk) => (output += chunk));
    const ready = printed(/^ready (\d+)$/m).then((found) => Number(found[1]));
    /** The launcher's exit code, as the fixture prints it. */
    const exitCode = () => /^exited (\d+)$/m.exec(output)?.[1];
    return { ready, printed, ended, exitCode, ctrlC: () => process.kill(-job.pid!, 'SIGINT') };
  }

  it('stops cleanly when the Ctrl-C comes while its main thread is busy', async () => {
    const job = startCommand(500);
    const launcher = await job.ready;
    // A busy event loop (a PGlite query, a consumer's batch) takes no signal until it is free.
    process.kill(launcher, 'SIGSTOP');
    job.ctrlC();
    await new Promise((resolve) => setTimeout(resolve, 300));
    process.kill(launcher, 'SIGCONT');
    const output = await job.ended;
    // tsx's CLI (the start command was `tsx apps/launcher/src/main.ts`) gives its child 30 ms to
    // take a signal, then sends it again and SIGKILLs it: the fleet died in its stop.
    expect(output).toContain('"msg":"shutting down"');
    expect(output).toContain('"msg":"stopped"');
    expect(job.exitCode()).toBe('0');
  });

  it('ends at once on a second Ctrl-C while the stop hangs', async () => {
    const job = startCommand(60_000);
    await job.ready;
    job.ctrlC();
    await job.printed(/shutting down/);
    const second = Date.now();
    job.ctrlC();
    const output = await job.ended;
    expect(Date.now() - second).toBeLessThan(5_000);
    expect(output).not.toContain('"msg":"stopped"');
  });

  it('exits 1 at the deadline when the stop waits on something that never ends, not 0 in silence', async () => {
    const job = startCommand('never', { DEADLINE_MS: '700' });
    await job.ready;
    job.ctrlC();
    const output = await job.ended;
    expect(output).toContain('"msg":"shutdown deadline passed, exiting"');
    expect(output).not.toContain('"msg":"stopped"');
    expect(job.exitCode()).toBe('1');
  });
});
