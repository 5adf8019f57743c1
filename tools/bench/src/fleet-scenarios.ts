import { ClientPool } from './clients';
import type { FleetUnderTest } from './fleet-under-test';
import { openFilesLimit, ProcSampler, RUNS_FROM_BUNDLE } from './proc';
import type { BenchReport } from './report';
import { pairs, type BenchRun } from './run';
import {
  counterDeltas,
  drain,
  formatStep,
  maxSustainable,
  ramp,
  runFanout,
  runIdle,
  runOfflineFanout,
  runStep,
  scrape,
  scrapeCounters,
} from './scenarios';
import { startStandaloneGateway } from './standalone-gateway';

/** The fleet's scenarios, in order: 1:1 ramp, half max, idle sockets, group fan-out, offline fan-out. */
export async function runFleetScenarios(fleet: FleetUnderTest, run: BenchRun): Promise<void> {
  const { options } = run;
  const { settings, only } = options;
  const pool = new ClientPool(fleet.target, settings);
  // The idle scenario opens sockets of its own: alone, it needs neither the pool nor a warm-up
  // (nor a fleet that delivers: a lone ws-gateway and a broker will do).
  if (['ramp', 'half', 'fanout', 'offline'].some((scenario) => only.has(scenario))) await warmUp(pool, run);
  if (only.has('ramp')) await fleetRamp(pool, fleet, run);
  if (only.has('half') && run.report.fleet.max.delivered > 0) await fleetHalfMax(pool, fleet, run);
  if (only.has('idle')) await fleetIdle(fleet, run);
  if (only.has('fanout')) await fleetFanout(pool, fleet, run);
  if (only.has('offline')) await fleetOfflineFanout(pool, fleet, run);
  await pool.close();
}

async function warmUp(pool: ClientPool, { options, log, tag }: BenchRun): Promise<void> {
  const { conns, criteria } = options.settings;
  log(`connecting ${conns} client sockets to the fleet...`);
  const startedAt = Date.now();
  await pool.connect(pairs(`b${tag}f`, conns));
  log(`  connected in ${Date.now() - startedAt} ms`);
  // Warm-up (JIT, consumer groups, session registry): not recorded.
  await runStep(pool, { scenario: 'warm-up', rate: 500, durationMs: 2000, graceMs: 3000, criteria });
  await drain(pool, 500, 5000);
}

async function fleetRamp(pool: ClientPool, fleet: FleetUnderTest, { options, report, log }: BenchRun) {
  const { settings } = options;
  log('fleet 1:1 ramp:');
  const before = await scrapeCounters(fleet.metricsUrls);
  const processWindows = fleet.perProcess.map(({ name, sampler }) => ({ name, window: sampler.window() }));
  report.fleet.steps = await ramp(pool, {
    start: settings.fleetStart,
    max: settings.maxRate,
    durationMs: settings.stepMs,
    graceMs: settings.graceMs,
    refine: settings.refine,
    criteria: settings.criteria,
    sampler: fleet.sampler,
    log,
    rates: options.rates,
  });
  report.fleet.max = maxSustainable(report.fleet.steps);
  log(`  fleet max sustainable: ${report.fleet.max.delivered} msg/s`);
  if (processWindows.length > 0) {
    report.fleet.processes = processWindows.map(({ name, window }) => ({ name, ...window.end() }));
    log('  each process over the ramp (cores, RSS):');
    for (const p of report.fleet.processes)
      log(`    ${p.name.padEnd(22)} ${p.cores.toFixed(2)}  ${p.rssMiB} MiB`);
  }
  if (fleet.metricsUrls.length > 0) {
    const sent = report.fleet.steps.reduce((n, s) => n + s.sent, 0);
    report.fleet.counters = await countersPer(before, fleet.metricsUrls, sent);
    log(`  service counters during the ramp (per message sent):`);
    for (const c of report.fleet.counters.slice(0, 25))
      log(`    ${c.perMessage.toFixed(2).padStart(7)}  ${c.delta.toString().padStart(9)}  ${c.name}`);
  }
}

async function fleetHalfMax(pool: ClientPool, fleet: FleetUnderTest, { options, report, log }: BenchRun) {
  const { settings } = options;
  const rate = Math.max(100, Math.round(report.fleet.max.delivered / 2 / 100) * 100);
  if (fleet.sampler) {
    const idle = await fleet.sampler.waitForIdle(0.25, 1000, 30_000);
    log(`  the fleet idled at ${idle.cores} cores after ${idle.waitedMs} ms`);
  }
  report.fleet.half = await runStep(pool, {
    scenario: 'half max',
    rate,
    durationMs: settings.halfMs,
    graceMs: settings.graceMs,
    criteria: settings.criteria,
    sampler: fleet.sampler,
  });
  log(formatStep(report.fleet.half));
  await drain(pool, 1000, 10_000);
}

/**
 * The target's subject is one gateway process, and the one-process fleet's RSS holds every
 * service: there, a ws-gateway process of its own joins the fleet's broker for this scenario.
 */
