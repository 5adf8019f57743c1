import { collectDefaultMetrics, Gauge, Registry } from 'prom-client';

/** A Prometheus registry per service instance (not the global one), with process metrics. */
export function createMetricsRegistry(
  service: string,
  options: { collectDefaults?: boolean } = {},
): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ service });
  if (options.collectDefaults ?? true) collectDefaultMetrics({ register: registry, prefix: 'parley_' });
  return registry;
}

export interface ScrapedGaugeConfig<L extends string = never> {
  name: string;
  help: string;
  labelNames?: readonly L[];
}

/** A labelled gauge's values when scraped: one per set of labels. */
export type LabelledReadings<L extends string> = Iterable<readonly [Partial<Record<L, string>>, number]>;

/**
 * A gauge registered in `registry` whose value is `read()` when the registry is scraped, rather
 * than kept up to date by every change: a number, or for a labelled gauge one per set of labels.
 */
export function scrapedGauge(registry: Registry, config: ScrapedGaugeConfig, read: () => number): void;
export function scrapedGauge<L extends string>(
  registry: Registry,
  config: ScrapedGaugeConfig<L> & { labelNames: readonly L[] },
  read: () => LabelledReadings<L>,
): void;
export function scrapedGauge<L extends string>(
  registry: Registry,
  { name, help, labelNames = [] }: ScrapedGaugeConfig<L>,
  read: () => number | LabelledReadings<L>,
): void {
  new Gauge<L>({
    name,
    help,
    labelNames,
    registers: [registry],
    collect() {
      const readings = read();
      if (typeof readings === 'number') this.set(readings);
      else for (const [labels, value] of readings) this.set(labels, value);
    },
  });
}
