import pino from 'pino';
import { migrate, SqlDatabase } from '@parley/postgres';
import { testDatabases } from '@parley/postgres/testing';
import { silentLogger } from '@parley/service-kit';
import {
  createMemoryRoutedLog,
  createSqlRoutedLog,
  routedAlready,
  RoutedLog,
  Routing,
} from '../src/routed-log';
// The router writes a table of group-ms's: test against group-ms's own schema, purge and erasure.
import { GROUP_MIGRATIONS } from '../../group-ms/src/migrations';
import { createSqlGroupStore } from '../../group-ms/src/sql-group-store';

const routing = (sender: string, id: string, group: string, place: string, delivered = true): Routing => ({
  sender,
  id,
  group,
  place,
  delivered,
});
const sorted = (routings: Routing[]) =>
  [...routings].sort((a, b) =>
    `${a.group}${a.sender}${a.id}${a.place}`.localeCompare(`${b.group}${b.sender}${b.id}${b.place}`),
  );

const memoryTarget = {
  name: 'memory',
  open: async () => createMemoryRoutedLog(),
  dispose: async () => undefined,
};
const sqlTargets = testDatabases().map((target) => ({
  name: target.name,
  open: async (): Promise<RoutedLog> => {
    const db = await target.open();
    await migrate(db, 'group-ms', GROUP_MIGRATIONS);
    return createSqlRoutedLog(db, silentLogger());
  },
  dispose: () => target.dispose(),
}));

describe.each([memoryTarget, ...sqlTargets])('routed log on $name', (target) => {
  let log: RoutedLog;
  beforeAll(async () => {
    log = await target.open();
  });
  afterAll(() => target.dispose());

  it('finds every routing recorded of the messages asked, and nothing of others', async () => {
    await log.record([routing('alice', 'm1', 'g1', '0:5:0'), routing('alice', 'm2', 'g1', '0:6:0', false)]);
    await log.record([routing('alice', 'm2', 'g1', '0:9:1')]);
    expect(
      sorted(
        await log.routingsOf([
          { sender: 'alice', id: 'm1', group: 'g1' },
          { sender: 'alice', id: 'm2', group: 'g1' },
          { sender: 'alice', id: 'm1', group: 'g1' }, // asked twice: found once
          { sender: 'bob', id: 'm1', group: 'g1' },
        ]),
      ),
    ).toEqual([
      routing('alice', 'm1', 'g1', '0:5:0'),
      routing('alice', 'm2', 'g1', '0:6:0', false),
      routing('alice', 'm2', 'g1', '0:9:1'),
    ]);
    // The same id to another group, or from another sender, is another message.
    expect(await log.routingsOf([{ sender: 'alice', id: 'm1', group: 'g2' }])).toEqual([]);
    expect(await log.routingsOf([])).toEqual([]);
  });

  it('records a routing of one record once: recorded again, the first one stays', async () => {
    await log.record([routing('carol', 'x', 'g1', '1:1:0', false)]);
    await log.record([
      routing('carol', 'x', 'g1', '1:1:0', true),
      routing('carol', 'x', 'g1', '1:1:0', true),
    ]);
    expect(await log.routingsOf([{ sender: 'carol', id: 'x', group: 'g1' }])).toEqual([
      routing('carol', 'x', 'g1', '1:1:0', false),
    ]);
  });
});

describe('routedAlready', () => {
  it('holds for a message that went out from any record, and for a refused one met in the same record again', () => {
    const out = routing('a', 'm', 'g', '0:1:0');
    const refused = routing('a', 'm', 'g', '0:1:0', false);
    expect(routedAlready([], '0:1:0')).toBe(false);
    expect(routedAlready([out], '0:7:0')).toBe(true); // the client sent it again
    expect(routedAlready([refused], '0:1:0')).toBe(true); // the same record, read again
    expect(routedAlready([refused], '0:7:0')).toBe(false); // sent again: its sender may have joined since
  });
});

describe.each(testDatabases())('group_routed_messages on $name, as group-ms keeps it', (target) => {
  let db: SqlDatabase;
  beforeAll(async () => {
    db = await target.open();
  });
  afterAll(() => target.dispose());

  it('before group-ms made the table, routes without it and says so once a minute', async () => {
    const errors: string[] = [];
    let now = 0;
    const logger = pino(
      { level: 'error' },
      { write: (line: string) => void errors.push(JSON.parse(line).msg) },
    );
    const log = createSqlRoutedLog(db, logger, () => now);
    const message = { sender: 'a', id: 'm', group: 'g' };
    expect(await log.routingsOf([message])).toEqual([]);
    await log.record([{ ...message, place: '0:0:0', delivered: true }]);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(/group_routed_messages cannot be used/);
    now += 60_000;
    expect(await log.routingsOf([message])).toEqual([]);
    expect(errors).toHaveLength(2);
  });

  it("is purged with group-ms's ops, and an erasure forgets the user's messages only", async () => {
    await migrate(db, 'group-ms', GROUP_MIGRATIONS);
    let now = 1_000;
    const log = createSqlRoutedLog(db, silentLogger(), () => now);
    const store = createSqlGroupStore(db);
    await log.record([routing('alice', 'old', 'g1', '0:1:0'), routing('bob', 'old', 'g1', '0:2:0')]);
    now = 5_000;
    await log.record([routing('alice', 'new', 'g1', '0:3:0'), routing('bob', 'new', 'g1', '0:4:0')]);
    const all = [
      { sender: 'alice', id: 'old', group: 'g1' },
      { sender: 'bob', id: 'old', group: 'g1' },
      { sender: 'alice', id: 'new', group: 'g1' },
      { sender: 'bob', id: 'new', group: 'g1' },
    ];
    expect(await store.forgetRoutedBefore(5_000)).toBe(2);
    expect(sorted(await log.routingsOf(all)).map((r) => `${r.sender}:${r.id}`)).toEqual([
      'alice:new',
      'bob:new',
    ]);
    expect(await store.forgetRoutedOf('alice')).toBe(1);
    expect((await log.routingsOf(all)).map((r) => `${r.sender}:${r.id}`)).toEqual(['bob:new']);
  });
});
