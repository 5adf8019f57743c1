import { createServer, ServerResponse } from 'node:http';
import { AddressInfo, Socket } from 'node:net';
import { Registry } from 'prom-client';
import { ParleyError } from '@parley/contracts';
import { createMetricsRegistry } from '@parley/service-kit';
import { waitFor } from '@parley/test-kit';
import { createHttpUpstreams, UpstreamLimits, UpstreamName, Upstreams } from '../src/upstream';

/**
 * A slow service: it holds every request until the test answers it (or forever), and keeps the
 * order requests arrived in and the most it held at once.
 */
async function startSlowUpstream() {
  const held = new Map<string, ServerResponse>();
  const arrived: Array<{ path: string; at: number }> = [];
  const sockets = new Set<Socket>();
  let mostHeld = 0;
  const server = createServer((req, res) => {
    const path = req.url!;
    arrived.push({ path, at: Date.now() });
    held.set(path, res);
    mostHeld = Math.max(mostHeld, held.size);
    res.on('close', () => held.delete(path));
  });
  server.on('connection', (socket) => sockets.add(socket));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    arrived: () => arrived.map((a) => a.path),
    arrivedAt: (path: string) => arrived.find((a) => a.path === path)?.at,
    mostHeld: () => mostHeld,
    answer(path: string) {
      const res = held.get(path);
      if (!res) throw new Error(`${path} is not held`);
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ path }));
    },
    close() {
      for (const socket of sockets) socket.destroy();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}
type SlowUpstream = Awaited<ReturnType<typeof startSlowUpstream>>;

function upstreams(
  url: string,
  limits: Omit<UpstreamLimits, 'metrics'>,
  timeoutMs = 5000,
): { upstreams: Upstreams; metrics: Registry } {
  const metrics = createMetricsRegistry('rest-gateway', { collectDefaults: false });
  const urls = { 'persistence-ms': url, 'group-ms': url, 'push-ms': url, 'session-ms': url };
  return {
    upstreams: createHttpUpstreams(urls, 'secret-for-internal-calls', { metrics, timeoutMs, ...limits }),
    metrics,
  };
}

const get = (upstreams: Upstreams, service: UpstreamName, path: string) =>
  upstreams.call(service, { method: 'GET', path, user: 'alice', success: 200 });

async function sample(metrics: Registry, name: string, labels: Record<string, string>): Promise<number> {
  const metric = await metrics.getSingleMetric(name)!.get();
  const found = metric.values.find((v) =>
    Object.entries(labels).every(([k, value]) => v.labels[k] === value),
  );
  return found?.value ?? NaN;
}

const settle = () => new Promise((resolve) => setTimeout(resolve, 100));

