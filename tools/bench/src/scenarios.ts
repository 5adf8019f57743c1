import { setTimeout as sleep } from 'node:timers/promises';
import { performance } from 'node:perf_hooks';
import WebSocket from 'ws';
import { ClientPool, closeSockets, openClient, type Target } from './clients';
import { machineCpuWindow, ProcSampler } from './proc';
import {
  counterDeltas,
  parseCounters,
  metricValue,
  percentileCurve,
  rateLadder,
  sourceAddress,
  STEADY_AFTER_MS,
  summarize,
  verdict,
  maxSustainable,
  type LatencySummary,
  type StepCriteria,
  type StepResult,
} from './stats';

export interface Progress {
  (line: string): void;
}

/** The steps' latency timelines: windows of send time this long. */
export const TIMELINE_WINDOW_MS = 250;

/** One open-loop 1:1 step at `rate`/s for `durationMs`, then a grace period for stragglers. */
export async function runStep(
  pool: ClientPool,
  opts: {
    scenario: string;
    rate: number;
    durationMs: number;
    graceMs: number;
    criteria: StepCriteria;
    sampler?: ProcSampler;
  },
): Promise<StepResult> {
  const c = pool.beginStep();
  const win = opts.sampler?.window();
  const box = machineCpuWindow();
  const r = await pool.runRate(opts.rate, opts.durationMs);
  const cpu = win?.end();
  const boxCpu = box.end();
  await pool.settle(() => c.received >= c.sent, 1000, opts.graceMs);
  const latency = pool.latency();
  const deliveredPerS = Math.round(r.receivedInWindow / (r.windowMs / 1000));
  const base = { sent: c.sent, deliveredInWindow: r.receivedInWindow, latency, errors: c.errors };
  const v = verdict(base, opts.criteria);
  return {
    target: pool.target.name,
    scenario: opts.scenario,
    offered: opts.rate,
    durationS: Math.round(r.windowMs) / 1000,
    sent: c.sent,
    accepted: pool.target.name === 'relay' ? c.sent : c.accepted,
    deliveredInWindow: r.receivedInWindow,
    deliveredTotal: c.received,
    duplicates: c.duplicates,
    errors: c.errors,
    deliveredPerS,
    latency,
    curve: percentileCurve(c.hist),
    timeline: c.timeline.windows(TIMELINE_WINDOW_MS),
    steadyP99: c.timeline.quantileAfter(0.99, STEADY_AFTER_MS),
    cpu,
    generatorCpu: Math.round((r.cpuUs / 1000 / r.windowMs) * 100) / 100,
    boxCpu: Number.isFinite(boxCpu) ? boxCpu : undefined,
    sendLagMs: r.maxLagMs,
    sustainable: v.ok,
    reason: v.ok ? undefined : v.reason + (c.lastErrors.length ? ` (first error: ${c.lastErrors[0]})` : ''),
  };
}

/** Waits until the target has gone quiet (no frames for `quietMs`), e.g. after an overloaded step. */
export async function drain(pool: ClientPool, quietMs: number, maxMs: number) {
  await pool.settle(() => false, quietMs, maxMs);
}

/**
 * Steps up the rate ladder until a step is not sustainable, then refines between the last
 * sustainable rate and the first failing one. Returns every step in order.
 */
export async function ramp(
  pool: ClientPool,
  opts: {
    start: number;
    max: number;
    durationMs: number;
    graceMs: number;
    refine: number;
    criteria: StepCriteria;
    sampler?: ProcSampler;
    log: Progress;
    rates?: number[];
  },
): Promise<StepResult[]> {
  const steps: StepResult[] = [];
  const run = async (rate: number) => {
    const step = await runStep(pool, {
      scenario: '1:1 ramp',
      rate,
      durationMs: opts.durationMs,
      graceMs: opts.graceMs,
      criteria: opts.criteria,
      sampler: opts.sampler,
    });
    steps.push(step);
    opts.log(formatStep(step));
    if (!step.sustainable) await drain(pool, 2000, 30_000);
    return step;
  };
  if (opts.rates) {
    // Explicit rates: run them all, no stopping, no refinement.
    for (const rate of opts.rates) await run(rate);
    return steps;
  }
  let pass = 0;
  let fail = 0;
  for (const rate of rateLadder(opts.start, opts.max)) {
    const step = await run(rate);
    if (step.sustainable) pass = rate;
    else {
      fail = rate;
      break;
    }
  }
  for (let i = 0; i < opts.refine && fail > 0 && fail / Math.max(pass, 1) > 1.15; i++) {
    const rate = Math.round((pass + fail) / 2 / 100) * 100 || Math.round((pass + fail) / 2);
    const step = await run(rate);
    if (step.sustainable) pass = rate;
    else fail = rate;
  }
  return steps;
}

