import { migrate, SqlDatabase } from '@parley/postgres';
import { testDatabases } from '@parley/postgres/testing';

describe.each(testDatabases())('SqlDatabase on $name', (target) => {
  let db: SqlDatabase;
  beforeAll(async () => {
    db = await target.open();
  });
  afterAll(() => target.dispose());

  const migrations = [
    { id: '001_items', sql: 'CREATE TABLE items (id text PRIMARY KEY, n int NOT NULL)' },
    { id: '002_items_note', sql: 'ALTER TABLE items ADD COLUMN note text' },
  ];

  it('applies migrations once, in order, and records them', async () => {
    expect(await migrate(db, 'svc', [migrations[1], migrations[0]])).toEqual(['001_items', '002_items_note']);
    expect(await migrate(db, 'svc', migrations)).toEqual([]);
    await db.query("INSERT INTO items (id, n, note) VALUES ('a', 1, 'x')");
    expect((await db.query('SELECT id, n, note FROM items')).rows).toEqual([{ id: 'a', n: 1, note: 'x' }]);
  });

  it('commits a transaction that resolves and rolls back one that throws', async () => {
    await db.transaction(async (tx) => tx.query("INSERT INTO items (id, n) VALUES ('b', 2)"));
    await expect(
      db.transaction(async (tx) => {
        await tx.query("INSERT INTO items (id, n) VALUES ('c', 3)");
        throw new Error('abort');
      }),
    ).rejects.toThrow('abort');
    const ids = (await db.query<{ id: string }>('SELECT id FROM items ORDER BY id')).rows.map((r) => r.id);
    expect(ids).toEqual(['a', 'b']);
  });

  it('reports affected rows', async () => {
    const result = await db.query('UPDATE items SET n = n + 1 WHERE id IN ($1, $2)', ['a', 'b']);
    expect(result.rowCount).toBe(2);
  });

  it('answers ping', async () => {
    await expect(db.ping()).resolves.toBeUndefined();
  });
});
