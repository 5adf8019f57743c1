/**
 * What a client frame waiting for Kafka costs a ws-gateway: the gateway on the Kafka bus and the
 * embedded broker behind a TCP proxy that stalls, N small frames sent, the heap and buffers after a
 * full GC compared with what MAX_PENDING_PUBLISH_BYTES counted for them
 * (PENDING_FRAME_OVERHEAD_BYTES in libs/service-kit/src/publish-budget.ts comes from it).
 *
 *   node --expose-gc --import tsx tools/bench/src/pending-heap.ts [N=40000] [cap bytes=1 GiB]
 *
 * SNAP=<prefix> also writes heap snapshots before and after.
 */
import { AddressInfo } from 'node:net';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { createKafkaBus, createKafkaClient, startBroker } from '@parley/kafka';
import {
  createMetricsRegistry,
  createTokenVerifier,
  DEV_JWT_SECRET,
  issueToken,
  Readiness,
  silentLogger,
} from '@parley/service-kit';
import { TcpFaultProxy, WsTestClient } from '@parley/test-kit';
import { createWsGateway } from '../../../apps/ws-gateway/src/app';

const gc = (globalThis as { gc?: () => void }).gc!;
const heap = () => {
  gc();
  gc();
  return process.memoryUsage();
};

/** With SNAP=<prefix>, a heap snapshot to `<prefix>.<when>.heapsnapshot`. */
async function snapshot(when: string): Promise<void> {
  if (!process.env.SNAP) return;
  const v8 = await import('node:v8');
  v8.writeHeapSnapshot(`${process.env.SNAP}.${when}.heapsnapshot`);
}

async function main() {
  const N = Number(process.argv[2] ?? 40000);
  const budget = Number(process.argv[3] ?? 1024 * 1024 * 1024);
  const broker = await startBroker({
    dataDir: mkdtempSync(path.join(tmpdir(), 'ph-')),
    logger: silentLogger(),
  });
  const proxy = await TcpFaultProxy.start({ host: '127.0.0.1', port: broker.port });
  const kafka = createKafkaClient(
    'ph',
    { KAFKA_BROKERS: `127.0.0.1:${proxy.port}`, KAFKA_SSL: false, KAFKA_REPLICATION_FACTOR: 1 },
    silentLogger(),
  );
  const metrics = createMetricsRegistry('ws-gateway', { collectDefaults: false });
  const bus = createKafkaBus({ kafka, logger: silentLogger(), metrics });
  const gateway = createWsGateway({
    bus,
    logger: silentLogger(),
    metrics,
    readiness: new Readiness(),
    verifyToken: createTokenVerifier({ JWT_SECRET: DEV_JWT_SECRET }),
    internalSecret: 'internal-secret-for-tests',
    port: 0,
    internalPort: 0,
    host: '127.0.0.1',
    settings: {
      gatewayId: 'gw-ph',
      internalUrl: 'http://unused',
      maxFrameBytes: 64 * 1024,
      ratePerSecond: 1_000_000,
      rateBurst: 1_000_000,
      rateCloseAfter: 3,
      maxUnsentBytes: 64 * 1024 * 1024,
      maxConnections: 100,
      pingIntervalMs: 600_000,
      heartbeatIntervalMs: 600_000,
      allowedOrigins: [],
      maxPendingPublishBytes: budget,
    },
  });
  await gateway.start();
  const port = (gateway.http.server.address() as AddressInfo).port;
  const clients: WsTestClient[] = [];
  for (let i = 0; i < 20; i++)
    clients.push(
      await WsTestClient.connect(
        `ws://127.0.0.1:${port}/v1/ws?token=${await issueToken(DEV_JWT_SECRET, `u${i}`)}`,
      ),
    );
  // one frame through, so the producer is connected and the topic known
  clients[0]!.send({ type: 'message', id: 'warm', to: 'u1', body: { p: 'x' } });
  await clients[0]!.next((f) => f.type === 'accepted');
  await sleep(500);
  const before = heap();
  await snapshot('before');
  proxy.stall();
  const pad = 'x'.repeat(64);
  for (let k = 0; k < N; k++)
    clients[k % clients.length]!.send({
      type: 'message',
      id: `m${k}`,
      to: `u${(k + 1) % 20}`,
      body: { t: k, p: pad },
    });
  const pending = async () =>
    Number(
      /parley_ws_pending_publish_bytes\{[^}]*\} (\d+)/.exec(
        (await gateway.internal.inject('/metrics')).body,
      )?.[1],
    );
  let last = -1;
  for (;;) {
    await sleep(1000);
    const p = await pending();
    if (p === last) break;
    last = p;
  }
  const refused = clients.reduce((n, c) => n + c.ofType('error').length, 0);
  const after = heap();
  await snapshot('after');
  const held = N - refused;
  const dHeap = after.heapUsed - before.heapUsed;
  const dExt = after.external + after.arrayBuffers - before.external - before.arrayBuffers;
  console.log(
    JSON.stringify({
      N,
      refused,
      held,
      pendingBytes: last,
      bytesPerFrameCounted: Math.round(last / held),
      heapDeltaMiB: Math.round(dHeap / 2 ** 20),
      heapPerFrame: Math.round(dHeap / held),
      externalPerFrame: Math.round(dExt / held),
      heapPerCountedByte: Math.round((dHeap / last) * 10) / 10,
    }),
  );
  process.exit(0);
}
void main();
