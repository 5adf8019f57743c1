import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { ProcSampler } from '../src/proc';

describe('ProcSampler.waitForIdle', () => {
  const children: ChildProcess[] = [];
  const start = (args: string[]) => {
    const child = spawn(process.execPath, args, { stdio: 'ignore' });
    children.push(child);
    return child.pid!;
  };

  afterEach(async () => {
    await Promise.all(
      children.splice(0).map(async (child) => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        child.kill('SIGKILL');
        await once(child, 'exit');
      }),
    );
  });

  it('returns after one window for a process that sleeps', async () => {
    const sampler = new ProcSampler(start(['-e', 'setTimeout(() => {}, 30000)']));
    const idle = await sampler.waitForIdle(0.25, 300, 5000);
    expect(idle.cores).toBeLessThanOrEqual(0.25);
    expect(idle.waitedMs).toBeLessThan(1500);
  });

  it('gives up after maxMs on a process that stays busy, saying how busy it was', async () => {
    const sampler = new ProcSampler(start(['-e', 'for (;;) {}']));
    const idle = await sampler.waitForIdle(0.25, 300, 1200);
    expect(idle.cores).toBeGreaterThan(0.25);
    expect(idle.waitedMs).toBeGreaterThanOrEqual(1200);
  });
});
