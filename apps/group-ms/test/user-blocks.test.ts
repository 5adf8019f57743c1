import { migrate, SqlDatabase } from '@parley/postgres';
import { testDatabases } from '@parley/postgres/testing';
import { GroupStore } from '../src/group-store';
import { GROUP_MIGRATIONS } from '../src/migrations';
import { createSqlGroupStore } from '../src/sql-group-store';

describe.each(testDatabases())('user blocks in the group store on $name', (target) => {
  let db: SqlDatabase;
  let store: GroupStore;
  beforeAll(async () => {
    db = await target.open();
    await migrate(db, 'group-ms', GROUP_MIGRATIONS);
    store = createSqlGroupStore(db);
  });
  afterAll(() => target.dispose());

  it('blocks a user once: a repeat is already so and keeps the first time; an unblock undoes it, and again changes nothing', async () => {
    expect(await store.block('ann', 'bob', 1000, 10)).toBe('blocked');
    expect(await store.block('ann', 'bob', 2000, 10)).toBe('already');
    expect(await store.block('ann', 'cat', 1500, 10)).toBe('blocked');
    // bob's block is still the one at 1000: listed before cat's at 1500
    expect(await store.blocksOf('ann')).toEqual(['bob', 'cat']);
    await store.unblock('ann', 'bob', 9000);
    await store.unblock('ann', 'bob', 9000);
    await store.unblock('ann', 'never-blocked', 9000);
    expect(await store.blocksOf('ann')).toEqual(['cat']);
    // One way only: ann blocking cat is not cat blocking ann.
    expect(await store.blocksOf('cat')).toEqual([]);
  });

  it('lists the users blocked oldest block first, then by id', async () => {
    await store.block('lister', 'zed', 3000, 10);
    await store.block('lister', 'amy', 1000, 10);
    await store.block('lister', 'max', 2000, 10);
    await store.block('lister', 'kim', 2000, 10);
    expect(await store.blocksOf('lister')).toEqual(['amy', 'kim', 'max', 'zed']);
    expect(await store.blocksOf('nobody')).toEqual([]);
  });

  it('refuses a block past the limit as too_many, takes a repeat at the limit as already, and one again after an unblock', async () => {
    expect(await store.block('full', 'u1', 1, 2)).toBe('blocked');
    expect(await store.block('full', 'u2', 2, 2)).toBe('blocked');
    expect(await store.block('full', 'u3', 3, 2)).toBe('too_many');
    expect(await store.block('full', 'u2', 4, 2)).toBe('already');
    expect(await store.blocksOf('full')).toEqual(['u1', 'u2']);
    await store.unblock('full', 'u1', 9000);
    expect(await store.block('full', 'u3', 5, 2)).toBe('blocked');
    expect(await store.blocksOf('full')).toEqual(['u2', 'u3']);
  });

  it('holds the limit when blocks by one user race for its last place: one is blocked, the others too_many', async () => {
    // On PGlite (one session) they run one after another; on Postgres, on the pool's connections.
    await store.block('racer', 'r0', 1, 3);
    await store.block('racer', 'r1', 2, 3);
    const outcomes = await Promise.all(
      ['r2', 'r3', 'r4', 'r5'].map((blocked, i) => store.block('racer', blocked, 10 + i, 3)),
    );
    expect(outcomes.sort()).toEqual(['blocked', 'too_many', 'too_many', 'too_many']);
    expect(await store.blocksOf('racer')).toHaveLength(3);
  });

  it('holds the limit for two blocks at once at the limit: the second waits for the first, then counts its row', async () => {
    if (target.name !== 'postgres') return; // PGlite is one session: its transactions never overlap
    // The first block stops in its transaction once it has counted (one place left), until released.
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let counted!: () => void;
    const hasCounted = new Promise<void>((resolve) => (counted = resolve));
    const pausing: SqlDatabase = {
      ...db,
      transaction: (work, options) =>
        db.transaction(
          (tx) =>
            work({
              async query<R>(sql: string, params?: unknown[]) {
                const result = await tx.query<R>(sql, params);
                if (/count\(\*\)/.test(sql)) {
                  counted();
                  await released;
                }
                return result;
              },
            }),
          options,
        ),
    };
    const other = await target.open(); // the second block on a connection of its own
    await store.block('pair', 'p0', 1, 2);
    const first = createSqlGroupStore(pausing).block('pair', 'p1', 2, 2);
    await hasCounted;
    const second = createSqlGroupStore(other).block('pair', 'p2', 3, 2);
    let secondDone = false;
    void second.then(() => (secondDone = true));
    // Until the second is waiting for the first's lock (or, without one, has finished on its own).
    const waitingForLock = async () =>
      (await db.query("SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")).rows.length > 0;
    while (!secondDone && !(await waitingForLock())) await new Promise((resolve) => setTimeout(resolve, 5));
    release();
    expect([await first, await second]).toEqual(['blocked', 'too_many']);
    expect(await store.blocksOf('pair')).toEqual(['p0', 'p1']);
  });

  it('answers which of the users asked about blocked a user, in the order asked, each once', async () => {
    await store.block('b1', 'target', 1, 10);
    await store.block('b2', 'target', 2, 10);
    await store.block('b3', 'someone-else', 3, 10);
    await store.block('target', 'b4', 4, 10); // target blocking b4 makes b4 no blocker of target
    expect(await store.blockersAmong('target', ['b4', 'b2', 'b3', 'b1', 'b2', 'stranger'])).toEqual([
      'b2',
      'b1',
    ]);
    expect(await store.blockersAmong('target', [])).toEqual([]);
    expect(await store.blockersAmong('b4', ['target'])).toEqual(['target']);
  });

  it("forgets on erasure the blocks the user made, not those made of them (theirs to lift), no one else's", async () => {
    await store.block('erased', 'x1', 1, 10);
    await store.block('erased', 'x2', 2, 10);
    await store.block('y1', 'erased', 3, 10);
    await store.block('y1', 'x1', 4, 10);
    expect(await store.forgetBlocksOf('erased', 9000)).toBe(2);
    expect(await store.blocksOf('erased')).toEqual([]);
    expect(await store.blockersAmong('erased', ['y1'])).toEqual(['y1']);
    expect(await store.blocksOf('y1')).toEqual(['erased', 'x1']);
    expect(await store.forgetBlocksOf('erased', 9000)).toBe(0);
  });

  it('records whose blocks changed, in the order they did: a block, an unblock, and an erasure; a repeat, a refusal or an unblock of no block records nothing', async () => {
    const since = await maxVersion();
    await store.block('w1', 'v1', 100, 2);
    await store.block('w2', 'v1', 101, 2);
    await store.block('w1', 'v1', 102, 2); // already
    await store.block('w1', 'v2', 103, 2);
    await store.block('w1', 'v3', 104, 2); // too_many
    await store.unblock('w2', 'nobody', 105);
    expect(await changesAfter(since)).toEqual([
      ['w2', 101],
      ['w1', 103],
    ]);
    await store.unblock('w2', 'v1', 106);
    await store.block('v1', 'w3', 107, 2);
    // v1 is erased: v1's own block of w3 goes; w1's block of v1 stays, and so w1's blocks did not change.
    expect(await store.forgetBlocksOf('v1', 108)).toBe(1);
    expect(await changesAfter(since)).toEqual([
      ['w1', 103],
      ['w2', 106],
      ['v1', 108],
    ]);
    // Versions rise with each change, never handed out twice.
    const versions = (await changedRows(since)).map((r) => r.version);
    expect(new Set(versions).size).toBe(versions.length);
    expect([...versions].sort((a, b) => a - b)).toEqual(versions);
  });

  it('hands out one version a change when many users block at once (over the pool on Postgres, one by one on PGlite)', async () => {
    const since = await maxVersion();
    const users = Array.from({ length: 20 }, (_, i) => `concurrent${i}`);
    expect(await Promise.all(users.map((user) => store.block(user, 'target', 500, 5)))).toEqual(
      users.map(() => 'blocked'),
    );
    const versions = (await changedRows(since)).map((r) => r.version);
    expect(versions).toEqual(Array.from({ length: 20 }, (_, i) => since + 1 + i));
  });

  it('forgets the block changes recorded before a time, and no later one', async () => {
    const since = await maxVersion();
    await store.block('old-changer', 'z1', 10, 5);
    await store.block('new-changer', 'z1', 20_000, 5);
    expect(await store.forgetBlockChangesBefore(11)).toBeGreaterThanOrEqual(1);
    expect((await changesAfter(since)).map(([user]) => user)).toEqual(['new-changer']);
  });

  it('never hands a version out again, even once the purge forgot every change (a quiet week): a router reads only above the last it saw', async () => {
    await store.block('quiet-1', 'z2', 30, 5);
    const seen = await maxVersion(); // where a router's reads got to
    expect(await store.forgetBlockChangesBefore(Number.MAX_SAFE_INTEGER)).toBeGreaterThanOrEqual(1);
    await store.unblock('quiet-1', 'z2', 40);
    expect((await changesAfter(seen)).map(([user]) => user)).toEqual(['quiet-1']);
  });

  const maxVersion = async () =>
    Number(
      (await db.query<{ v: string }>('SELECT coalesce(max(version), 0) AS v FROM user_block_changes')).rows[0]
        .v,
    );
  const changedRows = async (since: number) =>
    (
      await db.query<{ user_id: string; version: string; changed_at: string }>(
        'SELECT user_id, version, changed_at FROM user_block_changes WHERE version > $1 ORDER BY version',
        [since],
      )
    ).rows.map((r) => ({ user: r.user_id, version: Number(r.version), at: Number(r.changed_at) }));
  /** [user, changed at] of the changes after `since`, in version order (one erasure's users by id). */
  const changesAfter = async (since: number) => {
    const rows = await changedRows(since);
    const byVersionThenId = rows.sort((a, b) =>
      a.at === b.at ? a.user.localeCompare(b.user) : a.version - b.version,
    );
    return byVersionThenId.map((r) => [r.user, r.at] as [string, number]);
  };
});

describe.each(testDatabases())('user block change versions after migration 028 on $name', (target) => {
  afterAll(() => target.dispose());

  it('go on above the versions recorded before the sequence existed', async () => {
    const db = await target.open();
    const before = GROUP_MIGRATIONS.filter((m) => m.id < '027');
    await migrate(db, 'group-ms', before);
    await db.query(
      `INSERT INTO user_block_changes (user_id, version, changed_at) VALUES ('early-1', 1, 1), ('early-2', 7, 2)`,
    );
    await migrate(db, 'group-ms', GROUP_MIGRATIONS);
    await createSqlGroupStore(db).block('late', 'z', 3, 5);
    const rows = await db.query<{ version: string }>(
      `SELECT version FROM user_block_changes WHERE user_id = 'late'`,
    );
    expect(rows.rows.map((r) => Number(r.version))).toEqual([8]);
  });
});
