import path from 'node:path';
import { build } from 'esbuild';

/**
 * `npx tsx tools/bench/src/bundle.ts [outdir]` (default dist/bench): the benchmark client, the
 * Kafka-protocol broker and the ws-gateway as self-contained CommonJS files, npm packages inlined,
 * for a machine that has a Node binary and nothing else (no checkout, no node_modules): the
 * 100,000-socket idle run in tools/bench/device/idle-gateway.sh needs more open files and cores than
 * a developer box has. Unlike the image's bundles (tools/deploy-check/bundle.mjs), nothing stays
 * external: none of these three entry points loads an npm package that reads files beside itself.
 */
export const BENCH_BUNDLES = {
  bench: 'tools/bench/src/main.ts',
  broker: 'libs/kafka/src/broker/cli.ts',
  'ws-gateway': 'apps/ws-gateway/src/main.ts',
};

export async function bundleBench(outdir: string): Promise<string[]> {
  const root = path.resolve(__dirname, '../../..');
  await build({
    absWorkingDir: root,
    entryPoints: BENCH_BUNDLES,
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    // ws's optional native helpers: it falls back to JavaScript when they are missing.
    external: ['bufferutil', 'utf-8-validate'],
    tsconfig: 'tsconfig.base.json',
    outdir,
    logLevel: 'warning',
  });
  return Object.keys(BENCH_BUNDLES).map((name) => path.join(outdir, `${name}.js`));
}

if (require.main === module) {
  const outdir = path.resolve(process.argv[2] ?? 'dist/bench');
  bundleBench(outdir).then(
    (files) => process.stdout.write(`${files.map((f) => path.relative(process.cwd(), f)).join('\n')}\n`),
    (err) => {
      process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
      process.exit(1);
    },
  );
}
