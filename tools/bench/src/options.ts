import path from 'node:path';
import { parseArgs } from 'node:util';
import { DEFAULT_CRITERIA, type StepCriteria } from './stats';

export const HELP = `npm run bench -- [options]

Starts the fleet (embedded defaults, its own process) and a raw-ws relay (its own process), drives
both from this process with the same WebSocket clients, prints a table and writes
bench/results/bench-<run>.{html,json}.

  --quick              short run (< 3 min): 3 s steps, 5,000 idle sockets, 100 fan-out messages,
                       10 messages to 999 offline members
  --processes          run the fleet as separate processes, as in production (one per service, the
                       broker, a Redis; needs Postgres and redis-server) and sample each of them
  --ws URL --rest URL  target a running fleet instead (tokens: --jwt-secret, else POST /v1/dev/token)
  --pid N              sample CPU/RSS of this process (with --ws/--rest)
  --gateway-metrics URL  the targeted ws-gateway's /metrics (with --ws): its own connection count
  --jwt-secret S       HS256 secret for tokens
  --conns N            1:1 client sockets, in pairs (default 1000; also the fan-out group)
  --idle N             idle sockets for the memory scenario (default 5000 quick, 15000 full; capped by ulimit -n),
                       held by a ws-gateway process of its own that joins the fleet's broker
  --body-bytes N       padding in each message body (default 64)
  --step-ms N          duration of a ramp step (default 3000 quick, 8000 full)
  --p99-ms N           sustainable bound on p99 (default ${DEFAULT_CRITERIA.maxP99Ms})
  --rates LIST         explicit fleet 1:1 rates instead of the ladder (e.g. 50,200,1000), all run
  --relay-rates LIST   the same for the relay
  --only LIST          comma list of: ramp,half,fanout,offline,idle,relay (default all)
  --ack-accepted       also ack "accepted" frames (they carry a mid; the protocol's literal reading)
  --cpu-prof           run the fleet under node --cpu-prof (profiles in bench/results/profiles)
  --alloc-prof         sample what the fleet's main thread allocates, garbage included
                       (bench/results/profiles/alloc-<run>.heapprofile; summarize with alloc-top.ts)
  --service-cpus LIST  run the fleet and the relay on these cores only (taskset -c, e.g. 0,1: a
                       2-core service on a bigger machine; run the bench itself on the others)
  --fleet-node-args S  extra node options for the one-process fleet, space-separated (e.g.
                       "--single-threaded-gc"): runtime flags compared in the same conditions
  --out DIR            results directory (default bench/results)
`;

export interface BenchOptions {
  help: boolean;
  quick: boolean;
  /** The fleet as one process per service (--processes). */
  processes: boolean;
  /** A running fleet to target instead of starting one (--ws, --rest, --pid, --gateway-metrics, --jwt-secret). */
  external?: { ws: string; rest?: string; pid?: number; gatewayMetrics?: string; jwtSecret?: string };
  only: Set<string>;
  rates?: number[];
  relayRates?: number[];
  cpuProf: boolean;
  allocProf: boolean;
  serviceCpus?: string;
  fleetNodeArgs?: string;
  /** The repository's root, and where results go. */
  root: string;
  outDir: string;
  settings: BenchSettings;
}

export type BenchSettings = ReturnType<typeof settingsOf>;

export function benchOptions(args: string[]): BenchOptions {
  const { values } = parseArgs({
    args,
    options: {
      quick: { type: 'boolean', default: false },
      processes: { type: 'boolean', default: false },
      ws: { type: 'string' },
      rest: { type: 'string' },
      pid: { type: 'string' },
      'gateway-metrics': { type: 'string' },
      'jwt-secret': { type: 'string' },
      conns: { type: 'string' },
      idle: { type: 'string' },
      'body-bytes': { type: 'string' },
      'step-ms': { type: 'string' },
      'p99-ms': { type: 'string' },
      only: { type: 'string' },
      rates: { type: 'string' },
      'relay-rates': { type: 'string' },
      'cpu-prof': { type: 'boolean', default: false },
      'alloc-prof': { type: 'boolean', default: false },
      'ack-accepted': { type: 'boolean', default: false },
      'service-cpus': { type: 'string' },
      'fleet-node-args': { type: 'string' },
      out: { type: 'string' },
      help: { type: 'boolean', default: false },
    },
  });
  const quick = values.quick!;
  const root = path.resolve(__dirname, '../../..');
  return {
    help: values.help!,
    quick,
    processes: values.processes!,
    external: values.ws
      ? {
          ws: values.ws,
          rest: values.rest,
          pid: values.pid === undefined ? undefined : Number(values.pid),
          gatewayMetrics: values['gateway-metrics'],
          jwtSecret: values['jwt-secret'],
        }
      : undefined,
    only: new Set((values.only ?? 'ramp,half,fanout,offline,idle,relay').split(',')),
    rates: listOf(values.rates),
    relayRates: listOf(values['relay-rates']),
    cpuProf: values['cpu-prof']!,
    allocProf: values['alloc-prof']!,
    serviceCpus: values['service-cpus'],
    fleetNodeArgs: values['fleet-node-args'],
    root,
    outDir: path.resolve(values.out ?? path.join(root, 'bench/results')),
    settings: settingsOf(values, quick),
  };
}

/** What the scenarios run with, recorded in the report. */
function settingsOf(values: Record<string, string | boolean | undefined>, quick: boolean) {
  const conns = Math.max(2, Number(values.conns ?? 1000) & ~1);
  return {
    conns,
    idle: Number(values.idle ?? (quick ? 5000 : 15000)),
    bodyBytes: Number(values['body-bytes'] ?? 64),
    stepMs: Number(values['step-ms'] ?? (quick ? 3000 : 8000)),
    halfMs: quick ? 5000 : 20_000,
    graceMs: quick ? 2000 : 4000,
    refine: quick ? 1 : 3,
    ackEveryMs: 50,
    ackAccepted: values['ack-accepted'] === true,
    fleetStart: 1000,
    relayStart: quick ? 8000 : 2000,
    maxRate: 300_000,
    fanout: { members: Math.min(1000, conns), senders: 10, perSender: quick ? 10 : 40, ratePerSender: 100 },
    offlineFanout: { members: 1000, messages: quick ? 10 : 40, ratePerSender: 100 },
    criteria: {
      ...DEFAULT_CRITERIA,
      maxP99Ms: Number(values['p99-ms'] ?? DEFAULT_CRITERIA.maxP99Ms),
    } as StepCriteria,
  };
}

function listOf(text: string | undefined): number[] | undefined {
  return text
    ? text
        .split(',')
        .map(Number)
        .filter((n) => n > 0)
    : undefined;
}