/** The window of the step's timeline with the highest p99, e.g. ` (worst 250 ms: p99 80 ms at 3.25 s)`. */
function worstWindow(s: StepResult): string {
  if (!s.timeline?.length) return '';
  const worst = s.timeline.reduce((a, b) => (b.p99 > a.p99 ? b : a));
  return ` (worst ${TIMELINE_WINDOW_MS} ms: p99 ${worst.p99} ms at ${worst.atS} s)`;
}

/** The step's p99 past its first seconds, e.g. ` (p99 after 3 s: 41 ms)`. */
function steady(s: StepResult): string {
  return s.steadyP99 === undefined ? '' : ` (p99 after ${STEADY_AFTER_MS / 1000} s: ${s.steadyP99} ms)`;
}

export function formatStep(s: StepResult): string {
  const cpu = s.cpu ? ` cpu ${s.cpu.cores.toFixed(2)} rss ${s.cpu.rssMiB}MiB` : '';
  return (
    `  [${s.target}] ${s.scenario} offered ${s.offered}/s: delivered ${s.deliveredPerS}/s ` +
    `(${s.deliveredInWindow}/${s.sent} in window, ${s.deliveredTotal} total, ${s.accepted} accepted, ${s.duplicates} dup, ${s.errors} err) ` +
    `p50 ${s.latency.p50} p99 ${s.latency.p99} p99.9 ${s.latency.p999} ms${steady(s)}${worstWindow(s)}${cpu} gen-cpu ${s.generatorCpu} box-cpu ${s.boxCpu ?? '-'} gen-lag ${s.sendLagMs ?? '-'} ms ` +
    `${s.sustainable ? 'OK' : `FAIL: ${s.reason}`}`
  );
}

export { maxSustainable };

export interface FanoutResult {
  target: string;
  members: number;
  connectedMembers: number;
  messages: number;
  expected: number;
  delivered: number;
  durationMs: number;
  deliveriesPerS: number;
  latency: LatencySummary;
  curve: Array<[number, number]>;
  gatewayFramesWritten?: number;
  cpu?: { cores: number; rssMiB: number };
  /** How late the generator sent its latest group message against the schedule (ms; in latency). */
  sendLagMs?: number;
  note: string;
}

/**
 * Group fan-out: a group of the pool's first `members` users (all connected), created through
 * `createGroup`; then `senders` members each send `perSender` group messages as fast as the rate
 * limit allows. Counted: message frames received by connected member sockets (the sender excluded,
 * so `messages × (members − 1)` are expected), from the first send to the last delivery.
 */
export async function runFanout(
  pool: ClientPool,
  opts: {
    members: number;
    senders: number;
    perSender: number;
    ratePerSender: number;
    createGroup: (group: string, owner: string, others: string[]) => Promise<void>;
    gatewayFrames?: () => Promise<number | undefined>;
    sampler?: ProcSampler;
    log: Progress;
    /** Cap on waiting for the group's creation and for the deliveries. */
    maxWaitMs: number;
  },
): Promise<FanoutResult> {
  const members = pool.clients.slice(0, opts.members);
  const group = `bench-g-${Date.now().toString(36)}`;
  const sync = pool.beginStep();
  const tJoin = performance.now();
  await opts.createGroup(
    group,
    members[0]!.user,
    members.slice(1).map((m) => m.user),
  );
  const joined = await pool.settle(() => sync.groupFrames >= members.length, opts.maxWaitMs, opts.maxWaitMs);
  const joinMs = Math.round(performance.now() - tJoin);
  opts.log(
    `  [${pool.target.name}] fan-out: ${sync.groupFrames}/${members.length} members saw the group's creation in ${joinMs} ms${joined ? '' : ' (gave up waiting; going on)'}`,
  );
  await sleep(500);
  const c = pool.beginStep();
  const frames0 = await opts.gatewayFrames?.();
  const win = opts.sampler?.window();
  const messages = opts.senders * opts.perSender;
  const expected = messages * (members.length - 1);
  const t0 = performance.now();
  const burst = await pool.runGroupBurst(
    group,
    members.slice(0, opts.senders),
    opts.perSender,
    opts.ratePerSender,
  );
  const complete = await pool.settle(() => c.received >= expected, 5000, opts.maxWaitMs);
  const cpu = win?.end();
  const frames1 = await opts.gatewayFrames?.();
  const durationMs = Math.max(1, (pool.lastReceiveAt || performance.now()) - (pool.firstSendAt || t0));
  const result: FanoutResult = {
    target: pool.target.name,
    members: members.length,
    connectedMembers: members.length,
    messages,
    expected,
    delivered: c.received,
    durationMs: Math.round(durationMs),
    deliveriesPerS: Math.round(c.received / (durationMs / 1000)),
    latency: summarize(c.hist),
    curve: percentileCurve(c.hist),
    gatewayFramesWritten: frames0 !== undefined && frames1 !== undefined ? frames1 - frames0 : undefined,
    cpu,
    sendLagMs: burst.maxLagMs,
    note: `${complete ? '' : `INCOMPLETE: stopped waiting after ${opts.maxWaitMs} ms; `}group created and seen by all members in ${joinMs} ms; ${messages} group messages from ${opts.senders} senders to ${members.length} connected members; counted: message frames received by member sockets (sender excluded), first send to last delivery`,
  };
  opts.log(
    `  [${result.target}] fan-out: ${result.delivered}/${expected} deliveries in ${result.durationMs} ms = ${result.deliveriesPerS}/s, ` +
      `p50 ${result.latency.p50} p99 ${result.latency.p99} ms${cpu ? ` cpu ${cpu.cores} rss ${cpu.rssMiB}MiB` : ''} gen-lag ${result.sendLagMs} ms`,
  );
  await drain(pool, 1500, 20_000);
  return result;
}

