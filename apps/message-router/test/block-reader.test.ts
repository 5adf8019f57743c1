import pino from 'pino';
import { migrate, SqlDatabase } from '@parley/postgres';
import { testDatabases } from '@parley/postgres/testing';
import { BlockReader, createSqlBlockReader } from '../src/blocks';
// The router reads group-ms's tables: test against group-ms's own schema and writes, not a copy.
import { GROUP_MIGRATIONS } from '../../group-ms/src/migrations';
import { createSqlGroupStore } from '../../group-ms/src/sql-group-store';
import { MemoryBlocks } from './support/memory-blocks';

/** A reader, and how its blocks are made and lifted (group-ms's store, for the SQL reader). */
interface ReaderUnderTest {
  reader: BlockReader;
  block(user: string, blocked: string): Promise<void>;
  unblock(user: string, blocked: string): Promise<void>;
}

const memoryTarget = {
  name: 'memory',
  open: async (): Promise<ReaderUnderTest> => {
    const blocks = new MemoryBlocks();
    return {
      reader: blocks,
      block: async (user, blocked) => blocks.block(user, blocked),
      unblock: async (user, blocked) => blocks.unblock(user, blocked),
    };
  },
  dispose: async () => undefined,
};
const sqlTargets = testDatabases().map((target) => ({
  name: target.name,
  open: async (): Promise<ReaderUnderTest> => {
    const db = await target.open();
    await migrate(db, 'group-ms', GROUP_MIGRATIONS);
    const store = createSqlGroupStore(db);
    return {
      reader: createSqlBlockReader(db, pino({ level: 'silent' })),
      block: async (user, blocked) => void (await store.block(user, blocked, Date.now(), 1000)),
      unblock: (user, blocked) => store.unblock(user, blocked, Date.now()),
    };
  },
  dispose: () => target.dispose(),
}));

describe.each([memoryTarget, ...sqlTargets])('block reader on $name', (target) => {
  let under: ReaderUnderTest;
  beforeAll(async () => {
    under = await target.open();
    await under.block('bob', 'mallory');
    await under.block('carol', 'mallory');
    await under.block('bob', 'eve');
  });
  afterAll(() => target.dispose());

  it('answers whom each user asked about blocked, every one of them, nobody as an empty set', async () => {
    const blocks = await under.reader.blocksOf(['bob', 'carol', 'mallory', 'dave', 'bob']);
    expect(Object.fromEntries([...blocks].map(([user, blocked]) => [user, [...blocked].sort()]))).toEqual({
      bob: ['eve', 'mallory'],
      carol: ['mallory'],
      mallory: [],
      dave: [],
    });
    expect(await under.reader.blocksOf([])).toEqual(new Map());
  });

  it('reads the users whose blocks changed after a position, oldest change first, at most a limit at a time', async () => {
    const start = await under.reader.changesSince(undefined, 10);
    expect(start.users).toEqual([]);
    expect(await under.reader.changesSince(start.position, 10)).toEqual({
      users: [],
      position: start.position,
    });

    await under.block('ann', 'x');
    await under.block('ben', 'x');
    await under.unblock('ann', 'x');
    await under.unblock('ann', 'never-blocked'); // no change
    await under.block('cy', 'x');
    const first = await under.reader.changesSince(start.position, 2);
    expect(first.users).toEqual(['ben', 'ann']); // ann's unblock is her latest change
    const rest = await under.reader.changesSince(first.position, 2);
    expect(rest.users).toEqual(['cy']);
    expect(await under.reader.changesSince(rest.position, 2)).toEqual({ users: [], position: rest.position });
    // Where to start now: after every change so far.
    expect((await under.reader.changesSince(undefined, 10)).position).toBe(rest.position);
  });
});

describe.each(testDatabases())('SQL block reader on $name', (target) => {
  afterAll(() => target.dispose());

  it('asks Postgres once per call, each user once', async () => {
    const db = await target.open();
    await migrate(db, 'group-ms', GROUP_MIGRATIONS);
    const queries: unknown[][] = [];
    const counting = {
      query: (sql: string, params?: unknown[]) => (queries.push(params ?? []), db.query(sql, params)),
    };
    const reader = createSqlBlockReader(counting as SqlDatabase, pino({ level: 'silent' }));
    const users = Array.from({ length: 300 }, (_, i) => `u${i % 100}`);
    expect((await reader.blocksOf(users)).size).toBe(100);
    expect(queries).toHaveLength(1);
    expect((queries[0][0] as string[]).length).toBe(100);
  });

  it('reads no blocks and no changes, warning once, while group-ms has not created its tables (a router rolled out first)', async () => {
    // A database of the same kind where group-ms has not migrated: a fresh schema, or a fresh PGlite.
    const unmigrated = testDatabases().find((t) => t.name === target.name)!;
    try {
      const lines: Array<{ level: number; msg: string }> = [];
      const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
      const reader = createSqlBlockReader(await unmigrated.open(), logger);
      expect(await reader.blocksOf(['bob'])).toEqual(new Map([['bob', new Set()]]));
      expect(await reader.changesSince(undefined, 10)).toEqual({ users: [], position: '0' });
      expect(await reader.changesSince('0', 10)).toEqual({ users: [], position: '0' });
      expect(lines.filter((l) => l.level === 40).map((l) => l.msg)).toEqual([
        expect.stringContaining('user blocks are not in the database'),
      ]);
    } finally {
      await unmigrated.dispose();
    }
  });

  it('reads the changes in version order where a version gains a digit, so a read that stops at its limit skips none', async () => {
    // A fresh database of the same kind: the versions start at 1.
    const fresh = testDatabases().find((t) => t.name === target.name)!;
    try {
      const db = await fresh.open();
      await migrate(db, 'group-ms', GROUP_MIGRATIONS);
      const store = createSqlGroupStore(db);
      const reader = createSqlBlockReader(db, pino({ level: 'silent' }));
      const users = Array.from({ length: 12 }, (_, i) => `u${i + 1}`);
      for (const user of users) await store.block(user, 'mallory', Date.now(), 1000); // versions 1 to 12
      // After the 8th change, three at a time: as text, '9' sorts after '12'.
      const seen: string[] = [];
      let position = '8';
      for (;;) {
        const changes = await reader.changesSince(position, 3);
        seen.push(...changes.users);
        position = changes.position;
        if (changes.users.length < 3) break;
      }
      expect(seen).toEqual(['u9', 'u10', 'u11', 'u12']);
      expect(position).toBe('12');
    } finally {
      await fresh.dispose();
    }
  });

  it('fails when the database does, so the router can route the batch unchecked and count it', async () => {
    const failing = {
      query: () => Promise.reject(Object.assign(new Error('connection refused'), { code: 'ECONNREFUSED' })),
    };
    const reader = createSqlBlockReader(failing as unknown as SqlDatabase, pino({ level: 'silent' }));
    await expect(reader.blocksOf(['bob'])).rejects.toThrow('connection refused');
    await expect(reader.changesSince('0', 10)).rejects.toThrow('connection refused');
  });
});
