import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { BenchOptions } from './options';
import { html, table, targetsOf, type BenchReport } from './report';
import { ratioBudget, relayCeilingCaveat } from './stats';

/** One bench run: its options, the report it fills, and its log. */
export interface BenchRun {
  options: BenchOptions;
  runId: string;
  /** In the run's user names: runs against one long-lived fleet do not meet each other's users. */
  tag: string;
  report: BenchReport;
  log: (line: string) => void;
  startedAt: number;
  loadAtStart: number;
}

export function newRun(options: BenchOptions): BenchRun {
  mkdirSync(options.outDir, { recursive: true });
  const runId = new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, '').replace('T', '-');
  return {
    options,
    runId,
    tag: Date.now().toString(36),
    log: (line: string) => process.stdout.write(`${line}\n`),
    startedAt: Date.now(),
    loadAtStart: os.loadavg()[0]!,
    report: {
      runId,
      startedAt: new Date().toISOString(),
      mode: options.quick ? 'quick' : 'full',
      machine: {
        cpus: os.cpus().length,
        cpuModel: os.cpus()[0]?.model ?? '?',
        node: process.version,
        memGiB: Math.round(os.totalmem() / 2 ** 30),
      },
      settings: options.settings,
      notes: [],
      fleet: { where: '', steps: [], max: { offered: 0, delivered: 0 } },
      targets: [],
      durationS: 0,
    },
  };
}

/** Users in pairs, each sending to its partner. */
export function pairs(prefix: string, n: number) {
  return Array.from({ length: n }, (_, i) => ({ user: `${prefix}${i}`, partner: `${prefix}${i ^ 1}` }));
}

/** The ratio, and the notes that say how far each figure can be trusted. */
export function concludeRun({ options, report, loadAtStart }: BenchRun): void {
  const { settings } = options;
  const notes = report.notes;
  if (report.relay && report.relay.max.delivered > 0 && report.fleet.max.delivered > 0) {
    report.ratio = report.fleet.max.delivered / report.relay.max.delivered;
    if (options.only.has('ramp'))
      report.ratioCaveat = relayCeilingCaveat(report.relay.steps, report.relay.max, os.cpus().length);
    const fleetMaxStep = report.fleet.steps.find(
      (s) => s.sustainable && s.deliveredPerS === report.fleet.max.delivered,
    );
    const budget =
      !options.serviceCpus && !options.external
        ? ratioBudget(fleetMaxStep, report.relay.max.delivered, os.cpus().length)
        : undefined;
    if (budget) notes.push(`the box shared by the fleet and the load generator: ${budget}`);
  }
  const genBound = [...report.fleet.steps, ...(report.relay?.steps ?? [])].filter(
    (s) => !s.sustainable && (s.generatorCpu ?? 0) > 0.9,
  );
  if (genBound.length > 0)
    notes.push(
      `load generator near one full core (${genBound.map((s) => `${s.target}@${s.offered}: ${s.generatorCpu}`).join(', ')}): ${options.serviceCpus ? 'its one thread' : 'the 2-core box is shared by the service and the clients, so the failing step'} may be client-bound, which understates the ceiling (mostly the relay's)`,
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
    `clients ack every deliverable, batched every ${settings.ackEveryMs} ms per socket; the fleet's per-connection rate limit (200/s, burst 400 in startFleet) is respected by spreading load over ${settings.conns} sockets (${settings.conns / 2} pairs, each user sends to its partner)`,
  );
  if (options.serviceCpus)
    notes.push(
      `the fleet and the relay ran on cores ${options.serviceCpus} alone (taskset); the load generator on the cores it was given`,
    );
  notes.push(
    `machine load average (1 min) at start ${loadAtStart.toFixed(2)}, at end ${os.loadavg()[0]!.toFixed(2)} on ${os.cpus().length} cores: other work on this box skews every figure`,
  );
}

/** bench-<run>.json and .html under the results directory, and the table on stdout. */
export function writeReport({ options, report, runId, log, startedAt }: BenchRun): void {
  report.targets = targetsOf(report);
  report.durationS = Math.round((Date.now() - startedAt) / 1000);
  const base = path.join(options.outDir, `bench-${runId}`);
  writeFileSync(`${base}.json`, JSON.stringify(report, null, 2));
  writeFileSync(`${base}.html`, html(report));
  log('');
  log(table(report));
  log('');
  log(`report: ${path.relative(process.cwd(), `${base}.html`)} (+ .json), ${report.durationS} s`);
}
