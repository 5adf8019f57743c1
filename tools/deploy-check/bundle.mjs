#!/usr/bin/env node
// Bundles every deployable app (apps/*/src/main.ts, except the all-in-one dev launcher) and the
// operator tools (TOOLS) into one CommonJS file each with esbuild:
// `node tools/deploy-check/bundle.mjs [outdir]` (default dist/apps). The Dockerfile's build stage
// runs exactly this.
//
// Only the project's own code is bundled (the apps and the @parley/* libs, resolved through the
// tsconfig `paths`); every npm package stays external (`packages: 'external'`) and is loaded from
// the production node_modules at run time. Bundling npm packages breaks those that read files
// next to their own sources at run time: PGlite's .wasm/.data, @fastify/swagger-ui's static
// folder, protobufjs/google-gax's .proto/.json descriptors (firebase-admin), pino's worker
// transports. Keeping them external is the robust choice and costs nothing: the image ships
// node_modules anyway.
import { readdirSync, existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** Apps that are not deployed as their own process. */
export const NOT_DEPLOYED = ['launcher'];

/** Operator tools run from the image like the apps (`<image> dlq replay ...`), by name. */
export const TOOLS = { dlq: 'tools/dlq/src/main.ts' };

export function deployableApps() {
  return readdirSync(path.join(root, 'apps'))
    .filter((name) => !NOT_DEPLOYED.includes(name))
    .filter((name) => existsSync(path.join(root, 'apps', name, 'src/main.ts')))
    .sort();
}

export async function bundleApps(outdir = path.join(root, 'dist/apps')) {
  const apps = deployableApps();
  await build({
    absWorkingDir: root,
    entryPoints: {
      ...Object.fromEntries(apps.map((name) => [name, `apps/${name}/src/main.ts`])),
      ...TOOLS,
    },
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    packages: 'external',
    tsconfig: 'tsconfig.base.json',
    sourcemap: true,
    outdir,
    logLevel: 'warning',
  });
  return { apps, tools: Object.keys(TOOLS), outdir };
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const outdir = process.argv[2] ? path.resolve(process.argv[2]) : undefined;
  const { apps, tools, outdir: out } = await bundleApps(outdir);
  process.stdout.write(
    `bundled ${apps.length} apps and ${tools.length} tools into ${path.relative(process.cwd(), out) || '.'}: ${[...apps, ...tools].join(', ')}\n`,
  );
}
