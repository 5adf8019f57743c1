import pino from 'pino';
import { migrate, SqlDatabase } from '@parley/postgres';
import { testDatabases } from '@parley/postgres/testing';
import { blockKey, createSqlBlockReader } from '../src/blocks';
// The router reads group-ms's table: test against group-ms's own schema, not a copy.
import { GROUP_MIGRATIONS } from '../../group-ms/src/migrations';

function capturedLogger() {
  const lines: Array<{ level: number; msg: string }> = [];
  return {
    logger: pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) }),
    lines,
  };
}

describe.each(testDatabases())('SQL block reader on $name', (target) => {
  let db: SqlDatabase;
  beforeAll(async () => {
    db = await target.open();
    await migrate(db, 'group-ms', GROUP_MIGRATIONS);
    // As group-ms writes them: user_id blocked blocked_id.
    await db.query(
      `INSERT INTO user_blocks (user_id, blocked_id, created_at)
       VALUES ('bob', 'mallory', 1), ('carol', 'mallory', 2), ('bob', 'eve', 3)`,
    );
  });
  afterAll(() => target.dispose());

  it('answers which recipients blocked which senders, and which blocked anyone at all, in one read', async () => {
    const reader = createSqlBlockReader(db, pino({ level: 'silent' }));
    const blocked = await reader.blockedPairs([
      { recipient: 'bob', sender: 'mallory' },
      { recipient: 'bob', sender: 'mallory' }, // the same pair twice in a batch
      { recipient: 'mallory', sender: 'bob' }, // the other way round: not a block
      { recipient: 'carol', sender: 'eve' }, // bob blocked eve, carol did not
      { recipient: 'carol', sender: 'mallory' },
      { recipient: 'dave', sender: 'alice' },
    ]);
    expect([...blocked.blocked].sort()).toEqual(
      [blockKey('bob', 'mallory'), blockKey('carol', 'mallory')].sort(),
    );
    expect([...blocked.blockingAnyone].sort()).toEqual(['bob', 'carol']);
    const none = { blocked: new Set(), blockingAnyone: new Set() };
    expect(await reader.blockedPairs([])).toEqual(none);
    // dave blocked nobody; bob blocked others, not alice.
    expect(
      await reader.blockedPairs([
        { recipient: 'dave', sender: 'mallory' },
        { recipient: 'bob', sender: 'alice' },
      ]),
    ).toEqual({ blocked: new Set(), blockingAnyone: new Set(['bob']) });
  });

  it('asks Postgres once per call, with each distinct pair once', async () => {
    const queries: unknown[][] = [];
    const counting = {
      query: (sql: string, params?: unknown[]) => (queries.push(params ?? []), db.query(sql, params)),
    };
    const reader = createSqlBlockReader(counting as SqlDatabase, pino({ level: 'silent' }));
    const pairs = Array.from({ length: 300 }, (_, i) => ({ recipient: `u${i % 100}`, sender: 'mallory' }));
    expect((await reader.blockedPairs(pairs)).blocked).toEqual(new Set());
    expect(queries).toHaveLength(1);
    expect((queries[0][0] as string[]).length).toBe(100);
  });

  it('reads no blocks, warning once, while group-ms has not created user_blocks (a router rolled out first)', async () => {
    // A database of the same kind where group-ms has not migrated: a fresh schema, or a fresh PGlite.
    const unmigrated = testDatabases().find((t) => t.name === target.name)!;
    try {
      const { logger, lines } = capturedLogger();
      const reader = createSqlBlockReader(await unmigrated.open(), logger);
      const none = { blocked: new Set(), blockingAnyone: new Set() };
      expect(await reader.blockedPairs([{ recipient: 'bob', sender: 'mallory' }])).toEqual(none);
      expect(await reader.blockedPairs([{ recipient: 'bob', sender: 'mallory' }])).toEqual(none);
      expect(lines.filter((l) => l.level === 40).map((l) => l.msg)).toEqual([
        expect.stringContaining('user_blocks does not exist'),
      ]);
    } finally {
      await unmigrated.dispose();
    }
  });

  it('fails when the database does, so the router can route the batch unchecked and count it', async () => {
    const failing = {
      query: () => Promise.reject(Object.assign(new Error('connection refused'), { code: 'ECONNREFUSED' })),
    };
    const reader = createSqlBlockReader(failing as unknown as SqlDatabase, pino({ level: 'silent' }));
    await expect(reader.blockedPairs([{ recipient: 'bob', sender: 'mallory' }])).rejects.toThrow(
      'connection refused',
    );
  });
});
