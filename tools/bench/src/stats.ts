import * as hdr from 'hdr-histogram-js';

/** Pure helpers of the benchmark: rate ladders, step verdicts, histogram summaries. */

export type Histogram = hdr.Histogram;

/** Latencies are recorded in microseconds, 1 µs to 2 min, 3 significant digits. */
export function newHistogram(): Histogram {
  return hdr.build({
    lowestDiscernibleValue: 1,
    highestTrackableValue: 120_000_000,
    numberOfSignificantValueDigits: 3,
    bitBucketSize: 'packed',
  });
}

export interface LatencySummary {
  count: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
  mean: number;
}

/** Milliseconds, from a histogram of microseconds. */
export function summarize(h: Histogram): LatencySummary {
  const ms = (us: number) => Math.round(us) / 1000;
  if (h.totalCount === 0) return { count: 0, p50: NaN, p90: NaN, p99: NaN, p999: NaN, max: NaN, mean: NaN };
  return {
    count: h.totalCount,
    p50: ms(h.getValueAtPercentile(50)),
    p90: ms(h.getValueAtPercentile(90)),
    p99: ms(h.getValueAtPercentile(99)),
    p999: ms(h.getValueAtPercentile(99.9)),
    max: ms(h.maxValue),
    mean: ms(h.mean),
  };
}

/** Percentile curve points (percentile, ms) for the HTML chart: 0..99.999 on a log-ish scale. */
export function percentileCurve(h: Histogram): Array<[number, number]> {
  if (h.totalCount === 0) return [];
  const points: Array<[number, number]> = [];
  for (const p of [0, 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99, 99.999])
    points.push([p, h.getValueAtPercentile(p) / 1000]);
  return points;
}

/** Latency of one window of send times: where in a step the tail came from. */
export interface TimelinePoint {
  /** Start of the window, seconds after the step's first send. */
  atS: number;
  count: number;
  p50: number;
  p99: number;
  max: number;
}

/**
 * A step's steady state starts this long after its first message: at a new rate the fleet's
 * consumer batches take 2-3 s to grow to it (docs/benchmarks.md), and those seconds alone can set
 * a step's p99. Reported beside the whole step's p99, never in its place.
 */
export const STEADY_AFTER_MS = 3000;

/** Send-to-receive latencies by send time, summarized per window of `windowMs`. */
export class LatencyTimeline {
  private readonly sentMs: number[] = [];
  private readonly latencyUs: number[] = [];

  record(sentMs: number, latencyUs: number): void {
    this.sentMs.push(sentMs);
    this.latencyUs.push(latencyUs);
  }

  /**
   * The `q` quantile (ms) of the messages sent `skipMs` or more after the first: a step's steady
   * state, past the seconds in which the fleet's batches grow to the new rate. Undefined if none.
   */
  quantileAfter(q: number, skipMs: number): number | undefined {
    if (this.sentMs.length === 0) return undefined;
    const from = this.firstSentMs() + skipMs;
    const later = Float64Array.from(this.latencyUs.filter((_, i) => this.sentMs[i]! >= from)).sort();
    return later.length === 0 ? undefined : quantileMs(later, q);
  }

  windows(windowMs: number): TimelinePoint[] {
    if (this.sentMs.length === 0) return [];
    const origin = this.firstSentMs();
    const buckets: number[][] = [];
    this.sentMs.forEach((sent, i) => {
      const w = Math.floor((sent - origin) / windowMs);
      (buckets[w] ??= []).push(this.latencyUs[i]!);
    });
    const points: TimelinePoint[] = [];
    buckets.forEach((bucket, w) => {
      const sorted = Float64Array.from(bucket).sort();
      points.push({
        atS: (w * windowMs) / 1000,
        count: sorted.length,
        p50: quantileMs(sorted, 0.5),
        p99: quantileMs(sorted, 0.99),
        max: quantileMs(sorted, 1),
      });
    });
    return points;
  }

  private firstSentMs(): number {
    return this.sentMs.reduce((a, b) => Math.min(a, b));
  }
}