export interface OfflineFanoutResult {
  members: number;
  messages: number;
  expected: number;
  stored: number;
  durationMs: number;
  storedPerS: number;
  cpu?: { cores: number; rssMiB: number };
  note: string;
}

/**
 * Group fan-out to members who never connect: session-ms hands each deliverable to the offline
 * topic at once, and persistence-ms stores it (PGlite in the one-process fleet, Postgres in
 * production). One connected sender; `members − 1` offline members. Counted: rows stored
 * (`storedCount`, persistence-ms's `parley_persistence_stored_total`), from the first send until
 * all are stored.
 */
export async function runOfflineFanout(
  pool: ClientPool,
  opts: {
    members: number;
    messages: number;
    ratePerSender: number;
    runId: string;
    createGroup: (group: string, owner: string, others: string[]) => Promise<void>;
    storedCount: () => Promise<number | undefined>;
    sampler?: ProcSampler;
    log: Progress;
    maxWaitMs: number;
  },
): Promise<OfflineFanoutResult> {
  const sender = pool.clients[0]!;
  const offline = Array.from({ length: opts.members - 1 }, (_, i) => `off${opts.runId}-${i}`);
  const stored = async () => (await opts.storedCount()) ?? 0;
  /** Polls until `target` rows are stored; returns when the last of them was seen. */
  const storedUpTo = async (target: number) => {
    const start = performance.now();
    while (performance.now() - start < opts.maxWaitMs) {
      if ((await stored()) >= target) return performance.now();
      await sleep(25);
    }
    return undefined;
  };
  /** The counter is the whole service's: earlier scenarios' late offline hand-overs must be over. */
  const quiet = async () => {
    const start = performance.now();
    for (let last = await stored(); performance.now() - start < opts.maxWaitMs;) {
      await sleep(1000);
      const now = await stored();
      if (now === last) return true;
      last = now;
    }
    return false;
  };
  const group = `bench-og-${opts.runId}`;
  const problems: string[] = [];
  if (!(await quiet())) problems.push('rows were still being stored before the scenario began');
  const before = await stored();
  await opts.createGroup(group, sender.user, offline);
  // The creation is a `group` deliverable to each offline member: stored first, not counted.
  if ((await storedUpTo(before + offline.length)) === undefined || !(await quiet()))
    problems.push('the group creation was not stored in time');
  const base = await stored();
  const win = opts.sampler?.window();
  const expected = opts.messages * offline.length;
  const t0 = performance.now();
  await pool.runGroupBurst(group, [sender], opts.messages, opts.ratePerSender);
  const doneAt = await storedUpTo(base + expected);
  const cpu = win?.end();
  const count = (await stored()) - base;
  const durationMs = Math.max(1, (doneAt ?? performance.now()) - t0);
  const result: OfflineFanoutResult = {
    members: opts.members,
    messages: opts.messages,
    expected,
    stored: count,
    durationMs: Math.round(durationMs),
    storedPerS: Math.round(count / (durationMs / 1000)),
    cpu,
    note: `${doneAt === undefined ? `INCOMPLETE: stopped waiting after ${opts.maxWaitMs} ms; ` : ''}${problems.map((p) => `UNRELIABLE: ${p}; `).join('')}${opts.messages} group messages from one connected sender to ${offline.length} members who never connected; counted: rows persistence-ms stored, first send to the last row (polled every 25 ms)`,
  };
  opts.log(
    `  [fleet] offline fan-out: ${count}/${expected} stored in ${result.durationMs} ms = ${result.storedPerS}/s` +
      (cpu ? ` cpu ${cpu.cores} rss ${cpu.rssMiB}MiB` : '') +
      (problems.length > 0 ? ` UNRELIABLE: ${problems.join('; ')}` : ''),
  );
  return result;
}

