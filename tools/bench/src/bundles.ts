/**
 * The bench's bundles (tools/bench/src/bundle.ts builds them) by name, each with its entry point:
 * what proc.ts runs instead of an entry when the bench itself runs from a bundle.
 */
export const BENCH_BUNDLES: Record<string, string> = {
  bench: 'tools/bench/src/main.ts',
  // What the bench spawns, and what they start.
  'fleet-child': 'tools/bench/src/fleet-child.ts',
  'embedded-gateway.thread': 'apps/launcher/src/embedded-gateway.thread.ts',
  relay: 'tools/bench/src/relay.ts',
  broker: 'libs/kafka/src/broker/cli.ts',
  'ws-gateway': 'apps/ws-gateway/src/main.ts',
};

/** The bundle built from `entry`. */
export function bundleOf(entry: string): string {
  const name = Object.keys(BENCH_BUNDLES).find((key) => BENCH_BUNDLES[key] === entry);
  if (!name) throw new Error(`${entry} is not bundled (tools/bench/src/bundles.ts)`);
  return `${name}.js`;
}
