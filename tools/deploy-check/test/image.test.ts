/**
 * The image's build step, run here (no Docker engine needed): tools/deploy-check/bundle.mjs
 * bundles every deployable app with esbuild, and each bundle, started through the image's
 * entrypoint (deploy/docker/run.cjs), loads all of its modules and reaches config validation.
 * Plus static checks of the Dockerfile and .dockerignore.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, mkdirSync } from 'node:fs';
import { builtinModules } from 'node:module';
import path from 'node:path';
import { deployableApps, fleet, imageEnv, ROOT } from '../src/fleet';

const dist = path.join(ROOT, 'dist');
mkdirSync(dist, { recursive: true });
// Inside the repository so the bundles resolve node_modules as they do in the image (/app).
const outdir = mkdtempSync(path.join(dist, 'deploy-check-'));
afterAll(() => rmSync(outdir, { recursive: true, force: true }));

const node = (args: string[], env: Record<string, string> = {}) =>
  spawnSync(process.execPath, args, {
    cwd: ROOT,
    encoding: 'utf8',
    timeout: 60_000,
    env: { PATH: process.env.PATH ?? '', ...env },
  });

/** Operator tools bundled beside the apps (bundle.mjs's TOOLS), each from tools/<name>. */
const TOOLS = ['dlq'];
const bundles = () =>
  readdirSync(outdir)
    .filter((f) => f.endsWith('.js'))
    .map((f) => f.slice(0, -3));

describe('bundling (the Dockerfile build stage)', () => {
  let bundled: ReturnType<typeof node>;
  beforeAll(() => {
    bundled = node(['tools/deploy-check/bundle.mjs', outdir]);
  });

  it('bundles every deployable app', () => {
    expect(bundled.stderr).toBe('');
    expect(bundled.status).toBe(0);
    for (const app of deployableApps())
      expect([app, existsSync(path.join(outdir, `${app}.js`))]).toEqual([app, true]);
    expect(bundles().sort()).toEqual([...deployableApps(), ...TOOLS].sort());
  });

  it.each(TOOLS)(
    'the %s tool runs through the entrypoint: config checked first, then its arguments',
    (tool) => {
      const badConfig = node(['deploy/docker/run.cjs', tool], {
        PARLEY_DIST: outdir,
        LOG_LEVEL: 'not-a-level',
      });
      expect(badConfig.stderr).toContain(`${tool}: invalid configuration`);
      expect(badConfig.status).toBe(2);
      const badArgs = node(['deploy/docker/run.cjs', tool, 'no-such-command'], { PARLEY_DIST: outdir });
      expect(badArgs.stderr).toMatch(new RegExp(`^${tool}: .*no-such-command.*\\n$`));
      expect(badArgs.status).toBe(2);
    },
  );

  it.each(fleet().map((a) => a.name))(
    '%s: the bundle loads through the entrypoint and validates its config',
    (app) => {
      // A bad LOG_LEVEL: the app must get as far as its config check (all modules resolved) and exit 2.
      const run = node(['deploy/docker/run.cjs', app], { PARLEY_DIST: outdir, LOG_LEVEL: 'not-a-level' });
      expect(run.stderr).toContain(`${app}: invalid configuration`);
      expect(run.status).toBe(2);
    },
  );

  it('requires only production dependencies (the image installs with --omit=dev)', () => {
    const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
    const required = new Set<string>();
    for (const bundle of bundles()) {
      const code = readFileSync(path.join(outdir, `${bundle}.js`), 'utf8');
      for (const [, spec] of code.matchAll(/require\("([^"]+)"\)/g)) {
        if (spec.startsWith('node:') || builtinModules.includes(spec.split('/')[0])) continue;
        required.add(spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]);
      }
    }
    expect(required.size).toBeGreaterThan(0);
    expect([...required].filter((name) => !(name in pkg.dependencies))).toEqual([]);
  });

  it('the entrypoint refuses an unknown app with usage', () => {
    const run = node(['deploy/docker/run.cjs', 'no-such-app'], { PARLEY_DIST: outdir });
    expect(run.status).toBe(64);
    expect(run.stderr).toContain('usage');
  });
});

describe('Dockerfile', () => {
  const dockerfile = readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8');
  const lines = dockerfile.split('\n').filter((l) => !l.trim().startsWith('#'));
  const stages = lines.filter((l) => /^FROM\s/i.test(l));
  const runtime = lines.slice(lines.findIndex((l) => /^FROM .* AS runtime/i.test(l)));

  it('is multi-stage, with a pinned slim Node 20 base', () => {
    expect(stages.length).toBeGreaterThanOrEqual(3);
    expect(dockerfile).toMatch(/ARG NODE_IMAGE=node:20\.\d+\.\d+-\w+-slim/);
  });

  it('bundles with the same script the tests run, and ships production dependencies only', () => {
    expect(dockerfile).toContain('node tools/deploy-check/bundle.mjs dist/apps');
    expect(dockerfile).toMatch(/npm ci --omit=dev/);
  });

  it("copies each bundled tool's sources into the build stage", () => {
    for (const tool of TOOLS) expect(lines).toContain(`COPY tools/${tool} ./tools/${tool}`);
  });

  it('runs as a non-root user through the entrypoint, exposing every app port', () => {
    const user = runtime.find((l) => /^USER\s/.test(l));
    expect(user).toBeDefined();
    expect(user).not.toMatch(/^USER\s+(root|0)(:|$)/);
    expect(runtime.join('\n')).toMatch(/ENTRYPOINT \["node", "\/app\/run.cjs"\]/);
    const exposed = runtime
      .filter((l) => l.startsWith('EXPOSE'))
      .join(' ')
      .split(/\s+/)
      .slice(1)
      .map(Number);
    const ports = fleet()
      .flatMap((a) => [a.port, a.internalPort])
      .filter((p): p is number => p !== undefined);
    expect(exposed.sort()).toEqual([...new Set(ports)].sort());
  });

  it('runs as production unless told otherwise: the public development secrets refuse to start', () => {
    expect(imageEnv()).toMatchObject({ NODE_ENV: 'production', PARLEY_ENV: 'production' });
  });

  it('.dockerignore keeps node_modules, git and local data out of the context', () => {
    const ignore = readFileSync(path.join(ROOT, '.dockerignore'), 'utf8').split('\n');
    for (const entry of ['**/node_modules', '.git', '**/.data', '**/dist']) expect(ignore).toContain(entry);
  });
});
