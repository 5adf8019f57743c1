import {
  counterDeltas,
  due,
  intendedAtMs,
  LatencyTimeline,
  maxSustainable,
  metricSum,
  metricValue,
  newHistogram,
  parseCounters,
  parseMachineStat,
  parseProcStat,
  parseRss,
  rateLadder,
  ratioBudget,
  relayCeilingCaveat,
  scanFrame,
  sourceAddress,
  summarize,
  verdict,
} from '../src/stats';
import { html, lineChart, nines, table, targetsOf, type BenchReport } from '../src/report';

describe('bench helpers', () => {
  it('builds a 1-1.5-2-3-4-5-6-8 rate ladder within bounds', () => {
    expect(rateLadder(1000, 5000)).toEqual([1000, 1500, 2000, 3000, 4000, 5000]);
    expect(rateLadder(700, 1000)).toEqual([800, 1000]);
  });

  it('says how many messages are due', () => {
    expect(due(1000, 10, 0)).toBe(10);
    expect(due(1000, 10, 8)).toBe(2);
    expect(due(1000, 10, 12)).toBe(0);
  });

  it('puts each message of an open-loop schedule at its own due time', () => {
    // 1,000/s from t=100 ms: message 0 is due at 101 ms, message 9 at 110 ms, whenever it is sent.
    expect(intendedAtMs(100, 1000, 0)).toBe(101);
    expect(intendedAtMs(100, 1000, 9)).toBe(110);
    for (let i = 0; i < 50; i++) expect(due(1000, intendedAtMs(0, 1000, i), i)).toBe(1);
  });

  it("reads the whole machine's CPU from /proc/stat", () => {
    // user nice system idle iowait irq softirq steal guest guest_nice
    expect(parseMachineStat('cpu  100 5 50 800 20 3 7 15 40 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n')).toEqual({
      busy: 180,
      total: 1000,
    });
  });

  it("says when the relay's ceiling was not the relay's (the ratio is then an upper bound)", () => {
    const step = (offered: number, sustainable: boolean, cores: number) => ({
      offered,
      sustainable,
      cpu: { cores, rssMiB: 100 },
      generatorCpu: 0.7,
      boxCpu: 1.9,
    });
    // The run of 2026-12-06 05:12: relay at 0.53 and 0.58 cores at its failing steps, generator 0.71.
    const notBound = [step(15000, true, 0.58), step(20000, false, 0.53), step(17500, false, 0.58)];
    expect(relayCeilingCaveat(notBound, { offered: 15000 }, 2)).toMatch(
      /17500\/s.*0\.58 of its one core.*upper bound/,
    );
    const bound = [step(40000, true, 0.8), step(50000, false, 0.97)];
    expect(relayCeilingCaveat(bound, { offered: 40000 }, 2)).toBeUndefined();
    expect(relayCeilingCaveat([step(300000, true, 1)], { offered: 300000 }, 2)).toMatch(/upper bound/);
  });

  it('says what the ratio target leaves the fleet on a box it shares with the load generator', () => {
    // The quick run of 2026-12-06 20:21: fleet max 5,768 msg/s at 1.39 cores, generator 0.43;
    // the relay's max from the full run of 18:15, 49,654 msg/s.
    const fleetMax = { deliveredPerS: 5768, cpu: { cores: 1.39, rssMiB: 829 }, generatorCpu: 0.43 };
    expect(ratioBudget(fleetMax, 49654, 2)).toBe(
      'ratio 0.30 needs the fleet at 14896 msg/s; the load generator spent 75 µs of CPU per fleet message at 5768 msg/s, ' +
        'so at that rate it alone would take 1.11 of the 2 cores, leaving the fleet 60 µs per message against the 241 µs it spent',
    );
    expect(ratioBudget({ ...fleetMax, generatorCpu: 1.2 }, 49654, 2)).toMatch(
      /take 3\.10 of the 2 cores, leaving the fleet nothing$/,
    );
    expect(ratioBudget(undefined, 49654, 2)).toBeUndefined();
    expect(ratioBudget({ ...fleetMax, generatorCpu: undefined }, 49654, 2)).toBeUndefined();
    expect(ratioBudget(fleetMax, 0, 2)).toBeUndefined();
  });

  it('judges a step: delivered ratio, p99 bound, errors', () => {
    const latency = { count: 1, p50: 1, p90: 1, p99: 10, p999: 20, max: 30, mean: 2 };
    expect(verdict({ sent: 100, deliveredInWindow: 96, latency, errors: 0 })).toEqual({ ok: true });
    expect(verdict({ sent: 100, deliveredInWindow: 90, latency, errors: 0 }).ok).toBe(false);
    expect(
      verdict({ sent: 100, deliveredInWindow: 100, latency: { ...latency, p99: 500 }, errors: 0 }).reason,
    ).toMatch(/p99/);
    expect(
      verdict({ sent: 100, deliveredInWindow: 100, latency: { ...latency, p99: NaN }, errors: 0 }).ok,
    ).toBe(false);
    expect(verdict({ sent: 100, deliveredInWindow: 100, latency, errors: 5 }).ok).toBe(false);
    expect(
      maxSustainable([
        { sustainable: true, deliveredPerS: 10, offered: 10 },
        { sustainable: false, deliveredPerS: 50, offered: 60 },
        { sustainable: true, deliveredPerS: 20, offered: 20 },
      ]),
    ).toEqual({ offered: 20, delivered: 20 });
  });

  it('summarizes a histogram of microseconds in milliseconds', () => {
    const h = newHistogram();
    for (let i = 1; i <= 1000; i++) h.recordValue(i * 1000);
    const s = summarize(h);
    expect(s.count).toBe(1000);
    expect(s.p50).toBeCloseTo(500, -1);
    expect(s.p99).toBeCloseTo(990, -1);
    expect(Number.isNaN(summarize(newHistogram()).p99)).toBe(true);
  });

  it('scans server frames without parsing them', () => {
    const f = scanFrame(
      '{"type":"message","mid":"a:m1","id":"m1","from":"a","to":"b","chat":"direct","body":{"t":123456,"s":7,"p":"xx"},"sentAt":1}',
    );
    expect(f).toEqual({ type: 'message', mid: 'a:m1', t: 123456, s: 7 });
    expect(scanFrame('{"type":"receipt","mid":"~r:x","status":"delivered","mids":["a:m1"]}')).toEqual({
      type: 'receipt',
      mid: '~r:x',
      t: undefined,
      s: undefined,
    });
    expect(scanFrame('{"type":"hello","user":"a"}').mid).toBeUndefined();
  });

  it('reads /proc and Prometheus text', () => {
    const stat = '1234 (node with spaces) S 1 2 3 4 5 6 7 8 9 10 150 50 0 0';
    expect(parseProcStat(stat).ticks).toBe(200);
    expect(parseRss('Name:\tnode\nVmRSS:\t  2048 kB\n')).toBe(2048 * 1024);
    const text =
      '# HELP x\nparley_ws_connections{service="ws-gateway"} 42\nparley_ws_delivered_total{service="ws-gateway"} 7\nparley_process_cpu_seconds_total 3\n';
    expect(metricValue(text, 'parley_ws_connections')).toBe(42);
    const labelled = 'a_total{type="x"} 2\na_total{type="y"} 3\na_totals 100\na_total 4\n';
    expect([metricSum(labelled, 'a_total'), metricSum(labelled, 'a_total', 'type="y"')]).toEqual([9, 3]);
    const counters = parseCounters(text);
    expect([...counters.keys()]).toEqual(['parley_ws_delivered_total{service="ws-gateway"}']);
    expect(
      counterDeltas(
        new Map([['a', 1]]),
        new Map([
          ['a', 5],
          ['b', 0],
        ]),
      ),
    ).toEqual([['a', 4]]);
  });

  it('spreads source addresses over 127.0.0.2-9', () => {
    expect([0, 1, 7, 8].map((i) => sourceAddress(i))).toEqual([
      '127.0.0.2',
      '127.0.0.3',
      '127.0.0.9',
      '127.0.0.2',
    ]);
  });

  it('summarizes latency per window of send time', () => {
    const timeline = new LatencyTimeline();
    // Window 0 (sent 1000-1249 ms): 100 messages of 1-100 ms; window 2: one of 300 ms; window 1 empty.
    for (let i = 1; i <= 100; i++) timeline.record(1000 + i, i * 1000);
    timeline.record(1600, 300_000);
    expect(timeline.windows(250)).toEqual([
      { atS: 0, count: 100, p50: 50, p99: 99, max: 100 },
      { atS: 0.5, count: 1, p50: 300, p99: 300, max: 300 },
    ]);
    expect(new LatencyTimeline().windows(250)).toEqual([]);
  });

  it("takes a step's steady-state quantile over the messages sent after its first seconds only", () => {
    const timeline = new LatencyTimeline();
    for (let i = 0; i < 10; i++) timeline.record(1000 + i, 200_000); // the slow start: 200 ms each
    for (let i = 1; i <= 100; i++) timeline.record(4000 + i, i * 1000); // after 3 s: 1-100 ms
    expect(timeline.quantileAfter(0.99, 3000)).toBe(99);
    expect(timeline.quantileAfter(0.99, 0)).toBe(200);
    expect(timeline.quantileAfter(0.99, 60_000)).toBeUndefined();
    expect(new LatencyTimeline().quantileAfter(0.99, 3000)).toBeUndefined();
  });

  it('renders a self-contained report', () => {
    expect(nines(99)).toBeCloseTo(2);
    const svg = lineChart({
      title: 't',
      xLabel: 'x',
      yLabel: 'y',
      series: [
        {
          name: 's',
          color: '#000',
          points: [
            [1, 1],
            [2, 4],
          ],
        },
      ],
    });
    expect(svg).toContain('<svg');
    const report: BenchReport = {
      runId: 'r',
      startedAt: 'now',
      mode: 'quick',
      machine: { cpus: 2, cpuModel: 'cpu', node: 'v20', memGiB: 1 },
      settings: {},
      notes: ['n'],
      fleet: { where: 'here', steps: [], max: { offered: 0, delivered: 0 } },
      targets: [],
      durationS: 1,
    };
    report.targets = targetsOf(report);
    expect(table(report)).toContain('ratio: n/a');
    const page = html(report);
    expect(page).toContain('<!doctype html>');
    expect(page).toContain('latency over the step, by send time: no data');
    const latency = { count: 2, p50: 5, p90: 9, p99: 9, p999: 9, max: 9, mean: 7 };
    report.fleet.half = {
      ...{ target: 'fleet', scenario: 'half max', offered: 100, durationS: 1, sent: 2, accepted: 2 },
      ...{ deliveredInWindow: 2, deliveredTotal: 2, duplicates: 0, errors: 0, deliveredPerS: 2 },
      ...{ latency, curve: [], sustainable: true },
      timeline: [
        { atS: 0, count: 1, p50: 5, p99: 5, max: 5 },
        { atS: 0.25, count: 1, p50: 9, p99: 9, max: 9 },
      ],
    };
    expect(html(report)).toMatch(
      /Fleet at half max \(100\/s\): latency over the step, by send time<\/text>.*<polyline/,
    );
    expect(page).not.toMatch(/<script[^>]+src=|https?:\/\/(?!www\.w3\.org)/);
  });
});
