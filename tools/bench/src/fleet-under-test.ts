import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { issueToken } from '@parley/service-kit';
import { devToken } from './cli';
import type { Target } from './clients';
import type { BenchOptions } from './options';
import { ProcSampler, spawnTs, type Child } from './proc';
import type { BenchRun } from './run';

/** The fleet the scenarios drive: how to reach it, and what of it can be sampled and scraped. */
export interface FleetUnderTest {
  target: Target;
  restUrl: string;
  /** Where it runs, for the report. */
  where: string;
  startMs?: number;
  /** Its CPU and RSS: all its processes together. */
  sampler?: ProcSampler;
  /** With --processes: the ws-gateway process alone (the idle scenario's subject). */
  gatewaySampler?: ProcSampler;
  /** With --processes: each process, sampled over the ramp. */
  perProcess: Array<{ name: string; sampler: ProcSampler }>;
  /** A full GC in the fleet (before the idle scenario's reading), where it can be asked for. */
  requestGc?: () => void;
  gatewayMetricsUrl?: string;
  /** Every service's /metrics but the gateway's: their counters over the ramp and the fan-out. */
  metricsUrls: string[];
  persistenceMetricsUrl?: string;
  /** The one-process fleet's broker and token secret, which a standalone ws-gateway joins. */
  joinable?: { kafka: string; jwtSecret: string };
  /** The process the bench started, stopped at the end. */
  child?: Child;
}

export function startFleetUnderTest(run: BenchRun): Promise<FleetUnderTest> {
  const { options } = run;
  if (options.external) return Promise.resolve(externalFleet(options.external, options));
  return options.processes ? processFleet(run) : oneProcessFleet(run);
}

/** Stops what the bench started, keeping the tail of its log and saying where the profiles are. */
export async function stopFleetUnderTest(fleet: FleetUnderTest, run: BenchRun): Promise<void> {
  const { child } = fleet;
  if (!child) return;
  const { options, log, runId, report } = run;
  log('stopping the fleet...');
  await child.stop();
  const stderr = child.stderrTail();
  if (stderr.trim()) {
    const file = path.join(options.outDir, `fleet-stderr-${runId}.log`);
    writeFileSync(file, stderr);
    report.notes.push(
      `the fleet's log output (warn level and up, last 20 kB): ${path.relative(options.root, file)}`,
    );
    log(`  fleet log tail saved to ${path.relative(options.root, file)}`);
  }
  if (options.cpuProf)
    report.notes.push(
      `fleet CPU profiles written to ${profileDir(options)}: one per thread (main, and the ws-gateway's)`,
    );
}

function externalFleet(
  external: NonNullable<BenchOptions['external']>,
  options: BenchOptions,
): FleetUnderTest {
  const secret = external.jwtSecret;
  if (!external.rest && (!secret || options.only.has('fanout') || options.only.has('offline')))
    throw new Error('--ws needs --rest (tokens without --jwt-secret, and groups, come through REST)');
  const restUrl = (external.rest ?? '').replace(/\/$/, '');
  return {
    target: {
      name: 'fleet',
      wsUrl: external.ws,
      token: secret ? (u) => issueToken(secret, u) : (u) => devToken(restUrl, u),
    },
    restUrl,
    sampler: external.pid ? new ProcSampler(external.pid) : undefined,
    perProcess: [],
    gatewayMetricsUrl: external.gatewayMetrics,
    metricsUrls: [],
    where: `external fleet at ${external.ws}${external.pid ? `, sampling pid ${external.pid}` : ', no process sampled (give --pid)'}`,
  };
}

async function processFleet({ options, log }: BenchRun): Promise<FleetUnderTest> {
  log(
    'starting the fleet as separate processes (broker, Redis, one per service; Postgres for the SQL services)...',
  );
  const child = await spawnTs('tools/reliability/src/start-process-fleet.ts', 'PROCESS_FLEET', {
    timeoutMs: 180_000,
    cpus: options.serviceCpus,
  });
  const ready = child.ready as { ws: string; rest: string; wsInternal: string; pids: Record<string, number> };
  log(`fleet up: ${ready.ws}, pids ${JSON.stringify(ready.pids)}`);
  return {
    child,
    target: { name: 'fleet', wsUrl: ready.ws, token: (u) => devToken(ready.rest, u) },
    restUrl: ready.rest,
    perProcess: Object.entries(ready.pids).map(([name, pid]) => ({ name, sampler: new ProcSampler(pid) })),
    sampler: new ProcSampler(Object.values(ready.pids)),
    gatewaySampler: new ProcSampler(ready.pids['ws-gateway']),
    gatewayMetricsUrl: `${ready.wsInternal}/metrics`,
    metricsUrls: [],
    where:
      'one process per service, the broker and Redis (start-process-fleet), Postgres for the SQL services: CPU and RSS are the sum of those processes, the external Postgres not included; the idle scenario samples the ws-gateway process alone',
  };
}

async function oneProcessFleet({ options, log, runId, report }: BenchRun): Promise<FleetUnderTest> {
  log(
    'starting the fleet (embedded broker + PGlite in a temporary data directory, all services in one child process, the ws-gateway on its own thread)...',
  );
  const profiles = profileDir(options);
  if (options.cpuProf || options.allocProf) mkdirSync(profiles, { recursive: true });
  const allocProfile = path.join(profiles, `alloc-${runId}.heapprofile`);
  const child = await spawnTs('tools/bench/src/fleet-child.ts', 'FLEET_READY', {
    nodeArgs: [
      '--expose-gc',
      ...(options.cpuProf ? ['--cpu-prof', '--cpu-prof-dir', profiles] : []),
      ...(options.fleetNodeArgs?.split(' ').filter(Boolean) ?? []),
    ],
    env: options.allocProf ? { BENCH_ALLOC_PROFILE: allocProfile } : {},
    timeoutMs: 90_000,
    cpus: options.serviceCpus,
  });
  if (options.allocProf) report.notes.push(`fleet allocation profile (main thread): ${allocProfile}`);
  if (options.fleetNodeArgs) report.notes.push(`the fleet ran with node ${options.fleetNodeArgs}`);
  const ready = child.ready as {
    urls: { ws: string; rest: string; kafka: string };
    ports: Record<string, number>;
    jwtSecret: string;
    startMs: number;
  };
  log(`fleet up in ${ready.startMs} ms (pid ${child.pid}), ${ready.urls.ws}`);
  const metricsOf = (port: number | undefined) => `http://127.0.0.1:${port}/metrics`;
  return {
    child,
    target: { name: 'fleet', wsUrl: ready.urls.ws, token: (u) => issueToken(ready.jwtSecret, u) },
    restUrl: ready.urls.rest,
    sampler: new ProcSampler(child.pid),
    perProcess: [],
    requestGc: () => void child.proc.kill('SIGUSR2'), // fleet-child runs a full GC on it
    gatewayMetricsUrl: metricsOf(ready.ports.wsGatewayInternal),
    persistenceMetricsUrl: metricsOf(ready.ports.persistenceMs),
    metricsUrls: Object.entries(ready.ports)
      .filter(([name]) => name !== 'broker' && name !== 'wsGateway')
      .map(([, port]) => metricsOf(port)),
    joinable: { kafka: ready.urls.kafka, jwtSecret: ready.jwtSecret },
    startMs: ready.startMs,
    where:
      "all services, the embedded Kafka-protocol broker and PGlite run in ONE child process (startFleet), the ws-gateway on a worker thread of its own: CPU and RSS are that process's (all its threads), not per service",
  };
}

function profileDir(options: BenchOptions): string {
  return path.join(options.outDir, 'profiles');
}
