import { targetsOf, type BenchReport } from '../src/report';
import type { IdleResult } from '../src/scenarios';

const report = (idle: Partial<IdleResult> & Pick<IdleResult, 'connected'>): BenchReport => ({
  runId: 'r',
  startedAt: '',
  mode: 'quick',
  machine: { cpus: 2, cpuModel: '', node: '', memGiB: 1 },
  settings: {},
  notes: [],
  fleet: {
    where: '',
    steps: [],
    max: { offered: 0, delivered: 0 },
    idle: {
      target: 'fleet',
      requested: idle.connected,
      failed: 0,
      connectMs: 1,
      rssBeforeMiB: 100,
      rssAfterMiB: 900,
      bytesPerConnection: 7000,
      projected100kMiB: 1100,
      note: '',
      ...idle,
    },
  },
  targets: [],
  durationS: 0,
});
const idleTarget = (r: BenchReport) => targetsOf(r).find((t) => t.name.startsWith('100k idle'))!;

describe('the idle-connection target', () => {
  it('judges a gateway projected from fewer sockets by the projection', () => {
    const target = idleTarget(report({ connected: 18_000, sampled: 'gateway', projected100kMiB: 767 }));
    expect(target.met).toBe(true);
    expect(target.measured).toBe('767 MiB projected from 18000 (6.8 KiB each)');
  });

  it('judges 100,000 sockets held open by the RSS measured with them', () => {
    const target = idleTarget(
      report({ connected: 100_000, sampled: 'gateway', rssAfterMiB: 1100, projected100kMiB: 900 }),
    );
    expect(target.met).toBe(false);
    expect(target.measured).toMatch(/^1100 MiB measured with 100000/);
  });

  it('gives no verdict on the whole one-process fleet, and says what measures the gateway alone', () => {
    const target = idleTarget(report({ connected: 15_000, sampled: 'fleet' }));
    expect(target.met).toBeUndefined();
    expect(target.measured).toContain('tools/bench/device/idle-gateway.sh');
  });
});
