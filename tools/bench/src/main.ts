import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { issueToken } from '@parley/service-kit';
import { devToken } from './cli';
import { ClientPool, type Target } from './clients';
import { openFilesLimit, ProcSampler, RUNS_FROM_BUNDLE, spawnTs, type Child } from './proc';
import { html, table, targetsOf, type BenchReport } from './report';
import { startStandaloneGateway } from './standalone-gateway';
import {
  counterDeltas,
  drain,
  formatStep,
  maxSustainable,
  ramp,
  runFanout,
  runOfflineFanout,
  runIdle,
  runStep,
  scrape,
  scrapeCounters,
} from './scenarios';
import { DEFAULT_CRITERIA, ratioBudget, relayCeilingCaveat, type StepCriteria } from './stats';

const HELP = `npm run bench -- [options]

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

async function main() {
  const { values } = parseArgs({
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
  if (values.help) return void process.stdout.write(HELP);
  const t0 = Date.now();
  const quick = values.quick!;
  const root = path.resolve(__dirname, '../../..');
  const outDir = path.resolve(values.out ?? path.join(root, 'bench/results'));
  mkdirSync(outDir, { recursive: true });
  const runId = new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, '').replace('T', '-');
  const tag = Date.now().toString(36);
  const only = new Set((values.only ?? 'ramp,half,fanout,offline,idle,relay').split(','));
  const conns = Math.max(2, Number(values.conns ?? 1000) & ~1);
  const settings = {
    conns,
    idle: Number(values.idle ?? (quick ? 5000 : 15000)),
    bodyBytes: Number(values['body-bytes'] ?? 64),
    stepMs: Number(values['step-ms'] ?? (quick ? 3000 : 8000)),
    halfMs: quick ? 5000 : 20_000,
    graceMs: quick ? 2000 : 4000,
    refine: quick ? 1 : 3,
    ackEveryMs: 50,
    ackAccepted: values['ack-accepted']!,
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
  const log = (line: string) => process.stdout.write(`${line}\n`);
  const notes: string[] = [];
  const load0 = os.loadavg()[0]!;
  const report: BenchReport = {
    runId,
    startedAt: new Date().toISOString(),
    mode: quick ? 'quick' : 'full',
    machine: {
      cpus: os.cpus().length,
      cpuModel: os.cpus()[0]?.model ?? '?',
      node: process.version,
      memGiB: Math.round(os.totalmem() / 2 ** 30),
    },
    settings,
    notes,
    fleet: { where: '', steps: [], max: { offered: 0, delivered: 0 } },
    targets: [],
    durationS: 0,
  };
  const pairs = (prefix: string, n: number) =>
    Array.from({ length: n }, (_, i) => ({ user: `${prefix}${i}`, partner: `${prefix}${i ^ 1}` }));

  // ---------------- the fleet ----------------
  let fleetChild: Child | undefined;
  let sampler: ProcSampler | undefined;
  let gatewaySampler: ProcSampler | undefined; // the idle scenario's: the process holding the sockets
  let perProcess: Array<{ name: string; sampler: ProcSampler }> = [];
  let requestGc: (() => void) | undefined;
  let fleetTarget: Target;
  let gatewayMetricsUrl: string | undefined;
  let restUrl: string;
  let metricsUrls: string[] = [];
  let persistenceMetricsUrl: string | undefined;
  /** In the default mode: the broker and token secret a standalone ws-gateway joins. */
  let oneProcessFleet: { kafka: string; jwtSecret: string } | undefined;
  const profileDir = path.join(outDir, 'profiles');
  try {
    if (values.ws) {
      const secret = values['jwt-secret'];
      if (!values.rest && (!secret || only.has('fanout') || only.has('offline')))
        throw new Error('--ws needs --rest (tokens without --jwt-secret, and groups, come through REST)');
      restUrl = (values.rest ?? '').replace(/\/$/, '');
      fleetTarget = {
        name: 'fleet',
        wsUrl: values.ws,
        token: secret ? (u) => issueToken(secret, u) : (u) => devToken(restUrl, u),
      };
      if (values.pid) sampler = new ProcSampler(Number(values.pid));
      gatewayMetricsUrl = values['gateway-metrics'];
      report.fleet.where = `external fleet at ${values.ws}${values.pid ? `, sampling pid ${values.pid}` : ', no process sampled (give --pid)'}`;
    } else if (values.processes) {
      log(
        'starting the fleet as separate processes (broker, Redis, one per service; Postgres for the SQL services)...',
      );
      fleetChild = await spawnTs('tools/reliability/src/start-process-fleet.ts', 'PROCESS_FLEET', {
        timeoutMs: 180_000,
        cpus: values['service-cpus'],
      });
      const ready = fleetChild.ready as {
        ws: string;
        rest: string;
        wsInternal: string;
        pids: Record<string, number>;
      };
      perProcess = Object.entries(ready.pids).map(([name, pid]) => ({ name, sampler: new ProcSampler(pid) }));
      sampler = new ProcSampler(Object.values(ready.pids));
      gatewaySampler = new ProcSampler(ready.pids['ws-gateway']);
      restUrl = ready.rest;
      gatewayMetricsUrl = `${ready.wsInternal}/metrics`;
      fleetTarget = { name: 'fleet', wsUrl: ready.ws, token: (u) => devToken(restUrl, u) };
      report.fleet.where =
        'one process per service, the broker and Redis (start-process-fleet), Postgres for the SQL services: CPU and RSS are the sum of those processes, the external Postgres not included; the idle scenario samples the ws-gateway process alone';
      log(`fleet up: ${ready.ws}, pids ${JSON.stringify(ready.pids)}`);
    } else {
      log(
        'starting the fleet (embedded broker + PGlite in a temporary data directory, all services in one child process, the ws-gateway on its own thread)...',
      );
      if (values['cpu-prof'] || values['alloc-prof']) mkdirSync(profileDir, { recursive: true });
      const allocProfile = path.join(profileDir, `alloc-${runId}.heapprofile`);
      fleetChild = await spawnTs('tools/bench/src/fleet-child.ts', 'FLEET_READY', {
        nodeArgs: [
          '--expose-gc',
          ...(values['cpu-prof'] ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : []),
          ...(values['fleet-node-args']?.split(' ').filter(Boolean) ?? []),
        ],
        env: values['alloc-prof'] ? { BENCH_ALLOC_PROFILE: allocProfile } : {},
        timeoutMs: 90_000,
        cpus: values['service-cpus'],
      });
      if (values['alloc-prof']) notes.push(`fleet allocation profile (main thread): ${allocProfile}`);
      if (values['fleet-node-args']) notes.push(`the fleet ran with node ${values['fleet-node-args']}`);
      const ready = fleetChild.ready as {
        urls: { ws: string; rest: string; kafka: string };
        ports: { wsGatewayInternal: number };
        jwtSecret: string;
        startMs: number;
      };
      sampler = new ProcSampler(fleetChild.pid);
      const child = fleetChild;
      requestGc = () => void child.proc.kill('SIGUSR2'); // fleet-child runs a full GC on it
      restUrl = ready.urls.rest;
      gatewayMetricsUrl = `http://127.0.0.1:${ready.ports.wsGatewayInternal}/metrics`;
      persistenceMetricsUrl = `http://127.0.0.1:${(ready.ports as Record<string, number>).persistenceMs}/metrics`;
      metricsUrls = Object.entries(ready.ports as Record<string, number>)
        .filter(([name]) => name !== 'broker' && name !== 'wsGateway')
        .map(([, port]) => `http://127.0.0.1:${port}/metrics`);
      fleetTarget = { name: 'fleet', wsUrl: ready.urls.ws, token: (u) => issueToken(ready.jwtSecret, u) };
      oneProcessFleet = { kafka: ready.urls.kafka, jwtSecret: ready.jwtSecret };
      report.fleet.startMs = ready.startMs;
      report.fleet.where =
        "all services, the embedded Kafka-protocol broker and PGlite run in ONE child process (startFleet), the ws-gateway on a worker thread of its own: CPU and RSS are that process's (all its threads), not per service";
      log(`fleet up in ${ready.startMs} ms (pid ${fleetChild.pid}), ${ready.urls.ws}`);
    }

    const pool = new ClientPool(fleetTarget, {
      bodyBytes: settings.bodyBytes,
      ackEveryMs: settings.ackEveryMs,
      ackAccepted: settings.ackAccepted,
    });
    // The idle scenario opens sockets of its own: alone, it needs neither the pool nor a warm-up
    // (nor a fleet that delivers: a lone ws-gateway and a broker will do).
    if (['ramp', 'half', 'fanout', 'offline'].some((scenario) => only.has(scenario))) {
      log(`connecting ${conns} client sockets to the fleet...`);
      const tc = Date.now();
      await pool.connect(pairs(`b${tag}f`, conns));
      log(`  connected in ${Date.now() - tc} ms`);
      // Warm-up (JIT, consumer groups, session registry): not recorded.
      await runStep(pool, {
        scenario: 'warm-up',
        rate: 500,
        durationMs: 2000,
        graceMs: 3000,
        criteria: settings.criteria,
      });
      await drain(pool, 500, 5000);
    }

    if (only.has('ramp')) {
      log('fleet 1:1 ramp:');
      const before = await scrapeCounters(metricsUrls);
      const processWindows = perProcess.map(({ name, sampler: s }) => ({ name, window: s.window() }));
      report.fleet.steps = await ramp(pool, {
        start: settings.fleetStart,
        max: settings.maxRate,
        durationMs: settings.stepMs,
        graceMs: settings.graceMs,
        refine: settings.refine,
        criteria: settings.criteria,
        sampler,
        log,
        rates: listOf(values.rates),
      });
      report.fleet.max = maxSustainable(report.fleet.steps);
      log(`  fleet max sustainable: ${report.fleet.max.delivered} msg/s`);
      if (processWindows.length > 0) {
        report.fleet.processes = processWindows.map(({ name, window }) => ({ name, ...window.end() }));
        log('  each process over the ramp (cores, RSS):');
        for (const p of report.fleet.processes)
          log(`    ${p.name.padEnd(22)} ${p.cores.toFixed(2)}  ${p.rssMiB} MiB`);
      }
      if (metricsUrls.length > 0) {
        const sent = report.fleet.steps.reduce((n, s) => n + s.sent, 0);
        report.fleet.counters = counterDeltas(before, await scrapeCounters(metricsUrls)).map(
          ([name, delta]) => ({
            name,
            delta,
            perMessage: Math.round((delta / Math.max(1, sent)) * 100) / 100,
          }),
        );
        log(`  service counters during the ramp (per message sent):`);
        for (const c of report.fleet.counters.slice(0, 25))
          log(`    ${c.perMessage.toFixed(2).padStart(7)}  ${c.delta.toString().padStart(9)}  ${c.name}`);
      }
    }
    if (only.has('half') && report.fleet.max.delivered > 0) {
      const rate = Math.max(100, Math.round(report.fleet.max.delivered / 2 / 100) * 100);
      report.fleet.half = await runStep(pool, {
        scenario: 'half max',
        rate,
        durationMs: settings.halfMs,
        graceMs: settings.graceMs,
        criteria: settings.criteria,
        sampler,
      });
      log(formatStep(report.fleet.half));
      await drain(pool, 1000, 10_000);
    }
    if (only.has('idle')) {
      // The target's subject is one gateway process, and the one-process fleet's RSS holds every
      // service: there, a ws-gateway process of its own joins the fleet's broker for this scenario.
      const standalone = oneProcessFleet
        ? await startStandaloneGateway({
            ...oneProcessFleet,
            maxConnections: settings.idle + 10_000,
            cpus: values['service-cpus'],
          }).catch((err: Error) => {
            notes.push(
              `no standalone ws-gateway for the idle scenario (${err.message.split('\n')[0]}): the whole fleet was sampled`,
            );
            return undefined;
          })
        : undefined;
      try {
        const idleSampler = standalone ? new ProcSampler(standalone.child.pid) : (gatewaySampler ?? sampler);
        const onGateway = Boolean(standalone || gatewaySampler || values.pid);
        const subject = standalone
          ? `a ws-gateway process of its own (apps/ws-gateway/src/main.ts) on the fleet's broker${RUNS_FROM_BUNDLE ? '' : ', under tsx (its RSS starts about 25 MiB above a bundle’s)'}`
          : onGateway
            ? 'the ws-gateway process'
            : 'the whole fleet process (gateway + session registry + everything else in it)';
        if (idleSampler) {
          const limit = Math.min(openFilesLimit('self'), openFilesLimit(idleSampler.pids[0]));
          const n = Math.min(settings.idle, limit - conns - 1000);
          const note =
            `${n} idle authenticated sockets from 127.0.0.2-9; RSS of ${subject}, after a settle. ` +
            (n >= 100_000
              ? '100k measured'
              : '100k is projected linearly from this (RSS before + 100,000 × per connection), not measured') +
            (n < settings.idle
              ? `; capped from ${settings.idle} by the open-files limit (ulimit -n = ${limit}, hard limit not raisable here)`
              : '');
          log(`fleet idle connections (${n}):`);
          const metricsUrl = standalone?.metricsUrl ?? gatewayMetricsUrl;
          report.fleet.idle = await runIdle(
            standalone ? { ...fleetTarget, wsUrl: standalone.wsUrl } : fleetTarget,
            {
              n,
              startIndex: conns,
              runId: tag,
              sampler: idleSampler,
              gatewayConnections: metricsUrl ? () => scrape(metricsUrl, 'parley_ws_connections') : undefined,
              settleMs: quick ? 2000 : 4000,
              gc: standalone ? undefined : requestGc,
              note,
              log,
            },
          );
          report.fleet.idle.sampled = onGateway ? 'gateway' : 'fleet';
        } else notes.push('idle scenario skipped: no process to sample (give --pid with --ws/--rest)');
      } finally {
        await standalone?.child.stop();
      }
    }
    const createGroup = async (group: string, owner: string, others: string[]) => {
      const response = await fetch(`${restUrl}/v1/groups`, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${await fleetTarget.token(owner)}`,
          'content-type': 'application/json',
        },
        body: JSON.stringify({ id: group, name: 'bench fan-out', members: others }),
      });
      if (response.status !== 201)
        throw new Error(`POST /v1/groups: ${response.status} ${await response.text()}`);
    };
    if (only.has('fanout')) {
      log(`fleet group fan-out (${settings.fanout.members} members):`);
      const before = await scrapeCounters(metricsUrls);
      report.fleet.fanout = await runFanout(pool, {
        ...settings.fanout,
        createGroup,
        gatewayFrames: gatewayMetricsUrl
          ? () => scrape(gatewayMetricsUrl!, 'parley_ws_delivered_total')
          : undefined,
        sampler,
        log,
        maxWaitMs: quick ? 20_000 : 120_000,
      });
      if (metricsUrls.length > 0) {
        const messages = report.fleet.fanout.messages;
        report.fleet.fanoutCounters = counterDeltas(before, await scrapeCounters(metricsUrls)).map(
          ([name, delta]) => ({
            name,
            delta,
            perMessage: Math.round((delta / Math.max(1, messages)) * 100) / 100,
          }),
        );
        log(`  service counters during the fan-out (per group message):`);
        for (const c of report.fleet.fanoutCounters.slice(0, 20))
          log(`    ${c.perMessage.toFixed(2).padStart(9)}  ${c.delta.toString().padStart(9)}  ${c.name}`);
      }
    }
    if (only.has('offline') && persistenceMetricsUrl) {
      log(`fleet group fan-out to ${settings.offlineFanout.members - 1} members who are offline:`);
      const url = persistenceMetricsUrl;
      report.fleet.offlineFanout = await runOfflineFanout(pool, {
        ...settings.offlineFanout,
        runId: tag,
        createGroup,
        storedCount: () => scrape(url, 'parley_persistence_stored_total'),
        sampler,
        log,
        maxWaitMs: quick ? 30_000 : 120_000,
      });
    } else if (only.has('offline'))
      notes.push(
        'offline fan-out skipped: it reads persistence-ms metrics, known only in the one-process fleet',
      );
    await pool.close();
  } finally {
    if (fleetChild) {
      log('stopping the fleet...');
      await fleetChild.stop();
      const stderr = fleetChild.stderrTail();
      if (stderr.trim()) {
        const file = path.join(outDir, `fleet-stderr-${runId}.log`);
        writeFileSync(file, stderr);
        notes.push(`the fleet's log output (warn level and up, last 20 kB): ${path.relative(root, file)}`);
        log(`  fleet log tail saved to ${path.relative(root, file)}`);
      }
      if (values['cpu-prof'])
        notes.push(
          `fleet CPU profiles written to ${profileDir}: one per thread (main, and the ws-gateway's)`,
        );
    }
  }

  // ---------------- the relay ----------------
  if (only.has('relay')) {
    log('starting the raw ws relay (its own process)...');
    const relay = await spawnTs('tools/bench/src/relay.ts', 'RELAY_READY', {
      timeoutMs: 30_000,
      cpus: values['service-cpus'],
    });
    try {
      const relaySampler = new ProcSampler(relay.pid);
      const target: Target = {
        name: 'relay',
        wsUrl: relay.ready.url as string,
        token: (u) => issueToken('relay-does-not-verify-tokens-0123456789', u),
      };
      const pool = new ClientPool(target, {
        bodyBytes: settings.bodyBytes,
        ackEveryMs: settings.ackEveryMs,
        ackAccepted: settings.ackAccepted,
      });
      await pool.connect(pairs(`b${tag}r`, conns));
      await runStep(pool, {
        scenario: 'warm-up',
        rate: 2000,
        durationMs: 1000,
        graceMs: 2000,
        criteria: settings.criteria,
      });
      await drain(pool, 300, 3000);
      log('relay 1:1 ramp:');
      const steps = only.has('ramp')
        ? await ramp(pool, {
            start: settings.relayStart,
            max: settings.maxRate,
            durationMs: settings.stepMs,
            graceMs: settings.graceMs,
            refine: settings.refine,
            criteria: settings.criteria,
            sampler: relaySampler,
            log,
            rates: listOf(values['relay-rates']),
          })
        : [];
      report.relay = { steps, max: maxSustainable(steps) };
      log(`  relay max sustainable: ${report.relay.max.delivered} msg/s`);
      if (report.fleet.half) {
        // The relay at the fleet's half-max rate: the latency floor of these clients on this box.
        report.relay.half = await runStep(pool, {
          scenario: 'fleet half',
          rate: report.fleet.half.offered,
          durationMs: Math.min(settings.halfMs, 5000),
          graceMs: settings.graceMs,
          criteria: settings.criteria,
          sampler: relaySampler,
        });
        log(formatStep(report.relay.half));
      }
      if (only.has('fanout')) {
        report.relay.fanout = await runFanout(pool, {
          ...settings.fanout,
          createGroup: async (group, owner, others) => {
            const client = pool.clients.find((c) => c.user === owner)!;
            pool.sendRaw(client, {
              type: 'group',
              id: `create-${group}`,
              op: 'create',
              group,
              name: 'bench',
              members: others,
            });
          },
          sampler: relaySampler,
          log,
          maxWaitMs: quick ? 20_000 : 60_000,
        });
      }
      await pool.close();
    } finally {
      await relay.stop();
    }
  }

  if (report.relay && report.relay.max.delivered > 0 && report.fleet.max.delivered > 0) {
    report.ratio = report.fleet.max.delivered / report.relay.max.delivered;
    if (only.has('ramp'))
      report.ratioCaveat = relayCeilingCaveat(report.relay.steps, report.relay.max, os.cpus().length);
    const fleetMaxStep = report.fleet.steps.find(
      (s) => s.sustainable && s.deliveredPerS === report.fleet.max.delivered,
    );
    const budget =
      !values['service-cpus'] && !values.ws
        ? ratioBudget(fleetMaxStep, report.relay.max.delivered, os.cpus().length)
        : undefined;
    if (budget) notes.push(`the box shared by the fleet and the load generator: ${budget}`);
  }
  const genBound = [...report.fleet.steps, ...(report.relay?.steps ?? [])].filter(
    (s) => !s.sustainable && (s.generatorCpu ?? 0) > 0.9,
  );
  if (genBound.length > 0)
    notes.push(
      `load generator near one full core (${genBound.map((s) => `${s.target}@${s.offered}: ${s.generatorCpu}`).join(', ')}): ${values['service-cpus'] ? 'its one thread' : 'the 2-core box is shared by the service and the clients, so the failing step'} may be client-bound, which understates the ceiling (mostly the relay's)`,
    );
  // The machine's busy cores beyond the service's and the generator's: other work on the box.
  const everyStep = [
    ...report.fleet.steps,
    ...(report.fleet.half ? [report.fleet.half] : []),
    ...(report.relay?.steps ?? []),
  ];
  const crowded = everyStep
    .map((s) => ({ s, other: (s.boxCpu ?? 0) - (s.cpu?.cores ?? Infinity) - (s.generatorCpu ?? 0) }))
    .filter(({ other }) => other > 0.3);
  if (crowded.length > 0)
    notes.push(
      `other work on this machine took cores from the run (machine CPU minus the service's and the generator's): ${crowded.map(({ s, other }) => `${s.target}@${s.offered} ${other.toFixed(2)}`).join(', ')}; those steps' figures are skewed`,
    );
  const lagging = everyStep.filter((s) => (s.sendLagMs ?? 0) > 10);
  notes.push(
    `latency is measured from each message's intended send time on the open-loop schedule (no coordinated omission): when the generator ran late, its lateness is in the latency` +
      (lagging.length > 0
        ? `; it ran more than 10 ms late in ${lagging.map((s) => `${s.target}@${s.offered} (${s.sendLagMs} ms)`).join(', ')}`
        : ''),
  );
  notes.push(
    `sustainable = delivered within the step's window >= ${settings.criteria.minDeliveredRatio * 100}% of sent and p99 <= ${settings.criteria.maxP99Ms} ms; delivered/s counts message frames (not receipts, not duplicates) received during the window`,
  );
  notes.push(
    `clients ack every deliverable, batched every ${settings.ackEveryMs} ms per socket; the fleet's per-connection rate limit (200/s, burst 400 in startFleet) is respected by spreading load over ${conns} sockets (${conns / 2} pairs, each user sends to its partner)`,
  );
  if (values['service-cpus'])
    notes.push(
      `the fleet and the relay ran on cores ${values['service-cpus']} alone (taskset); the load generator on the cores it was given`,
    );
  notes.push(
    `machine load average (1 min) at start ${load0.toFixed(2)}, at end ${os.loadavg()[0]!.toFixed(2)} on ${os.cpus().length} cores: other work on this box skews every figure`,
  );
  report.targets = targetsOf(report);
  report.durationS = Math.round((Date.now() - t0) / 1000);

  const base = path.join(outDir, `bench-${runId}`);
  writeFileSync(`${base}.json`, JSON.stringify(report, null, 2));
  writeFileSync(`${base}.html`, html(report));
  log('');
  log(table(report));
  log('');
  log(`report: ${path.relative(process.cwd(), `${base}.html`)} (+ .json), ${report.durationS} s`);
}

function listOf(text: string | undefined): number[] | undefined {
  return text
    ? text
        .split(',')
        .map(Number)
        .filter((n) => n > 0)
    : undefined;
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`bench failed: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  },
);
