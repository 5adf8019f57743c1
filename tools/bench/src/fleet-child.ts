import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import os from 'node:os';
import path from 'node:path';
import { Type } from '@sinclair/typebox';
import { KafkaSettingsSchema } from '@parley/kafka';
import { CommonConfig, loadConfig } from '@parley/service-kit';
import { startFleet } from '../../../apps/launcher/src/fleet';

/**
 * What the bench passes through the environment: KAFKA_PACK_EVENTS=false gives the figure before
 * packing; KAFKA_CONSUMER_MIN_CYCLE_MS (off by default) paces the consumers' fetches.
 */
const FleetChildConfig = Type.Object({
  KAFKA_PACK_EVENTS: KafkaSettingsSchema.KAFKA_PACK_EVENTS,
  KAFKA_CONSUMER_MIN_CYCLE_MS: KafkaSettingsSchema.KAFKA_CONSUMER_MIN_CYCLE_MS,
  LOG_LEVEL: Type.Union(CommonConfig.LOG_LEVEL.anyOf, { default: 'warn' }),
  HOST: Type.String({ default: '127.0.0.1' }),
  DATABASE_URL: Type.Optional(Type.String({ description: 'Postgres instead of PGlite' })),
  REDIS_URL: Type.Optional(Type.String({ description: 'Redis instead of the in-process session store' })),
  BENCH_ALLOC_PROFILE: Type.Optional(
    Type.String({ description: 'Write a sampled allocation profile of the main thread here on exit' }),
  ),
});

/**
 * Samples what the main thread allocates, collected objects included (`--heap-prof` keeps only
 * what is alive at exit, which says nothing about garbage). Returns a stop that writes the profile.
 */
async function startAllocationSampling(file: string): Promise<() => Promise<void>> {
  const session = new Session();
  session.connect();
  const post = <R>(method: string, params?: object) =>
    new Promise<R>((resolve, reject) =>
      session.post(method, params, (err, result) => (err ? reject(err) : resolve(result as R))),
    );
  await post('HeapProfiler.enable');
  await post('HeapProfiler.startSampling', {
    samplingInterval: 32 * 1024,
    includeObjectsCollectedByMajorGC: true,
    includeObjectsCollectedByMinorGC: true,
  });
  return async () => {
    const { profile } = await post<{ profile: unknown }>('HeapProfiler.stopSampling');
    writeFileSync(file, JSON.stringify(profile));
    session.disconnect();
  };
}

/**
 * The fleet under test, in its own process (the load generator never shares it): `startFleet`
 * on embedded defaults (embedded broker and PGlite persisting to a temporary data directory, all
 * services in this one process, the ws-gateway on a thread of its own) on free ports. Prints
 * `FLEET_READY {...}` and runs until SIGTERM.
 */
async function main() {
  const config = loadConfig('bench-fleet', FleetChildConfig);
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'parley-bench-'));
  const started = Date.now();
  const fleet = await startFleet({
    ports: 'random',
    logLevel: config.LOG_LEVEL,
    dataDir,
    host: config.HOST,
    packEvents: config.KAFKA_PACK_EVENTS,
    consumerMinCycleMs: config.KAFKA_CONSUMER_MIN_CYCLE_MS,
    databaseUrl: config.DATABASE_URL,
    redisUrl: config.REDIS_URL,
  });
  const ready = {
    urls: fleet.urls,
    ports: fleet.ports,
    jwtSecret: fleet.jwtSecret,
    pid: process.pid,
    startMs: Date.now() - started,
    dataDir,
  };
  const stopSampling = config.BENCH_ALLOC_PROFILE
    ? await startAllocationSampling(config.BENCH_ALLOC_PROFILE)
    : undefined;
  process.stdout.write(`FLEET_READY ${JSON.stringify(ready)}\n`);
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    const deadline = setTimeout(() => process.exit(1), 20_000);
    deadline.unref();
    await stopSampling?.().catch(() => undefined);
    await fleet.stop().catch(() => undefined);
    rmSync(dataDir, { recursive: true, force: true });
    // Let --cpu-prof write its profile: exit normally.
    process.exit(0);
  };
  // The benchmark asks for a full GC on every thread before it reads RSS (idle-connection memory):
  // SIGUSR2.
  process.on('SIGUSR2', () => {
    fleet.collectGarbage();
    fleet.collectGarbage();
  });
  process.once('SIGTERM', () => void stop());
  process.once('SIGINT', () => void stop());
}

main().catch((err) => {
  process.stderr.write(`fleet failed to start: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