/** The `q` quantile of latencies in µs, sorted ascending and not empty, in ms. */
function quantileMs(sortedUs: Float64Array, q: number): number {
  return sortedUs[Math.min(sortedUs.length - 1, Math.ceil(q * sortedUs.length) - 1)]! / 1000;
}

/** 1, 1.5, 2, 3, 4, 5, 6, 8 times powers of ten, from `start` up to `max` inclusive. */
export function rateLadder(start: number, max: number): number[] {
  const mantissas = [1, 1.5, 2, 3, 4, 5, 6, 8];
  const rates: number[] = [];
  for (let exp = 0; exp < 10; exp++) {
    for (const m of mantissas) {
      const rate = Math.round(m * 10 ** exp);
      if (rate >= start && rate <= max) rates.push(rate);
    }
  }
  return rates;
}

export interface StepCriteria {
  /** Delivered within the step's window over sent, at least. */
  minDeliveredRatio: number;
  /** p99 send-to-receive latency in ms, at most. */
  maxP99Ms: number;
}

export const DEFAULT_CRITERIA: StepCriteria = { minDeliveredRatio: 0.95, maxP99Ms: 250 };

export interface StepResult {
  target: string;
  scenario: string;
  /** Offered rate, messages per second. */
  offered: number;
  durationS: number;
  sent: number;
  /** Accepted by the server (fleet: `accepted` frames); equals sent for the relay. */
  accepted: number;
  /** Received by a client during the send window (the step's own messages). */
  deliveredInWindow: number;
  /** Received by the end of the grace period after the window. */
  deliveredTotal: number;
  /** Frames received again with a mid already seen (redeliveries). */
  duplicates: number;
  errors: number;
  /** Messages per second delivered during the window. */
  deliveredPerS: number;
  latency: LatencySummary;
  curve: Array<[number, number]>;
  /** Latency per 250 ms of send time. */
  timeline?: TimelinePoint[];
  /** The p99 (ms) of the messages sent after the step's first STEADY_AFTER_MS. */
  steadyP99?: number;
  cpu?: CpuSample;
  generatorCpu?: number;
  /** Cores busy on the whole machine over the window (service, generator and anything else). */
  boxCpu?: number;
  /** How late the generator sent its latest message against the schedule (ms; included in latency). */
  sendLagMs?: number;
  sustainable: boolean;
  reason?: string;
}

export interface CpuSample {
  /** Cores used by the service process over the window (1.0 = one core fully busy). */
  cores: number;
  rssMiB: number;
}

/** A step is sustainable when the clients received ≥ 95% of what they sent during the window and the p99 stayed under the bound. */
export function verdict(
  step: Pick<StepResult, 'sent' | 'deliveredInWindow' | 'latency' | 'errors'>,
  criteria: StepCriteria = DEFAULT_CRITERIA,
): { ok: boolean; reason?: string } {
  if (step.sent === 0) return { ok: false, reason: 'nothing sent' };
  const ratio = step.deliveredInWindow / step.sent;
  if (ratio < criteria.minDeliveredRatio)
    return {
      ok: false,
      reason: `delivered ${(ratio * 100).toFixed(1)}% < ${criteria.minDeliveredRatio * 100}%`,
    };
  if (!(step.latency.p99 <= criteria.maxP99Ms))
    return { ok: false, reason: `p99 ${step.latency.p99} ms > ${criteria.maxP99Ms} ms` };
  if (step.errors > step.sent * 0.01) return { ok: false, reason: `${step.errors} error frames` };
  return { ok: true };
}

/** The highest sustainable delivered rate among the steps (0 when none passed). */
export function maxSustainable(steps: Array<Pick<StepResult, 'sustainable' | 'deliveredPerS' | 'offered'>>): {
  offered: number;
  delivered: number;
} {
  let best = { offered: 0, delivered: 0 };
  for (const s of steps)
    if (s.sustainable && s.deliveredPerS > best.delivered)
      best = { offered: s.offered, delivered: s.deliveredPerS };
  return best;
}

