/** @expectedSeconds 35 */
import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort } from '../../../apps/launcher/src/ports';
import { bundleBench } from '../src/bundle';

/**
 * The idle-connection run for a machine with Node alone: the bundles are built into a folder
 * outside the repository (no node_modules to fall back on), and the device script drives them end
 * to end with a few hundred sockets: broker, one ws-gateway process, the bench's idle scenario.
 */
/** The report of a bench run that held 300 idle sockets on one gateway, the one it wrote into `out`. */
function succeededWith300Idle(run: SpawnSyncReturns<string>, out: string) {
  expect(run.stderr).toBe('');
  expect(run.status).toBe(0);
  const [file, ...more] = readdirSync(out).filter((name) => name.endsWith('.json'));
  expect(more).toEqual([]);
  const report = JSON.parse(readFileSync(path.join(out, file!), 'utf8'));
  expect(report.fleet.idle).toMatchObject({
    requested: 300,
    connected: 300,
    failed: 0,
    gatewayConnections: 300,
    sampled: 'gateway',
  });
  return report;
}

describe('bench bundles and tools/bench/device/idle-gateway.sh', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'parley-bench-bundle-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('measures the memory of idle sockets on one ws-gateway process, from the bundles alone', async () => {
    const bundles = await bundleBench(path.join(dir, 'bundle'));
    expect(bundles.map((file) => path.basename(file)).sort()).toEqual([
      'bench.js',
      'broker.js',
      'embedded-gateway.thread.js',
      'fleet-child.js',
      'relay.js',
      'ws-gateway.js',
    ]);

    const out = path.join(dir, 'out');
    const run = spawnSync(
      'bash',
      [
        path.resolve(__dirname, '../device/idle-gateway.sh'),
        process.execPath,
        path.join(dir, 'bundle'),
        out,
        '300',
      ],
      {
        encoding: 'utf8',
        timeout: 120_000,
        env: {
          ...process.env,
          BROKER_PORT: String(await freePort()),
          WS_PORT: String(await freePort()),
          INTERNAL_PORT: String(await freePort()),
        },
      },
    );
    const report = succeededWith300Idle(run, out);
    // The sampled pid is the gateway's Node process itself, not a shell that started it.
    expect(report.fleet.idle.rssBeforeMiB).toBeGreaterThan(30);
    expect(Number.isFinite(report.fleet.idle.bytesPerConnection)).toBe(true);
    expect(report.fleet.where).toContain('sampling pid');
  }, 150_000);

  // These run after the first test, which built the bundles.
  it('measures idle sockets on a ws-gateway process of its own beside the one-process fleet', () => {
    const out = path.join(dir, 'out-fleet');
    const run = spawnSync(
      process.execPath,
      [path.join(dir, 'bundle', 'bench.js'), '--quick', '--only', 'idle', '--idle', '300', '--out', out],
      { encoding: 'utf8', timeout: 120_000 },
    );
    const report = succeededWith300Idle(run, out);
    expect(report.fleet.idle.note).toContain('a ws-gateway process of its own');
    // A gateway alone, not the fleet's process with every service in it (several hundred MiB).
    expect(report.fleet.idle.rssBeforeMiB).toBeLessThan(250);
  }, 150_000);

  it('starts the one-process fleet from its bundle: PGlite from its copied files, the gateway on its thread', async () => {
    const child = spawn(process.execPath, [path.join(dir, 'bundle', 'fleet-child.js')], {
      cwd: dir,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const ready = await new Promise<{ urls: { ws: string; rest: string } }>((resolve, reject) => {
      let out = '';
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        const line = /^FLEET_READY (.*)$/m.exec(out);
        if (line) resolve(JSON.parse(line[1]!));
      });
      child.once('exit', (code) => reject(new Error(`fleet-child exited with ${code}: ${stderr}`)));
    });
    try {
      const response = await fetch(`${ready.urls.rest}/readyz`);
      expect(response.status).toBe(200);
      expect(ready.urls.ws).toMatch(/^ws:\/\/127\.0\.0\.1:\d+\/v1\/ws$/);
    } finally {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
    }
  }, 60_000);
});