export interface IdleResult {
  target: string;
  requested: number;
  connected: number;
  failed: number;
  connectMs: number;
  rssBeforeMiB: number;
  rssAfterMiB: number;
  bytesPerConnection: number;
  projected100kMiB: number;
  gatewayConnections?: number;
  /** What RSS was sampled: the ws-gateway process alone (the target's subject), or the whole one-process fleet. */
  sampled?: 'gateway' | 'fleet';
  note: string;
}

/**
 * Idle connections: `n` authenticated sockets that send nothing, from 127.0.0.2-9; the target
 * process's RSS before and after (after a settle) gives the memory per connection, and a
 * projection to 100,000 (RSS before + 100,000 × per connection).
 */
export async function runIdle(
  target: Target,
  opts: {
    n: number;
    startIndex: number;
    runId: string;
    sampler: ProcSampler;
    gatewayConnections?: () => Promise<number | undefined>;
    settleMs: number;
    note: string;
    log: Progress;
    gc?: () => void;
  },
): Promise<IdleResult> {
  // RSS after a full GC in the target (when it can be asked), the smallest of a few samples.
  const settledRss = async () => {
    let min = Infinity;
    for (let i = 0; i < 3; i++) {
      opts.gc?.();
      await sleep(opts.settleMs / 2);
      min = Math.min(min, opts.sampler.rssBytes());
    }
    return min;
  };
  const rss0 = await settledRss();
  const sockets: WebSocket[] = [];
  let failed = 0;
  let firstError = '';
  const t0 = performance.now();
  let next = 0;
  const worker = async () => {
    while (next < opts.n) {
      const i = next++;
      try {
        const client = await openClient(
          target,
          `idle-${opts.runId}-${i}`,
          '',
          sourceAddress(opts.startIndex + i),
        );
        sockets.push(client.socket);
      } catch (err) {
        failed++;
        if (!firstError) firstError = (err as Error).message;
      }
      if ((i + 1) % 5000 === 0) opts.log(`  [${target.name}] idle: ${i + 1}/${opts.n} connecting`);
    }
  };
  await Promise.all(Array.from({ length: 100 }, worker));
  const connectMs = Math.round(performance.now() - t0);
  const rss1 = await settledRss();
  const gw = await opts.gatewayConnections?.();
  const per = sockets.length > 0 ? (rss1 - rss0) / sockets.length : NaN;
  const result: IdleResult = {
    target: target.name,
    requested: opts.n,
    connected: sockets.length,
    failed,
    connectMs,
    rssBeforeMiB: Math.round(rss0 / 1048576),
    rssAfterMiB: Math.round(rss1 / 1048576),
    bytesPerConnection: Math.round(per),
    projected100kMiB: Math.round((rss0 + 100_000 * per) / 1048576),
    gatewayConnections: gw,
    note: opts.note + (firstError ? `. ${failed} failed to connect, the first with: ${firstError}` : ''),
  };
  opts.log(
    `  [${target.name}] idle: ${result.connected}/${opts.n} connected in ${connectMs} ms, RSS ${result.rssBeforeMiB} -> ${result.rssAfterMiB} MiB, ` +
      `${(per / 1024).toFixed(1)} KiB/connection, projected 100k: ${result.projected100kMiB} MiB` +
      (firstError ? `; ${failed} failed, the first with: ${firstError}` : ''),
  );
  await closeSockets(sockets);
  return result;
}

/** Fetches a sample from a Prometheus endpoint; undefined when unreachable. */
export async function scrape(url: string, name: string): Promise<number | undefined> {
  try {
    const response = await fetch(url);
    return metricValue(await response.text(), name);
  } catch {
    return undefined;
  }
}

/** Every service's `parley_*_total` counters, summed over `urls` (each service's /metrics). */
export async function scrapeCounters(urls: string[]): Promise<Map<string, number>> {
  const all = new Map<string, number>();
  for (const url of urls) {
    try {
      const text = await (await fetch(url)).text();
      for (const [k, v] of parseCounters(text)) all.set(k, (all.get(k) ?? 0) + v);
    } catch {
      // a service without metrics: skipped
    }
  }
  return all;
}

export { counterDeltas };
