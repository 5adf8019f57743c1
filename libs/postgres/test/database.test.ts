/** @expectedSeconds 28 */
import { Type } from '@sinclair/typebox';
import {
  createPgDatabase,
  DatabaseConfig,
  deleteOlderThan,
  MAX_STATEMENT_TIMEOUT_MS,
  migrate,
  openDatabase,
  RolledBackError,
  SqlDatabase,
} from '@parley/postgres';
import { TEST_DATABASE_URL, testDatabases } from '@parley/postgres/testing';
import { ConfigError, isTransient, loadConfig } from '@parley/service-kit';
import { TcpFaultProxy } from '@parley/test-kit';

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

  it('rejects a transaction whose work caught a failed statement: Postgres rolled it back at commit', async () => {
    await expect(
      db.transaction(async (tx) => {
        await tx.query("INSERT INTO items (id, n) VALUES ('d', 4)");
        await tx.query("INSERT INTO items (id, n) VALUES ('d', 5)").catch(() => undefined); // duplicate key
      }),
    ).rejects.toThrow(RolledBackError);
    const ids = (await db.query<{ id: string }>('SELECT id FROM items ORDER BY id')).rows.map((r) => r.id);
    expect(ids).toEqual(['a', 'b']);
  });

  it('purges old rows a batch per statement, and stops between batches once its signal aborts', async () => {
    await db.query('CREATE TABLE aged (id int PRIMARY KEY, at bigint NOT NULL)');
    await db.query('INSERT INTO aged SELECT n, n FROM generate_series(1, 10) AS n');
    const stop = new AbortController();
    let statements = 0;
    const counting = {
      query: async <R>(sql: string, params?: unknown[]) => {
        if (++statements === 2) stop.abort(); // shutting down during the second batch
        return db.query<R>(sql, params);
      },
    };
    const options = { table: 'aged', column: 'at', before: 9, batch: 3, signal: stop.signal };
    expect(await deleteOlderThan(counting, options)).toBe(6);
    expect(await deleteOlderThan(db, { ...options, signal: undefined })).toBe(2); // the rest, next time
    expect((await db.query<{ id: number }>('SELECT id FROM aged ORDER BY id')).rows.map((r) => r.id)).toEqual(
      [9, 10],
    );
  });

  it('reports affected rows, and the rows a SELECT returned, as Postgres counts them', async () => {
    const result = await db.query('UPDATE items SET n = n + 1 WHERE id IN ($1, $2)', ['a', 'b']);
    expect(result.rowCount).toBe(2);
    expect((await db.query('SELECT id FROM items')).rowCount).toBe(2);
    expect((await db.query("SELECT id FROM items WHERE id = 'none'")).rowCount).toBe(0);
    expect((await db.transaction((tx) => tx.query('SELECT id FROM items'))).rowCount).toBe(2);
    expect((await db.query('DELETE FROM items WHERE n < 0 RETURNING id')).rowCount).toBe(0);
  });

  it('answers ping', async () => {
    await expect(db.ping()).resolves.toBeUndefined();
  });
});

describe('a Postgres pool busy with a backlog', () => {
  it('answers ping at once while every client is busy with work that succeeds', async () => {
    const db = createPgDatabase({ connectionString: TEST_DATABASE_URL, max: 1 });
    try {
      await db.query('SELECT 1');
      const busy = db.transaction(async (tx) => void (await tx.query('SELECT pg_sleep(2)')));
      const queued = db.query('SELECT 1'); // waits for the one client
      await new Promise((resolve) => setTimeout(resolve, 100));
      const started = Date.now();
      await db.ping();
      expect(Date.now() - started).toBeLessThan(1000); // not queued behind the two seconds of work
      await Promise.all([busy, queued]);
    } finally {
      await db.close();
    }
  });
});

describe('DATABASE_STATEMENT_TIMEOUT_MS', () => {
  const load = (ms: number) =>
    loadConfig('svc', Type.Object(DatabaseConfig), {
      DATABASE_URL: TEST_DATABASE_URL,
      DATABASE_STATEMENT_TIMEOUT_MS: String(ms),
    });

  it('refuses at start a timeout past what the client can wait for; the longest it takes answers', async () => {
    // 24.8 days and more: the client's read timeout (5 s longer) overflowed Node's timers and fired
    // at once, failing every query; past 2^31 - 1 ms Postgres refused every connection.
    expect(() => load(MAX_STATEMENT_TIMEOUT_MS + 1)).toThrow(ConfigError);
    expect(() => load(2 ** 31)).toThrow(ConfigError);
    const db = await openDatabase(load(MAX_STATEMENT_TIMEOUT_MS));
    try {
      await expect(db.query('SELECT 1 AS n')).resolves.toMatchObject({ rows: [{ n: 1 }] });
    } finally {
      await db.close();
    }
  });
});

