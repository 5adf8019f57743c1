import { Registry } from 'prom-client';
import { createMetricsRegistry, scrapedGauge } from '@parley/service-kit';

describe('scrapedGauge', () => {
  it('shows the value read when the registry is scraped, not when the gauge was made', async () => {
    const registry = createMetricsRegistry('test', { collectDefaults: false });
    let open = 2;
    scrapedGauge(registry, { name: 'parley_test_open', help: 'Things open now' }, () => open);
    open = 5;
    expect(await registry.metrics()).toBe(
      '# HELP parley_test_open Things open now\n# TYPE parley_test_open gauge\nparley_test_open{service="test"} 5\n',
    );
    open = 0;
    expect(await registry.metrics()).toContain('parley_test_open{service="test"} 0\n');
  });

  it('shows a labelled gauge one series per set of labels read', async () => {
    const registry = new Registry();
    const queued: Record<string, number> = { a: 1, b: 0 };
    scrapedGauge(registry, { name: 'parley_test_queued', help: 'Queued', labelNames: ['queue'] }, () =>
      Object.entries(queued).map(([queue, n]) => [{ queue }, n] as const),
    );
    queued.b = 7;
    const text = await registry.metrics();
    expect(text).toContain('# HELP parley_test_queued Queued\n# TYPE parley_test_queued gauge\n');
    expect(text).toContain('parley_test_queued{queue="a"} 1\nparley_test_queued{queue="b"} 7\n');
  });
});