/** How many messages are due by `elapsedMs` at `rate` per second, minus those already sent. */
export function due(rate: number, elapsedMs: number, sent: number): number {
  return Math.max(0, Math.floor((rate * elapsedMs) / 1000) - sent);
}

/**
 * When the `i`-th message (0-based) of an open-loop schedule at `rate`/s begun at `startMs` is due:
 * the time its latency is measured from, so that a generator running late (its own event loop
 * busy) adds its lateness to the latency instead of hiding it (coordinated omission).
 */
export function intendedAtMs(startMs: number, rate: number, i: number): number {
  return startMs + ((i + 1) * 1000) / rate;
}

/** Loopback source address for the i-th connection: 127.0.0.2 .. 127.0.0.(1+spread). */
export function sourceAddress(i: number, spread = 8): string {
  return `127.0.0.${2 + (i % spread)}`;
}

/** Parses `/proc/<pid>/stat`: user+system CPU ticks (fields 14 and 15; the command may hold spaces). */
export function parseProcStat(text: string): { ticks: number } {
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state): utime is field 14 -> rest[11], stime field 15 -> rest[12].
  return { ticks: Number(rest[11]) + Number(rest[12]) };
}

/**
 * Parses the first line of `/proc/stat` (the whole machine): busy and total ticks (user nice system
 * idle iowait irq softirq steal; guest time is already in user). Busy leaves out idle and iowait.
 */
export function parseMachineStat(text: string): { busy: number; total: number } {
  const fields = text
    .slice(0, text.indexOf('\n') >>> 0)
    .trim()
    .split(/\s+/)
    .slice(1, 9)
    .map(Number);
  const total = fields.reduce((a, b) => a + (b || 0), 0);
  return { busy: total - (fields[3] || 0) - (fields[4] || 0), total };
}

/**
 * Why the relay's measured 1:1 ceiling may not be the relay's own, or undefined when it is. The
 * relay has one thread: at its ceiling it uses about one core. When the step that stopped the ramp
 * (the slowest failing one above the max) found it well under that, what failed was the load
 * generator or the machine (other work), and the ratio fleet/relay is biased in the fleet's favour.
 */
export function relayCeilingCaveat(
  steps: Array<Pick<StepResult, 'offered' | 'sustainable' | 'cpu' | 'generatorCpu' | 'boxCpu'>>,
  max: { offered: number },
  cpus: number,
): string | undefined {
  const failing = steps
    .filter((s) => !s.sustainable && s.offered > max.offered)
    .sort((a, b) => a.offered - b.offered)[0];
  if (!failing)
    return 'no relay step failed: its ceiling is above the highest rate tried, so the ratio is an upper bound';
  if (!failing.cpu || failing.cpu.cores >= 0.85) return undefined;
  return (
    `the relay's ceiling was not the relay's: at ${failing.offered}/s, the step that stopped its ramp, it used ${failing.cpu.cores} of its one core ` +
    `(generator ${failing.generatorCpu ?? '?'}, whole machine ${failing.boxCpu ?? '?'} of ${cpus} cores), so the ratio is an upper bound`
  );
}

/**
 * What the ratio target leaves the fleet on a machine it shares with the load generator: the
 * fleet rate the target needs, the cores the generator alone would take at that rate (at the
 * CPU per message it spent on the fleet's fastest sustainable step), and the CPU per message left
 * for the fleet, against what the fleet spent there. Undefined without the figures to say it.
 */
