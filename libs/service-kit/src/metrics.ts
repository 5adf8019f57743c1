import { collectDefaultMetrics, Registry } from 'prom-client';

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