async function fleetIdle(fleet: FleetUnderTest, { options, report, log, tag }: BenchRun) {
  const { settings, quick } = options;
  const standalone = fleet.joinable
    ? await startStandaloneGateway({
        ...fleet.joinable,
        maxConnections: settings.idle + 10_000,
        cpus: options.serviceCpus,
      }).catch((err: Error) => {
        report.notes.push(
          `no standalone ws-gateway for the idle scenario (${err.message.split('\n')[0]}): the whole fleet was sampled`,
        );
        return undefined;
      })
    : undefined;
  try {
    const idleSampler = standalone
      ? new ProcSampler(standalone.child.pid)
      : (fleet.gatewaySampler ?? fleet.sampler);
    if (!idleSampler)
      return void report.notes.push(
        'idle scenario skipped: no process to sample (give --pid with --ws/--rest)',
      );
    const onGateway = Boolean(standalone || fleet.gatewaySampler || options.external?.pid);
    const subject = standalone
      ? `a ws-gateway process of its own (apps/ws-gateway/src/main.ts) on the fleet's broker${RUNS_FROM_BUNDLE ? '' : ', under tsx (its RSS starts about 25 MiB above a bundle’s)'}`
      : onGateway
        ? 'the ws-gateway process'
        : 'the whole fleet process (gateway + session registry + everything else in it)';
    const limit = Math.min(openFilesLimit('self'), openFilesLimit(idleSampler.pids[0]));
    const n = Math.min(settings.idle, limit - settings.conns - 1000);
    const note =
      `${n} idle authenticated sockets from 127.0.0.2-9; RSS of ${subject}, after a settle. ` +
      (n >= 100_000
        ? '100k measured'
        : '100k is projected linearly from this (RSS before + 100,000 × per connection), not measured') +
      (n < settings.idle
        ? `; capped from ${settings.idle} by the open-files limit (ulimit -n = ${limit}, hard limit not raisable here)`
        : '');
    log(`fleet idle connections (${n}):`);
    const metricsUrl = standalone?.metricsUrl ?? fleet.gatewayMetricsUrl;
    report.fleet.idle = await runIdle(
      standalone ? { ...fleet.target, wsUrl: standalone.wsUrl } : fleet.target,
      {
        n,
        startIndex: settings.conns,
        runId: tag,
        sampler: idleSampler,
        gatewayConnections: metricsUrl ? () => scrape(metricsUrl, 'parley_ws_connections') : undefined,
        settleMs: quick ? 2000 : 4000,
        gc: standalone ? undefined : fleet.requestGc,
        note,
        log,
      },
    );
    report.fleet.idle.sampled = onGateway ? 'gateway' : 'fleet';
  } finally {
    await standalone?.child.stop();
  }
}

async function fleetFanout(pool: ClientPool, fleet: FleetUnderTest, { options, report, log }: BenchRun) {
  const { settings, quick } = options;
  log(`fleet group fan-out (${settings.fanout.members} members):`);
  const before = await scrapeCounters(fleet.metricsUrls);
  const gatewayMetricsUrl = fleet.gatewayMetricsUrl;
  report.fleet.fanout = await runFanout(pool, {
    ...settings.fanout,
    createGroup: groupCreator(fleet),
    gatewayFrames: gatewayMetricsUrl
      ? () => scrape(gatewayMetricsUrl, 'parley_ws_delivered_total')
      : undefined,
    sampler: fleet.sampler,
    log,
    maxWaitMs: quick ? 20_000 : 120_000,
  });
  if (fleet.metricsUrls.length > 0) {
    report.fleet.fanoutCounters = await countersPer(before, fleet.metricsUrls, report.fleet.fanout.messages);
    log(`  service counters during the fan-out (per group message):`);
    for (const c of report.fleet.fanoutCounters.slice(0, 20))
      log(`    ${c.perMessage.toFixed(2).padStart(9)}  ${c.delta.toString().padStart(9)}  ${c.name}`);
  }
}

async function fleetOfflineFanout(
  pool: ClientPool,
  fleet: FleetUnderTest,
  { options, report, log, tag }: BenchRun,
) {
  const { settings, quick } = options;
  const url = fleet.persistenceMetricsUrl;
  if (!url)
    return void report.notes.push(
      'offline fan-out skipped: it reads persistence-ms metrics, known only in the one-process fleet',
    );
  log(`fleet group fan-out to ${settings.offlineFanout.members - 1} members who are offline:`);
  report.fleet.offlineFanout = await runOfflineFanout(pool, {
    ...settings.offlineFanout,
    runId: tag,
    createGroup: groupCreator(fleet),
    storedCount: () => scrape(url, 'parley_persistence_stored_total'),
    sampler: fleet.sampler,
    log,
    maxWaitMs: quick ? 30_000 : 120_000,
  });
}

/** Creates a group through the fleet's REST gateway, as its owner. */
function groupCreator(fleet: FleetUnderTest) {
  return async (group: string, owner: string, others: string[]) => {
    const response = await fetch(`${fleet.restUrl}/v1/groups`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${await fleet.target.token(owner)}`,
        'content-type': 'application/json',
      },
      body: JSON.stringify({ id: group, name: 'bench fan-out', members: others }),
    });
    if (response.status !== 201)
      throw new Error(`POST /v1/groups: ${response.status} ${await response.text()}`);
  };
}

/** How far each service counter moved since `before`, and by how much per message of `messages`. */
async function countersPer(
  before: Map<string, number>,
  urls: string[],
  messages: number,
): Promise<NonNullable<BenchReport['fleet']['counters']>> {
  return counterDeltas(before, await scrapeCounters(urls)).map(([name, delta]) => ({
    name,
    delta,
    perMessage: Math.round((delta / Math.max(1, messages)) * 100) / 100,
  }));
}
