/**
 * PGlite is one process's database: two processes on its files (group-ms and message-router started
 * on their shared default PGLITE_DATA_DIR, or one of them beside `npm start`) overwrite each other's
 * writes or crash. The second is refused at start, naming the process that holds it.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { openDatabase } from '@parley/postgres';

const settings = (dir: string) => ({ PGLITE_DATA_DIR: dir, DATABASE_POOL_SIZE: 1 });

/** Opens the database at `dir` and closes it again: what a second opener is told ('opened' if nothing). */
const secondOpen = (dir: string) =>
  openDatabase(settings(dir)).then(
    async (db) => (await db.close(), 'opened'),
    (err: Error) => err.message,
  );

/** The fixture holding `dir` open in its own process, once it has said so. */
async function holdInAnotherProcess(dir: string) {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', path.join(__dirname, 'fixtures/hold-pglite.ts'), dir],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  // The exit code, or the signal that ended it.
  const exited = new Promise<number | string | null>((resolve) =>
    child.once('exit', (code, signal) => resolve(code ?? signal)),
  );
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (chunk: Buffer) => chunk.toString().includes('open') && resolve());
    void exited.then((code) => reject(new Error(`the holder exited ${code} before opening`)));
  });
  return { pid: child.pid!, stop: () => (child.kill('SIGTERM'), exited) };
}

describe('PGlite in a data directory', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'pglite-lock-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('is refused to a second process while another has it open, and opens once that one closed it', async () => {
    const holder = await holdInAnotherProcess(dir);
    try {
      expect(await secondOpen(dir)).toBe(`data directory ${dir} is in use by process ${holder.pid}`);
    } finally {
      expect(await holder.stop()).toBe(0);
    }
    const db = await openDatabase(settings(dir));
    try {
      expect((await db.query('SELECT pid FROM holders')).rows).toEqual([{ pid: holder.pid }]);
    } finally {
      await db.close();
    }
  }, 60_000);

  it('is refused to a second opener in the same process until the first closes it', async () => {
    const first = await openDatabase(settings(dir));
    const refused = await secondOpen(dir);
    await first.close();
    expect(refused).toBe(`data directory ${dir} is in use by another PGlite database in this process`);
    const again = await openDatabase(settings(dir));
    await again.close();
  }, 60_000);
});