describe('a Postgres made read-only under the pool (a failover)', () => {
  it('fails the transaction as transient and drops that connection, so the next one may reach the new primary', async () => {
    const db = createPgDatabase({
      connectionString: TEST_DATABASE_URL,
      max: 1,
      options: '-c default_transaction_read_only=on',
    });
    try {
      let firstPid = 0;
      const write = db.transaction(async (tx) => {
        firstPid = (await tx.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0].pid;
        await tx.query('CREATE TABLE never_made (id int)');
      });
      await expect(write).rejects.toMatchObject({ code: '25006' });
      expect(isTransient(await write.catch((err: unknown) => err))).toBe(true);
      const next = await db.transaction(
        async (tx) => (await tx.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0].pid,
      );
      expect(next).not.toBe(firstPid);
    } finally {
      await db.close();
    }
  });
});

/** The test database reached through a proxy that can cut or stall the connection. */
async function throughProxy(options: { max: number; statementTimeoutMs?: number }) {
  const target = new URL(TEST_DATABASE_URL);
  const proxy = await TcpFaultProxy.start({ host: target.hostname, port: Number(target.port || 5432) });
  const connectionString = Object.assign(target, { port: String(proxy.port) }).toString();
  return { proxy, db: createPgDatabase({ connectionString, ...options }) };
}

describe('a Postgres connection lost mid-transaction', () => {
  let proxy: TcpFaultProxy;
  let db: SqlDatabase;
  beforeAll(async () => ({ proxy, db } = await throughProxy({ max: 2 })));
  afterAll(async () => {
    await db.close();
    await proxy.close();
  });

  it('fails that transaction, keeps the process alive, and works again once Postgres is back', async () => {
    const inTransaction = db.transaction(async (tx) => {
      await tx.query('SELECT 1');
      proxy.cut();
      await new Promise((r) => setTimeout(r, 50));
      await tx.query('SELECT 2');
    });
    await expect(inTransaction).rejects.toThrow();
    await expect(db.ping()).rejects.toThrow();
    proxy.restore();
    await expect(
      db.transaction(async (tx) => (await tx.query<{ n: number }>('SELECT 3 AS n')).rows[0].n),
    ).resolves.toBe(3);
    await expect(db.ping()).resolves.toBeUndefined();
  });
});

describe('a Postgres that stops answering mid-query (its host gone without a reset)', () => {
  let proxy: TcpFaultProxy;
  let db: SqlDatabase;
  beforeAll(async () => ({ proxy, db } = await throughProxy({ max: 1, statementTimeoutMs: 500 })));
  afterAll(async () => {
    await proxy.close();
    await db.close();
  });

  const failsSoon = async (work: Promise<unknown>) => {
    const started = Date.now();
    const err = await work.then(
      () => new Error('answered'),
      (e: unknown) => e,
    );
    expect(isTransient(err)).toBe(true);
    expect(Date.now() - started).toBeLessThan(8000); // the statement timeout, which the server never applied, and a margin
  };

  it('fails a query as transient soon after the statement timeout, and the pool works again once Postgres answers', async () => {
    await db.query('SELECT 1');
    proxy.stall();
    await failsSoon(db.query('SELECT 2'));
    proxy.restore();
    await expect(db.query<{ n: number }>('SELECT 3 AS n')).resolves.toMatchObject({ rows: [{ n: 3 }] });
  }, 20_000);

  it('fails a transaction the same way, and drops its connection', async () => {
    await failsSoon(
      db.transaction(async (tx) => {
        await tx.query('SELECT 1');
        proxy.stall();
        await tx.query('SELECT 2');
      }),
    );
    proxy.restore();
    await expect(
      db.transaction(async (tx) => (await tx.query<{ n: number }>('SELECT 3 AS n')).rows[0].n),
    ).resolves.toBe(3);
  }, 20_000);
});

describe('a retention purge of many old rows (real Postgres)', () => {
  const target = testDatabases().find((t) => t.name === 'postgres')!;
  afterAll(() => target.dispose());

  interface PlanNode {
    'Relation Name'?: string;
    'Actual Rows': number;
    'Actual Loops': number;
    Plans?: PlanNode[];
  }
  const rowsRead = (node: PlanNode, table: string): number =>
    (node['Relation Name'] === table ? node['Actual Rows'] * node['Actual Loops'] : 0) +
    (node.Plans ?? []).reduce((sum, child) => sum + rowsRead(child, table), 0);

  it('reads about a batch of rows per statement, not every old row (a purge after downtime would grow with the square of the backlog)', async () => {
    const db = await target.open();
    await db.query('CREATE TABLE aged_many (id int PRIMARY KEY, at bigint NOT NULL)');
    await db.query('CREATE INDEX aged_many_at ON aged_many (at)');
    await db.query('INSERT INTO aged_many SELECT n, n FROM generate_series(1, 50000) AS n');
    await db.query('ANALYZE aged_many');
    const statements: { sql: string; params?: unknown[] }[] = [];
    const recording = {
      query: async <R>(sql: string, params?: unknown[]) => {
        statements.push({ sql, params });
        return { rows: [] as R[], rowCount: 0 };
      },
    };
    const batch = 500;
    await deleteOlderThan(recording, {
      table: 'aged_many',
      column: 'at',
      before: 40_000,
      batch,
    });
    const [{ sql, params }] = statements;
    const explained = await db.query<{ 'QUERY PLAN': { Plan: PlanNode }[] }>(
      `EXPLAIN (ANALYZE, FORMAT JSON) ${sql}`,
      params,
    );
    const plan = explained.rows[0]['QUERY PLAN'][0].Plan;
    expect((await db.query<{ n: string }>('SELECT count(*) AS n FROM aged_many')).rows[0].n).toBe('49500');
    expect(rowsRead(plan, 'aged_many')).toBeLessThanOrEqual(2 * batch); // the batch found, then deleted
  });
});