export function ratioBudget(
  fleetMax: Pick<StepResult, 'deliveredPerS' | 'cpu' | 'generatorCpu'> | undefined,
  relayMaxDelivered: number,
  cpus: number,
  targetRatio = 0.3,
): string | undefined {
  if (!fleetMax?.cpu || !fleetMax.generatorCpu || fleetMax.deliveredPerS <= 0 || relayMaxDelivered <= 0)
    return undefined;
  const needed = Math.round(targetRatio * relayMaxDelivered);
  const microsEach = (cores: number) => (cores / fleetMax.deliveredPerS) * 1e6;
  const generatorCores = (microsEach(fleetMax.generatorCpu) * needed) / 1e6;
  const leftMicros = ((cpus - generatorCores) / needed) * 1e6;
  return (
    `ratio ${targetRatio.toFixed(2)} needs the fleet at ${needed} msg/s; the load generator spent ${Math.round(microsEach(fleetMax.generatorCpu))} µs of CPU ` +
    `per fleet message at ${fleetMax.deliveredPerS} msg/s, so at that rate it alone would take ${generatorCores.toFixed(2)} of the ${cpus} cores, ` +
    (leftMicros > 0
      ? `leaving the fleet ${Math.round(leftMicros)} µs per message against the ${Math.round(microsEach(fleetMax.cpu.cores))} µs it spent`
      : 'leaving the fleet nothing')
  );
}

/** Parses `VmRSS` (kB) from `/proc/<pid>/status` into bytes. */
export function parseRss(text: string): number {
  const m = /VmRSS:\s+(\d+)\s+kB/.exec(text);
  return m ? Number(m[1]) * 1024 : NaN;
}

/** A Prometheus text-format sample value (first series whose name and labels start with `prefix`). */
export function metricValue(text: string, prefix: string): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith(prefix) && (line[prefix.length] === ' ' || line[prefix.length] === '{')) {
      const value = Number(line.slice(line.lastIndexOf(' ') + 1));
      if (!Number.isNaN(value)) return value;
    }
  }
  return undefined;
}

/** The sum of the Prometheus text-format samples named `name` (any labels) whose line holds `filter`. */
export function metricSum(text: string, name: string, filter = ''): number {
  let sum = 0;
  for (const line of text.split('\n'))
    if (
      line.startsWith(name) &&
      (line[name.length] === ' ' || line[name.length] === '{') &&
      line.includes(filter)
    )
      sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  return sum;
}

/** Extracts `"mid":"..."`, the body's `"t":` and `"s":` without a full JSON parse (hot path of the clients). */
export function scanFrame(text: string): { type: string; mid?: string; t?: number; s?: number } {
  const typeAt = text.indexOf('"type":"');
  const type = typeAt < 0 ? '' : text.slice(typeAt + 8, text.indexOf('"', typeAt + 8));
  const midAt = text.indexOf('"mid":"');
  const mid = midAt < 0 ? undefined : text.slice(midAt + 7, text.indexOf('"', midAt + 7));
  let t: number | undefined;
  let s: number | undefined;
  const bodyAt = text.indexOf('"body":{"t":');
  if (bodyAt >= 0) {
    const tStart = bodyAt + 12;
    const tEnd = text.indexOf(',', tStart);
    t = Number(text.slice(tStart, tEnd));
    const sAt = text.indexOf('"s":', tEnd);
    if (sAt >= 0) s = parseInt(text.slice(sAt + 4, sAt + 16), 10);
  }
  return { type, mid, t, s };
}

/** `parley_*_total` counters of a Prometheus text page (process/runtime/http series left out). */
export function parseCounters(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (
      !line.startsWith('parley_') ||
      line.startsWith('parley_process_') ||
      line.startsWith('parley_nodejs_') ||
      line.startsWith('parley_http_')
    )
      continue;
    const space = line.lastIndexOf(' ');
    const name = line.slice(0, space);
    if (!/_total(\{|$)/.test(name)) continue;
    const value = Number(line.slice(space + 1));
    if (Number.isFinite(value)) out.set(name, (out.get(name) ?? 0) + value);
  }
  return out;
}

/** after − before, non-zero entries, largest first. */
export function counterDeltas(
  before: Map<string, number>,
  after: Map<string, number>,
): Array<[string, number]> {
  const out: Array<[string, number]> = [];
  for (const [name, value] of after) {
    const d = value - (before.get(name) ?? 0);
    if (d !== 0) out.push([name, d]);
  }
  return out.sort((a, b) => b[1] - a[1]);
}
