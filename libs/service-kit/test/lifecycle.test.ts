/** @expectedSeconds 25 */
import { ChildProcess, spawn } from 'node:child_process';
import { AddressInfo } from 'node:net';
import path from 'node:path';
import { waitFor } from '@parley/test-kit';
import {
  buildHttpServer,
  Closer,
  createMetricsRegistry,
  Readiness,
  serviceLifecycle,
  silentLogger,
} from '@parley/service-kit';

/** Sockets and servers this process holds open (what `stop()` must release). */
const openNetwork = () =>
  process.getActiveResourcesInfo().filter((kind) => kind === 'TCPSocketWrap' || kind === 'TCPServerWrap')
    .length;

describe('a service started through serviceLifecycle, over real HTTP', () => {
  /** An HTTP server for a test service, without Node's default metrics. */
  const quietServer = (name: string, readiness: Readiness) =>
    buildHttpServer({
      logger: silentLogger(),
      metrics: createMetricsRegistry(name, { collectDefaults: false }),
      readiness,
    });

  it('answers the probes while running and leaves nothing open once stopped', async () => {
    const before = openNetwork();
    const readiness = new Readiness(500);
    let brokerUp = false;
    readiness.register('kafka', () => {
      if (!brokerUp) throw new Error('broker unreachable');
    });
    const events: string[] = [];
    const http = buildHttpServer({
      logger: silentLogger(),
      metrics: createMetricsRegistry('probe-test'),
      readiness,
    });
    const worker = {
      start: () => events.push('worker started'),
      stop: () => events.push(`worker stopped, server listening: ${http.server.listening}`),
    };
    const service = serviceLifecycle(http, { port: 0, host: '127.0.0.1' }, readiness, [worker]);

    await service.start();
    expect(openNetwork()).toBeGreaterThan(before);
    const base = `http://127.0.0.1:${(http.server.address() as AddressInfo).port}`;
    const get = async (route: string) => {
      const response = await fetch(`${base}${route}`);
      return {
        status: response.status,
        type: response.headers.get('content-type'),
        text: await response.text(),
      };
    };

    expect(await get('/healthz')).toMatchObject({ status: 200, text: JSON.stringify({ status: 'ok' }) });
    const down = await get('/readyz');
    expect(down.status).toBe(503);
    expect(JSON.parse(down.text)).toEqual({
      status: 'not ready',
      checks: { startup: 'ok', kafka: 'broker unreachable' },
    });
    brokerUp = true;
    const ready = await get('/readyz');
    expect(ready.status).toBe(200);
    expect(JSON.parse(ready.text)).toEqual({ status: 'ready', checks: { startup: 'ok', kafka: 'ok' } });
    const metrics = await get('/metrics');
    expect(metrics.status).toBe(200);
    expect(metrics.type).toContain('text/plain');
    expect(metrics.text).toMatch(/^# HELP parley_process_cpu_user_seconds_total /m);
    expect(metrics.text).toMatch(/^parley_process_cpu_user_seconds_total\{service="probe-test"\} \d/m);

    await service.stop();
    expect(events).toEqual(['worker started', 'worker stopped, server listening: false']);
    expect((await readiness.report()).checks.shutdown).toBe('draining');
    await expect(fetch(`${base}/healthz`)).rejects.toThrow();
    await waitFor(() => openNetwork() <= before, 2000, 'the sockets to close');
  });

  it('answers /healthz while a worker is still starting (a long migration), and is ready once all have', async () => {
    const readiness = new Readiness(500);
    const http = quietServer('slow-start', readiness);
    let finishMigrating!: () => void;
    const migrating = new Promise<void>((resolve) => (finishMigrating = resolve));
    const service = serviceLifecycle(http, { port: 0, host: '127.0.0.1' }, readiness, [
      { start: () => migrating },
    ]);
    const started = service.start();
    await waitFor(() => http.server.listening, 2000, 'the server to listen');
    const base = `http://127.0.0.1:${(http.server.address() as AddressInfo).port}`;
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    const starting = await fetch(`${base}/readyz`);
    expect([starting.status, ((await starting.json()) as { checks: unknown }).checks]).toEqual([
      503,
      { startup: 'starting: preparing storage and consumers' },
    ]);
    finishMigrating();
    await started;
    expect((await fetch(`${base}/readyz`)).status).toBe(200);
    await service.stop();
  });

  it('starts the workers in order and stops them in reverse order', async () => {
    const order: string[] = [];
    const readiness = new Readiness();
    const http = quietServer('order-test', readiness);
    const worker = (name: string) => ({
      start: () => order.push(`start ${name}`),
      stop: () => order.push(`stop ${name}`),
    });
    const service = serviceLifecycle(http, { port: 0, host: '127.0.0.1' }, readiness, [
      worker('consumer'),
      worker('timer'),
    ]);
    await service.start();
    await service.stop();
    expect(order).toEqual(['start consumer', 'start timer', 'stop timer', 'stop consumer']);
  });

  it('starts no worker after stop() when stopped during the start (SIGTERM during a migration)', async () => {
    const readiness = new Readiness(500);
    const http = quietServer('stop-during-start', readiness);
    let finishMigrating!: () => void;
    const migrating = new Promise<void>((resolve) => (finishMigrating = resolve));
    const running = new Set<string>();
    const service = serviceLifecycle(http, { port: 0, host: '127.0.0.1' }, readiness, [
      { start: () => migrating }, // a migration waiting for the shared lock
      { start: () => void running.add('consumer'), stop: () => void running.delete('consumer') },
    ]);
    const started = service.start();
    await waitFor(() => http.server.listening, 2000, 'the server to listen');
    const port = (http.server.address() as AddressInfo).port;
    await service.stop();
    finishMigrating();
    await started;
    expect(running).toEqual(new Set()); // the consumer was started after stop() and never stopped
    await expect(fetch(`http://127.0.0.1:${port}/healthz`)).rejects.toThrow();
  });

  it('closes resources in reverse order and keeps closing past a failure', async () => {
    const closed: string[] = [];
    const closer = new Closer(silentLogger());
    closer.add('db', () => closed.push('db'));
    closer.add('bus', () => {
      throw new Error('already closed');
    });
    closer.add('cache', async () => closed.push('cache'));
    await closer.closeAll();
    expect(closed).toEqual(['cache', 'db']);
  });
});

const fixture = (name: string) => path.join(__dirname, 'fixtures', `${name}.ts`);

const children: ChildProcess[] = [];
afterEach(() => {
  for (const child of children.splice(0))
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
});

/** Runs a fixture service in its own process; `port()` waits until it logs its port. */
function startChild(env: Record<string, string>, service = 'signal-service') {
  const child = spawn(process.execPath, ['--import', 'tsx', fixture(service)], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  const lines: Array<Record<string, unknown>> = [];
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  let partial = '';
  child.stdout.on('data', (chunk: Buffer) => {
    const text = partial + chunk.toString();
    const complete = text.split('\n');
    partial = complete.pop()!;
    lines.push(...complete.filter(Boolean).map((line) => JSON.parse(line) as Record<string, unknown>));
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const port = async () => {
    await waitFor(
      () => lines.some((l) => l.msg === 'listening') || child.exitCode !== null,
      20_000,
      'the child to listen',
    );
    const listening = lines.find((l) => l.msg === 'listening');
    if (!listening) throw new Error(`the child exited before listening: ${stderr}`);
    return listening.port as number;
  };
  return { child, lines, exited, port, stderr: () => stderr };
}

describe('runService on SIGTERM, in its own process', () => {
  it('stops cleanly with exit 0, well within the deadline', async () => {
    const run = startChild({ SHUTDOWN_TIMEOUT_MS: '10000' });
    const port = await run.port();
    expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);
    const signalled = Date.now();
    run.child.kill('SIGTERM');
    expect(await run.exited).toBe(0);
    expect(Date.now() - signalled).toBeLessThan(5000);
    expect(run.lines.map((l) => l.msg)).toEqual(expect.arrayContaining(['shutting down', 'stopped']));
    expect(run.lines.find((l) => l.msg === 'shutting down')).toMatchObject({ signal: 'SIGTERM' });
  }, 30_000);

  it('exits 1 by the deadline when the start fails and releasing what started hangs', async () => {
    const run = startChild({ SHUTDOWN_TIMEOUT_MS: '700', FAIL_START: '1', HANG_ON_STOP: '1' });
    expect(await run.exited).toBe(1);
    expect(run.lines.map((l) => l.msg)).toEqual(
      expect.arrayContaining(['start failed', 'shutdown deadline passed, exiting']),
    );
  }, 30_000);

  it('exits 1 at the deadline when stopping hangs', async () => {
    const run = startChild({ SHUTDOWN_TIMEOUT_MS: '700', HANG_ON_STOP: '1' });
    await run.port();
    const signalled = Date.now();
    run.child.kill('SIGTERM');
    expect(await run.exited).toBe(1);
    const elapsed = Date.now() - signalled;
    expect(elapsed).toBeGreaterThanOrEqual(650);
    expect(elapsed).toBeLessThan(5000);
    expect(run.lines.find((l) => l.msg === 'shutdown deadline passed, exiting')).toMatchObject({
      timeoutMs: 700,
    });
    expect(run.lines.map((l) => l.msg)).not.toContain('stopped');
  }, 30_000);

  it('ends at once on a second signal of either kind while stopping hangs (Ctrl-C after a SIGTERM)', async () => {
    const run = startChild({ SHUTDOWN_TIMEOUT_MS: '20000', HANG_ON_STOP: '1' });
    await run.port();
    run.child.kill('SIGTERM');
    await waitFor(() => run.lines.some((l) => l.msg === 'shutting down'), 10_000, 'the stop to begin');
    const second = Date.now();
    run.child.kill('SIGINT');
    await run.exited;
    expect(run.child.signalCode).toBe('SIGINT');
    expect(Date.now() - second).toBeLessThan(10_000);
  }, 30_000);
});

describe('runMain when a dependency is away at start, in its own process', () => {
  const retried = (lines: Array<Record<string, unknown>>) =>
    lines.filter((l) => l.msg === 'a dependency is not available: starting again');
  const start = (env: Record<string, string>) =>
    startChild({ SHUTDOWN_TIMEOUT_MS: '2000', ...env }, 'dependency-service');

  it('wires and starts again, with backoff, until the dependency answers; then serves', async () => {
    const run = start({
      FAIL_TIMES: '2',
      FAIL_IN: 'wire',
      DATABASE_URL: 'postgres://parley:s3cret@127.0.0.1:9/parley',
    });
    const port = await run.port();
    expect(retried(run.lines).map((l) => [l.tries, l.retryInMs])).toEqual([
      [1, 1000],
      [2, 2000],
    ]);
    expect(retried(run.lines)[0]!.err).toMatchObject({ code: 'ECONNREFUSED' });
    // What it reaches for, to match the error's address against, with no password.
    expect(retried(run.lines)[0]!.reaching).toMatchObject({
      database: 'postgres://parley:***@127.0.0.1:9/parley',
    });
    expect(JSON.stringify(run.lines)).not.toContain('s3cret');
    // What each failed attempt had opened was closed before the next.
    expect(run.lines.filter((l) => l.msg === 'closed resource')).toHaveLength(2);
    expect((await fetch(`http://127.0.0.1:${port}/readyz`)).status).toBe(200);
    run.child.kill('SIGTERM');
    expect(await run.exited).toBe(0);
  }, 30_000);

  it('exits 2 at once with PARLEY_ENV=production on a public development secret, naming it', async () => {
    const refused = start({ PARLEY_ENV: 'production' });
    expect(await refused.exited).toBe(2);
    expect(refused.stderr()).toMatch(
      /INTERNAL_SECRET: holds the public development value, refused with PARLEY_ENV=production/,
    );
    const own = start({ PARLEY_ENV: 'production', INTERNAL_SECRET: 'an-internal-secret-of-our-own' });
    await own.port();
    own.child.kill('SIGTERM');
    expect(await own.exited).toBe(0);
  }, 30_000);

  it('starts again after a worker failed on a dependency once the server listened, closing that server', async () => {
    const run = start({ FAIL_TIMES: '1', FAIL_IN: 'start' });
    const port = await run.port();
    expect(retried(run.lines)).toHaveLength(1);
    expect(run.lines.filter((l) => l.msg === 'closed resource')).toHaveLength(1);
    expect((await fetch(`http://127.0.0.1:${port}/readyz`)).status).toBe(200);
    run.child.kill('SIGTERM');
    expect(await run.exited).toBe(0);
  }, 30_000);

  it('exits 1 at once on a failure that is not a dependency being away', async () => {
    const run = start({ FAIL_TIMES: '1', FAIL_KIND: 'other' });
    expect(await run.exited).toBe(1);
    expect(retried(run.lines)).toHaveLength(0);
    expect(run.lines.find((l) => l.msg === 'start failed')).toMatchObject({
      err: { message: 'a bug, not a dependency' },
    });
  }, 30_000);

  it('exits 1 once the next try would come after STARTUP_RETRY_MS', async () => {
    const run = start({ FAIL_TIMES: '100', STARTUP_RETRY_MS: '1500' });
    expect(await run.exited).toBe(1);
    // Tried at once and after 1 s; the next wait (2 s) would end past 1.5 s.
    expect(retried(run.lines)).toHaveLength(1);
    expect(run.lines.map((l) => l.msg)).toContain('start failed');
  }, 30_000);

  it('exits 0 at once on SIGTERM while waiting to start again', async () => {
    const run = start({ FAIL_TIMES: '100' });
    // Signalled in the second wait (2 s), not the first (1 s): an exit at once and one at the end of
    // the wait stay apart by far more than a busy box delays the signal and the process's exit.
    await waitFor(() => retried(run.lines).length > 1, 20_000, 'a second failed start');
    const signalled = Date.now();
    run.child.kill('SIGTERM');
    expect(await run.exited).toBe(0);
    expect(Date.now() - signalled).toBeLessThan(1500); // before the 2 s wait would have ended
    expect(retried(run.lines).map((l) => l.retryInMs)).toEqual([1000, 2000]);
  }, 30_000);
});