describe('migrations when replicas and services start together (real Postgres)', () => {
  const target = testDatabases().find((t) => t.name === 'postgres')!;
  afterAll(() => target.dispose());

  it('applies each migration once while replicas of two services migrate one fresh database at the same time', async () => {
    const replicas = [await target.open()]; // creates the suite's schema
    replicas.push(...(await Promise.all(Array.from({ length: 5 }, () => target.open()))));
    const migrationsOf = (service: string) => [
      { id: '001_table', sql: `CREATE TABLE ${service}_items (id text PRIMARY KEY)` },
      { id: '002_column', sql: `ALTER TABLE ${service}_items ADD COLUMN n int` },
    ];
    const applied = await Promise.all(
      replicas.map((db, i) =>
        migrate(db, i % 2 ? 'svc_a' : 'svc_b', migrationsOf(i % 2 ? 'svc_a' : 'svc_b')),
      ),
    );
    expect(applied.filter((ids, i) => i % 2 === 1 && ids.length > 0)).toEqual([['001_table', '002_column']]);
    expect(applied.filter((ids, i) => i % 2 === 0 && ids.length > 0)).toEqual([['001_table', '002_column']]);
    const rows = await replicas[0].query<{ service: string; id: string }>(
      'SELECT service, id FROM parley_migrations ORDER BY service, id',
    );
    expect(rows.rows).toEqual([
      { service: 'svc_a', id: '001_table' },
      { service: 'svc_a', id: '002_column' },
      { service: 'svc_b', id: '001_table' },
      { service: 'svc_b', id: '002_column' },
    ]);
  });

  it('a migration waiting for a table lock gives way to the traffic queued behind it, and applies once the lock is free', async () => {
    // A rolling upgrade: an old replica's transaction (or an operator's open psql session) holds
    // the table; an ALTER waiting for its exclusive lock queues every later statement on the table.
    const db = await target.open();
    await migrate(db, 'svc_busy', [
      { id: '001_table', sql: 'CREATE TABLE busy_items (id text PRIMARY KEY)' },
    ]);
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    let holding!: () => void;
    const holds = new Promise<void>((resolve) => (holding = resolve));
    const holder = db.transaction(async (tx) => {
      await tx.query('SELECT * FROM busy_items');
      holding();
      await held;
    });
    await holds;
    const migrating = migrate(db, 'svc_busy', [
      { id: '001_table', sql: 'CREATE TABLE busy_items (id text PRIMARY KEY)' },
      { id: '002_column', sql: 'ALTER TABLE busy_items ADD COLUMN n int' },
    ]);
    await new Promise((resolve) => setTimeout(resolve, 200)); // the ALTER is waiting
    const reader = await target.open({ statementTimeoutMs: 4000 });
    const read = reader.query<{ count: string }>('SELECT count(*) FROM busy_items');
    const releasing = new Promise((resolve) => setTimeout(resolve, 6000)).then(release);
    await expect(read).resolves.toMatchObject({ rows: [{ count: '0' }] }); // not cancelled at 4 s
    await releasing;
    await holder;
    await expect(migrating).resolves.toEqual(['002_column']);
  }, 20_000);

  it('cancels a statement that outlasts the statement timeout as a transient failure, but never a migration', async () => {
    const db = await target.open({ statementTimeoutMs: 200 });
    const stuck = db.query('SELECT pg_sleep(2)');
    await expect(stuck).rejects.toMatchObject({
      code: '57014',
      message: expect.stringMatching(/statement timeout/),
    });
    expect(isTransient(await stuck.catch((err: unknown) => err))).toBe(true);
    // Longer than the client's read timeout too (the statement timeout and 5 s).
    const slowMigration = { id: '001_slow', sql: 'SELECT pg_sleep(5.5)' };
    await expect(migrate(db, 'svc_slow', [slowMigration])).resolves.toEqual(['001_slow']);
    await expect(db.query('SELECT 1 AS n')).resolves.toMatchObject({ rows: [{ n: 1 }] });
  }, 15_000);
});
