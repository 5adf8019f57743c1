import { Client } from 'pg';
import { testDatabases, TEST_DATABASE_URL } from '@parley/postgres/testing';
import type { SqlDatabase } from '@parley/postgres';
import { createSqlOfflineStore } from '../src/sql-store';

const frame = (id: string) => ({
  type: 'message' as const,
  mid: `alice:${id}`,
  id,
  from: 'alice',
  to: 'bob',
  chat: 'direct' as const,
  body: { text: id },
  sentAt: 1000,
});

describe('retention purge racing an ack that refreshes a tombstone (real Postgres)', () => {
  const target = testDatabases().find((t) => t.name === 'postgres')!;
  let db: SqlDatabase;
  afterAll(() => target.dispose());

  it('never deletes a tombstone whose acked_at an ack has just moved past the cutoff', async () => {
    db = await target.open();
    let clock = 1_000;
    const store = createSqlOfflineStore(db, { now: () => clock });
    await store.init();
    // bob acked m1 long ago: an old tombstone.
    await store.store([{ to: 'bob', frame: frame('m1') }]);
    await store.ack('bob', ['alice:m1']);
    clock = 1_000_000;
    // A second ack of m1 (a reconnecting client acks again) refreshes acked_at to 1,000,000, in a
    // transaction the purge overlaps: here held open on its own connection, with ack's own statement.
    const schema = (await db.query<{ s: string }>('SELECT current_schema() AS s')).rows[0].s;
    const acker = new Client({ connectionString: TEST_DATABASE_URL, options: `-c search_path=${schema}` });
    await acker.connect();
    try {
      await acker.query('BEGIN');
      await acker.query(
        `INSERT INTO offline_acks (recipient, mid, acked_at)
         SELECT $1, mid, $3 FROM jsonb_array_elements_text($2::text::jsonb) AS mid
         ON CONFLICT (recipient, mid) DO UPDATE SET acked_at = EXCLUDED.acked_at`,
        ['bob', JSON.stringify(['alice:m1']), clock],
      );
      // The purge: tombstones acked before 500,000 go. Its subquery sees the old acked_at (1,000).
      const purging = store.purge({ messagesBefore: 0, tombstonesBefore: 500_000 });
      await new Promise((r) => setTimeout(r, 300)); // the purge is now waiting on the row
      await acker.query('COMMIT');
      const purged = await purging;
      const left = await db.query<{ acked_at: string }>(
        "SELECT acked_at::text FROM offline_acks WHERE recipient = 'bob' AND mid = 'alice:m1'",
      );
      // The tombstone is 0 ms old: not past retention.
      expect({ purged: purged.tombstones, left: left.rows }).toEqual({
        purged: 0,
        left: [{ acked_at: '1000000' }],
      });
      // The consequence: a late redelivery of m1 is stored again and sync serves an acked message.
      expect(await store.store([{ to: 'bob', frame: frame('m1') }])).toEqual([]);
    } finally {
      await acker.end();
    }
  });
});
