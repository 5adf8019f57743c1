/** `npm start` (apps/launcher/src/main.ts) refuses bad settings as the services do: exit 2, naming them. */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

describe('npm start', () => {
  it('exits 2 naming a LOG_LEVEL pino has no level for, before it starts anything', () => {
    const dataDir = mkdtempSync(path.join(tmpdir(), 'launcher-main-'));
    try {
      const run = spawnSync(process.execPath, ['--import', 'tsx', path.join(__dirname, '../src/main.ts')], {
        env: { ...process.env, PARLEY_DATA_DIR: dataDir, LOG_LEVEL: 'verbose' },
        encoding: 'utf8',
        timeout: 30_000,
      });
      expect(run.stderr).toMatch(
        /^parley: invalid configuration:\n {2}- LOG_LEVEL: must be one of .*\(got "verbose"\)\n$/,
      );
      expect(run.status).toBe(2);
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
