import { migrate, SqlDatabase } from '@parley/postgres';
import { testDatabases } from '@parley/postgres/testing';
import { DAY_MS } from '@parley/service-kit';
import { GROUP_MIGRATIONS } from '../src/migrations';
import { createSqlReportStore, NewReport, ReportStore } from '../src/reports';

describe.each(testDatabases())('user reports in the report store on $name', (target) => {
  let db: SqlDatabase;
  let store: ReportStore;
  let ids = 0;
  beforeAll(async () => {
    db = await target.open();
    await migrate(db, 'group-ms', GROUP_MIGRATIONS);
    store = createSqlReportStore(db);
  });
  afterAll(() => target.dispose());

  const report = (reporter: string, user: string, at: number, extra: Partial<NewReport> = {}): NewReport => ({
    id: `r${++ids}`,
    reporter,
    user,
    reason: 'spam',
    at,
    ...extra,
  });
  const filed = async (r: NewReport, max = 10) => {
    const outcome = await store.file(r, max);
    if (!('filed' in outcome)) throw new Error(`refused until ${outcome.retryAt}`);
    return outcome.filed;
  };
  const listed = async (after: number, limit: number, maxBytes?: number) =>
    (await store.list(after, limit, maxBytes)).reports;
  const positionNow = async () => (await listed(0, 500)).at(-1)?.position ?? 0;

  it('keeps a report as filed, quoted messages and comment included, and lists reports in filing order, a page at a time', async () => {
    const start = await positionNow();
    const first = await filed(
      report('lister-a', 'troll', 1000, {
        reason: 'harassment',
        comment: 'keeps writing at night',
        messages: [{ mid: 'troll:1', body: { text: 'you again' }, sentAt: 990 }, { mid: 'troll:2' }],
      }),
    );
    expect(first).toEqual({
      id: expect.any(String),
      position: expect.any(Number),
      reporter: 'lister-a',
      user: 'troll',
      reason: 'harassment',
      comment: 'keeps writing at night',
      messages: [{ mid: 'troll:1', body: { text: 'you again' }, sentAt: 990 }, { mid: 'troll:2' }],
      at: 1000,
    });
    await filed(report('lister-b', 'troll', 1001));
    await filed(report('lister-c', 'spammer', 1002));
    const page1 = await listed(start, 2);
    expect(page1.map((r) => [r.reporter, r.user])).toEqual([
      ['lister-a', 'troll'],
      ['lister-b', 'troll'],
    ]);
    expect(page1[0]).toEqual(first);
    expect(page1[1]).not.toHaveProperty('comment');
    expect(page1[1].messages).toEqual([]);
    const page2 = await listed(page1[1].position, 2);
    expect(page2.map((r) => r.reporter)).toEqual(['lister-c']);
    expect(await store.list(page2[0].position, 2)).toEqual({ reports: [], more: false });
  });

  it('stops a page once its comments and quoted messages reach the bytes given, one report at least, and says more may follow', async () => {
    const start = await positionNow();
    // A report's messages are kept as their JSON text: 27 bytes besides this body.
    const quoting = (bytes: number) => ({ messages: [{ mid: 'big:1', body: 'x'.repeat(bytes - 27) }] });
    await filed(report('sized-0', 'big', 100, quoting(1000)));
    await filed(report('sized-1', 'big', 101, quoting(1000)));
    await filed(report('sized-2', 'big', 102, { ...quoting(3000), comment: 'é' })); // 3,002 bytes
    await filed(report('sized-3', 'big', 103, quoting(1000)));
    const page = async (after: number, limit: number, maxBytes?: number) => {
      const { reports, more } = await store.list(after, limit, maxBytes);
      return [reports.map((r) => r.reporter.replace('sized-', '')), more];
    };
    // 2,000 bytes before the third: under 2,001, so it is taken; not under 2,000.
    expect(await page(start, 10, 2001)).toEqual([['0', '1', '2'], true]);
    expect(await page(start, 10, 2000)).toEqual([['0', '1'], true]);
    // The first is always taken, however large.
    expect(await page(start, 10, 1)).toEqual([['0'], true]);
    const second = (await listed(start, 2))[1].position;
    expect(await page(second, 10, 1)).toEqual([['2'], true]);
    // The comment counts, in bytes ('é' is 2).
    expect(await page(second, 10, 3002)).toEqual([['2'], true]);
    expect(await page(second, 10, 3003)).toEqual([['2', '3'], false]);
    // A page full by count says more may follow, as before; the list's end does not.
    expect(await page(start, 2)).toEqual([['0', '1'], true]);
    expect(await page(start, 10)).toEqual([['0', '1', '2', '3'], false]);
    expect(await page(start, 4)).toEqual([['0', '1', '2', '3'], true]);
  });

  it('refuses a report past the daily limit, saying when the oldest of the day leaves it, and takes one again then', async () => {
    const t = 10 * DAY_MS;
    await filed(report('eager', 'x1', t), 3);
    await filed(report('eager', 'x2', t + 1000), 3);
    await filed(report('eager', 'x3', t + 2000), 3);
    expect(await store.file(report('eager', 'x4', t + 5000), 3)).toEqual({ retryAt: t + DAY_MS });
    // Another reporter is not counted with them.
    await filed(report('calm', 'x4', t + 5000), 3);
    // A day after the first, it has left the window: one more is taken, then none again.
    await filed(report('eager', 'x4', t + DAY_MS + 1), 3);
    expect(await store.file(report('eager', 'x5', t + DAY_MS + 2), 3)).toEqual({
      retryAt: t + 1000 + DAY_MS,
    });
  });

  it('holds the daily limit when one reporter files many at once (over the pool on Postgres, one by one on PGlite)', async () => {
    const outcomes = await Promise.all(
      Array.from({ length: 8 }, (_, i) => store.file(report('burst', `b${i}`, 20 * DAY_MS + i), 5)),
    );
    expect(outcomes.filter((o) => 'filed' in o)).toHaveLength(5);
    expect((await listed(0, 500)).filter((r) => r.reporter === 'burst')).toHaveLength(5);
  });

  it('lets a moderator who pages on from the last position read miss no report, whatever order the filings commit in (over the pool on Postgres, one by one on PGlite)', async () => {
    // PGlite is one session: its transactions never overlap.
    if (db.kind !== 'postgres') return;
    let inserted!: () => void;
    const insertedNow = new Promise<void>((resolve) => (inserted = resolve));
    let commit!: () => void;
    const committing = new Promise<void>((resolve) => (commit = resolve));
    // A filing slow to commit (a busy server, a long fsync): its INSERT is done, its COMMIT not yet.
    const slowDb: SqlDatabase = {
      kind: db.kind,
      query: (sql, params) => db.query(sql, params),
      ping: () => db.ping(),
      close: () => db.close(),
      transaction: (work, options) =>
        db.transaction(async (tx) => {
          const value = await work(tx);
          inserted();
          await committing;
          return value;
        }, options),
    };
    const start = await positionNow();
    const slow = createSqlReportStore(slowDb).file(report('slow-filer', 'q1', 1), 10);
    await insertedNow;
    // Another reporter files meanwhile; a moderator reads the list, and keeps the last position.
    const quick = store.file(report('quick-filer', 'q2', 2), 10);
    await Promise.race([quick, new Promise((resolve) => setTimeout(resolve, 300))]);
    const seen = await listed(start, 500);
    const last = seen.at(-1)?.position ?? start;
    commit();
    expect([await slow, await quick].every((outcome) => 'filed' in outcome)).toBe(true);
    const after = await listed(last, 500);
    expect([...seen, ...after].map((r) => r.reporter)).toEqual(['slow-filer', 'quick-filer']);
  });

  it("forgets on erasure the reports a user filed, not those about them (the moderators'), no one else's", async () => {
    await filed(report('erased-user', 'y1', 1));
    await filed(report('y2', 'erased-user', 2));
    await filed(report('y2', 'y1', 3));
    expect(await store.forgetReportsOf('erased-user')).toBe(1);
    const left = (await listed(0, 500)).filter((r) => [r.reporter, r.user].some((u) => /^y\d$/.test(u)));
    expect(left.map((r) => [r.reporter, r.user])).toEqual([
      ['y2', 'erased-user'],
      ['y2', 'y1'],
    ]);
    expect(await store.forgetReportsOf('erased-user')).toBe(0);
  });

  it('forgets the reports filed before a time, and no later one', async () => {
    await filed(report('old-reporter', 'z', 5));
    await filed(report('new-reporter', 'z', 50 * DAY_MS));
    expect(await store.forgetReportsBefore(6)).toBeGreaterThanOrEqual(1);
    const reporters = (await listed(0, 500)).map((r) => r.reporter);
    expect(reporters).not.toContain('old-reporter');
    expect(reporters).toContain('new-reporter');
  });
});