describe('upstream calls, at most UPSTREAM_MAX_IN_FLIGHT to each service', () => {
  let slow: SlowUpstream;
  beforeEach(async () => {
    slow = await startSlowUpstream();
  });
  afterEach(() => slow.close());

  it('holds the calls to a service to the cap, the others waiting and going in order as slots free; another service is not held by it', async () => {
    const { upstreams: calls, metrics } = upstreams(slow.url, {
      maxInFlight: 2,
      maxWaiting: 10,
      maxWaitMs: 5000,
    });
    const paths = ['/c0', '/c1', '/c2', '/c3', '/c4'];
    const answers = paths.map((path) => get(calls, 'group-ms', path));
    await waitFor(() => slow.arrived().length >= 2, 5000, 'the first two calls');
    await settle();
    expect(slow.arrived()).toEqual(['/c0', '/c1']);
    const push = get(calls, 'push-ms', '/p0');
    await waitFor(() => slow.arrived().includes('/p0'), 5000, "push-ms's call, past group-ms's full slots");
    expect(await sample(metrics, 'parley_rest_upstream_in_flight', { upstream: 'group-ms' })).toBe(2);
    expect(await sample(metrics, 'parley_rest_upstream_waiting', { upstream: 'group-ms' })).toBe(3);

    slow.answer('/c1');
    await waitFor(() => slow.arrived().includes('/c2'), 5000, 'the first waiting call');
    slow.answer('/c0');
    await waitFor(() => slow.arrived().includes('/c3'), 5000, 'the second waiting call');
    await settle();
    expect(slow.arrived()).toEqual(['/c0', '/c1', '/p0', '/c2', '/c3']);
    slow.answer('/c2');
    await waitFor(() => slow.arrived().includes('/c4'), 5000, 'the last waiting call');
    slow.answer('/c3');
    slow.answer('/c4');
    expect((await Promise.all(answers)).map((a) => a.body)).toEqual(paths.map((path) => ({ path })));
    expect(slow.mostHeld()).toBe(3); // two of group-ms's, one of push-ms's
    slow.answer('/p0');
    expect((await push).body).toEqual({ path: '/p0' });
    expect(await sample(metrics, 'parley_rest_upstream_in_flight', { upstream: 'group-ms' })).toBe(0);
  });

  it('refuses a call past the waiting ones at once: 503 unavailable naming the service as busy, counted', async () => {
    const { upstreams: calls, metrics } = upstreams(slow.url, { maxInFlight: 2, maxWaiting: 1 });
    const running = [get(calls, 'persistence-ms', '/a'), get(calls, 'persistence-ms', '/b')];
    const waiting = get(calls, 'persistence-ms', '/c');
    await waitFor(() => slow.arrived().length === 2, 5000, 'the calls under way');
    const refused = await get(calls, 'persistence-ms', '/d').catch((err: unknown) => err);
    expect(refused).toBeInstanceOf(ParleyError);
    expect([(refused as ParleyError).code, (refused as ParleyError).message]).toEqual([
      'unavailable',
      'persistence-ms is busy: 2 calls to it are under way and 1 waiting; try again',
    ]);
    expect(slow.arrived()).toEqual(['/a', '/b']);
    expect(
      await sample(metrics, 'parley_rest_upstream_refused_total', {
        upstream: 'persistence-ms',
        reason: 'queue_full',
      }),
    ).toBe(1);
    slow.answer('/a');
    await waitFor(() => slow.arrived().includes('/c'), 5000, 'the waiting call');
    slow.answer('/b');
    slow.answer('/c');
    expect((await Promise.all([...running, waiting])).map((a) => a.status)).toEqual([200, 200, 200]);
    expect(slow.arrived()).not.toContain('/d');
  });

  it('refuses a waiting call that found no slot within the wait, and the slot it waited for still serves the next', async () => {
    const { upstreams: calls, metrics } = upstreams(slow.url, { maxInFlight: 1, maxWaitMs: 200 });
    const running = get(calls, 'session-ms', '/a');
    await waitFor(() => slow.arrived().length === 1, 5000, 'the call under way');
    const started = Date.now();
    const refused = await get(calls, 'session-ms', '/b').catch((err: unknown) => err);
    expect(Date.now() - started).toBeGreaterThanOrEqual(190);
    expect([(refused as ParleyError).code, (refused as ParleyError).message]).toEqual([
      'unavailable',
      'session-ms is busy: no call to it finished within 200 ms to make room; try again',
    ]);
    expect(slow.arrived()).toEqual(['/a']);
    expect(
      await sample(metrics, 'parley_rest_upstream_refused_total', {
        upstream: 'session-ms',
        reason: 'wait_timeout',
      }),
    ).toBe(1);
    expect(await sample(metrics, 'parley_rest_upstream_waiting', { upstream: 'session-ms' })).toBe(0);
    slow.answer('/a');
    expect((await running).status).toBe(200);
    const next = get(calls, 'session-ms', '/c');
    await waitFor(() => slow.arrived().includes('/c'), 5000, 'the next call');
    slow.answer('/c');
    expect((await next).status).toBe(200);
  });

  it('frees the slot of a call that timed out: the one waiting goes then', async () => {
    const { upstreams: calls, metrics } = upstreams(slow.url, { maxInFlight: 1, maxWaitMs: 5000 }, 300);
    const stalled = get(calls, 'push-ms', '/stalled').catch((err: unknown) => err);
    await waitFor(() => slow.arrived().length === 1, 5000, 'the stalled call');
    const waiting = get(calls, 'push-ms', '/next');
    const timedOut = (await stalled) as ParleyError;
    const timedOutAt = Date.now();
    expect([timedOut.code, timedOut.message]).toEqual([
      'unavailable',
      expect.stringMatching(/^push-ms is unreachable: .*timeout/),
    ]);
    await waitFor(() => slow.arrived().includes('/next'), 5000, 'the waiting call');
    expect(slow.arrivedAt('/next')).toBeGreaterThanOrEqual(timedOutAt - 5);
    slow.answer('/next');
    expect((await waiting).body).toEqual({ path: '/next' });
    expect(await sample(metrics, 'parley_rest_upstream_in_flight', { upstream: 'push-ms' })).toBe(0);
  });
});
