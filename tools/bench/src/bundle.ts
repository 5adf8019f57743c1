import { copyFileSync, cpSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { build } from 'esbuild';
import { BENCH_BUNDLES } from './bundles';

/**
 * `npx tsx tools/bench/src/bundle.ts [outdir]` (default dist/bench): the bench and everything it
 * starts (bundles.ts) as CommonJS files with their npm packages inlined, for a machine that has a
 * Node binary and nothing else (no checkout, no node_modules), such as a bigger machine borrowed
 * for tools/bench/device/idle-gateway.sh or `node bench.js --service-cpus 0,1`. Two packages read
 * files beside their own modules at run time: PGlite stays a package with only the files it needs,
 * and swagger-ui's static folder is copied beside the bundles.
 */

/** PGlite reads its .wasm and .data beside its own module: it stays a package, with just these files. */
const PGLITE = '@electric-sql/pglite';
const PGLITE_FILES = [
  'package.json',
  'dist/index.cjs',
  'dist/pglite.wasm',
  'dist/pglite.data',
  'dist/initdb.wasm',
];

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
    // tsx: only the TypeScript path of the launcher's service threads asks for it.
    external: ['bufferutil', 'utf-8-validate', 'tsx', PGLITE],
    tsconfig: 'tsconfig.base.json',
    outdir,
    logLevel: 'warning',
  });
  const pglite = path.resolve(path.dirname(require.resolve(PGLITE)), '..');
  for (const file of PGLITE_FILES) {
    const target = path.join(outdir, 'node_modules', PGLITE, file);
    mkdirSync(path.dirname(target), { recursive: true });
    copyFileSync(path.join(pglite, file), target);
  }
  // @fastify/swagger-ui, inlined, reads its static folder beside the module it became part of.
  const swaggerUi = path.dirname(require.resolve('@fastify/swagger-ui'));
  cpSync(path.join(swaggerUi, 'static'), path.join(outdir, 'static'), { recursive: true });
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
