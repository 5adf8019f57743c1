import { Client } from 'pg';
import type { DeliveredMessage } from '@parley/contracts';
import { createPgliteDatabase, type SqlDatabase } from '@parley/postgres';
import { testDatabases, TEST_DATABASE_URL } from '@parley/postgres/testing';
import { createSqlOfflineStore } from '../src/sql-store';
import { OfflineStore } from '../src/store';

const message = (from: string, id: string, to: string, text = id): DeliveredMessage => ({
  type: 'message',
  mid: `${from}:${id}`,
  id,
  from,
  to,
  chat: 'direct',
  body: { text },
  sentAt: 1000,
});

const mids = (frames: { mid: string }[]) => frames.map((f) => f.mid);

/** Reads every page of `user` from the start. */
async function readAll(store: OfflineStore, user: string, limit = 100): Promise<string[]> {
  const seen: string[] = [];
  for (let after = 0; ;) {
    const page = await store.page(user, after, limit);
    seen.push(...mids(page.messages));
    after = page.lastSeq;
    if (!page.hasMore) return seen;
  }
}

describe.each(testDatabases())('offline store on $name', (target) => {
  let db: SqlDatabase;
  let clock = 1_000_000;
  let store: OfflineStore;
  beforeAll(async () => {
    db = await target.open();
    store = createSqlOfflineStore(db, { now: () => clock, purgeBatch: 2 });
    await store.init();
    await store.init(); // a second replica starting: nothing left to apply
  });
  afterAll(() => target.dispose());

  it('stores deliverables per recipient and returns them oldest first', async () => {
    const frames = ['m1', 'm2', 'm3'].map((id) => message('alice', id, 'bob'));
    expect(await store.store(frames.map((frame) => ({ to: 'bob', frame })))).toHaveLength(3);
    const page = await store.page('bob', 0, 10);
    expect(page.messages).toEqual(frames);
    expect(page.hasMore).toBe(false);
  });

  it('is idempotent by (recipient, mid): a re-store, also within one batch, adds nothing', async () => {
    const frame = message('alice', 'dup', 'carol');
    expect(
      await store.store([
        { to: 'carol', frame },
        { to: 'carol', frame },
      ]),
    ).toHaveLength(1);
    expect(await store.store([{ to: 'carol', frame: { ...frame, body: 'changed' } }])).toHaveLength(0);
    expect((await store.page('carol', 0, 10)).messages).toEqual([frame]);
  });

  it('says which deliverables it holds: stored before or just now, and not acked since', async () => {
    const [kept, acked, never] = ['h1', 'h2', 'h3'].map((id) => ({
      to: 'hana',
      frame: message('alice', id, 'hana'),
    }));
    await store.store([kept, acked]);
    await store.ack('hana', [acked.frame.mid]);
    const elsewhere = { to: 'ivan', frame: kept.frame }; // the same mid, another recipient
    const keyed = [kept, acked, never, elsewhere].map((item) => ({ ...item, mid: item.frame.mid }));
    expect(await store.held(keyed)).toEqual([keyed[0]]);
    expect(await store.held([])).toEqual([]);
  });

  it('deletes on ack, and an ack that arrives first keeps the deliverable from being stored', async () => {
    await store.store([
      { to: 'dave', frame: message('alice', 'a1', 'dave') },
      { to: 'dave', frame: message('alice', 'a2', 'dave') },
    ]);
    expect(await store.ack('dave', ['alice:a1', 'alice:unknown'])).toBe(1);
    expect(mids((await store.page('dave', 0, 10)).messages)).toEqual(['alice:a2']);

    expect(await store.ack('dave', ['alice:early'])).toBe(0);
    expect(await store.store([{ to: 'dave', frame: message('alice', 'early', 'dave') }])).toHaveLength(0);
    // and a re-delivered deliverable that was acked after being stored stays gone
    expect(await store.store([{ to: 'dave', frame: message('alice', 'a1', 'dave') }])).toHaveLength(0);
    expect(mids((await store.page('dave', 0, 10)).messages)).toEqual(['alice:a2']);
  });

  it('applies the acks of several users in one go, a mid named twice counted once', async () => {
    await store.store([
      { to: 'ulla', frame: message('alice', 'i1', 'ulla') },
      { to: 'ulla', frame: message('alice', 'i2', 'ulla') },
      { to: 'vic', frame: message('alice', 'i1', 'vic') },
    ]);
    const acks = [
      { user: 'ulla', mids: ['alice:i1', 'alice:i1'] },
      { user: 'vic', mids: ['alice:i1', 'alice:j-early'] },
      { user: 'ulla', mids: ['alice:i1'] },
      { user: 'nobody', mids: [] },
    ];
    expect(await store.ackAll(acks)).toBe(2);
    expect(mids((await store.page('ulla', 0, 10)).messages)).toEqual(['alice:i2']);
    expect((await store.page('vic', 0, 10)).messages).toEqual([]);
    expect(await store.store([{ to: 'vic', frame: message('alice', 'j-early', 'vic') }])).toHaveLength(0);
    expect(await store.ackAll([])).toBe(0);
  });

  it('keeps a tombstone of an ack marked unknown (made-up mids past session-ms’s quota) only for what it deleted', async () => {
    await store.store([{ to: 'wes', frame: message('alice', 'k1', 'wes') }]);
    const acks = [
      { user: 'wes', mids: ['alice:k1', 'alice:made-up'], unknown: true as const },
      { user: 'wes', mids: ['alice:named-too'] },
      { user: 'wes', mids: ['alice:named-too'], unknown: true as const },
    ];
    expect(await store.ackAll(acks)).toBe(1);
    const again = await store.store(
      ['k1', 'made-up', 'named-too'].map((id) => ({ to: 'wes', frame: message('alice', id, 'wes') })),
    );
    // k1 was deleted, so a copy of it stays refused; named-too was also acked plainly.
    expect(again.map((item) => item.frame.mid)).toEqual(['alice:made-up']);
  });

  it('stores a batch for 1,000 recipients with two statements, acked ones left out, positions per recipient', async () => {
    let statements = 0;
    const counted: SqlDatabase = {
      kind: db.kind,
      ping: () => db.ping(),
      close: () => db.close(),
      query: (sql, params) => (statements++, db.query(sql, params)),
      transaction: (work) =>
        db.transaction((tx) => work({ query: (sql, params) => (statements++, tx.query(sql, params)) })),
    };
    const group = { ...message('alice', 'g1', 'team'), chat: 'group' as const };
    const members = Array.from({ length: 1000 }, (_, i) => `member-${i}`);
    await store.ack('member-7', [group.mid]);
    const items = [
      ...members.map((to) => ({ to, frame: group })),
      { to: 'member-0', frame: message('bob', 'direct', 'member-0') },
    ];
    statements = 0;
    const stored = await createSqlOfflineStore(counted, { now: () => clock }).store(items);
    expect(statements).toBe(2);
    expect(stored).toHaveLength(1000);
    expect(stored.some((s) => s.to === 'member-7')).toBe(false);
    expect(await readAll(store, 'member-0')).toEqual(['alice:g1', 'bob:direct']);
    expect(await readAll(store, 'member-999')).toEqual(['alice:g1']);
    expect(await readAll(store, 'member-7')).toEqual([]);
  });

  it('keeps users apart: nobody sees or acks another user’s deliverables', async () => {
    await store.store([
      { to: 'erin', frame: message('alice', 'x', 'erin') },
      { to: 'frank', frame: message('alice', 'x', 'frank') },
    ]);
    expect(await store.ack('frank', ['alice:x'])).toBe(1);
    expect(mids((await store.page('erin', 0, 10)).messages)).toEqual(['alice:x']);
    expect((await store.page('frank', 0, 10)).messages).toEqual([]);
    // frank's ack tombstone does not stop erin's copy either
    await store.store([{ to: 'erin', frame: message('alice', 'y', 'erin') }]);
    expect(await store.ack('frank', ['alice:y'])).toBe(0);
    expect(mids((await store.page('erin', 0, 10)).messages)).toEqual(['alice:x', 'alice:y']);
  });

  it('erases what it holds for an erased user, and nobody else’s; a copy that comes later is stored anew', async () => {
    await store.store([
      { to: 'olga', frame: message('alice', 'o1', 'olga') },
      { to: 'olga', frame: message('bob', 'o2', 'olga') },
      { to: 'pia', frame: message('olga', 'o3', 'pia') },
    ]);
    await store.ack('olga', ['alice:o0']);
    await store.markConnected([{ user: 'olga', at: 3000 }]);
    expect(await store.erase('olga')).toEqual({ erased: 2, done: true });
    expect(await readAll(store, 'olga')).toEqual([]);
    expect(await store.connectedSince(['olga'], 0)).toEqual(new Set());
    expect(await readAll(store, 'pia')).toEqual(['olga:o3']); // what olga sent is pia's
    // Her ack tombstone went too: nothing of hers holds back what is sent to her id afterwards.
    expect(await store.store([{ to: 'olga', frame: message('alice', 'o0', 'olga') }])).toHaveLength(1);
    expect(await store.erase('olga')).toEqual({ erased: 1, done: true });
    expect(await store.erase('olga')).toEqual({ erased: 0, done: true });
  });

  it('erases a flooded user a batch at a time: out of time, it stops and says so, and every call gets further', async () => {
    // purgeBatch is 2 here: five deliverables and three tombstones take several batches.
    await store.store(
      Array.from({ length: 5 }, (_, i) => ({ to: 'quin', frame: message('alice', `q${i}`, 'quin') })),
    );
    await store.ack('quin', ['alice:t1', 'alice:t2', 'alice:t3']);
    await store.store([{ to: 'rhea', frame: message('quin', 'r1', 'rhea') }]);
    const outOfTime = () => true;
    expect(await store.erase('quin', outOfTime)).toEqual({ erased: 2, done: false });
    expect(await readAll(store, 'quin')).toHaveLength(3);
    expect(await store.erase('quin', outOfTime)).toEqual({ erased: 2, done: false });
    // The last deliverable, then the tombstones, two at a time.
    expect(await store.erase('quin', outOfTime)).toEqual({ erased: 1, done: false });
    expect(await store.erase('quin', outOfTime)).toEqual({ erased: 0, done: true });
    expect(await readAll(store, 'quin')).toEqual([]);
    // The tombstones went too: a copy of an acked mid sent to her id afterwards is stored.
    expect(await store.store([{ to: 'quin', frame: message('alice', 't1', 'quin') }])).toHaveLength(1);
    expect(await readAll(store, 'rhea')).toEqual(['quin:r1']);
  });

  it('pages with a limit and a position, without gaps or repeats', async () => {
    const frames = Array.from({ length: 7 }, (_, i) => message('alice', `p${i}`, 'gina'));
    await store.store(frames.map((frame) => ({ to: 'gina', frame })));
    const first = await store.page('gina', 0, 3);
    expect(mids(first.messages)).toEqual(['alice:p0', 'alice:p1', 'alice:p2']);
    expect(first.hasMore).toBe(true);
    await store.ack('gina', ['alice:p3']); // acked between pages: simply absent
    const second = await store.page('gina', first.lastSeq, 3);
    expect(mids(second.messages)).toEqual(['alice:p4', 'alice:p5', 'alice:p6']);
    expect(second.hasMore).toBe(false);
    const empty = await store.page('gina', second.lastSeq, 3);
    expect(empty).toEqual({ messages: [], lastSeq: second.lastSeq, hasMore: false });
  });

  it('stops a page once its frames reach SYNC_PAGE_MAX_BYTES, one frame at least, and says more follow', async () => {
    // 500 of 64 KiB were a 33 MB answer, which rest-gateway held three times over for each call.
    const body = 'x'.repeat(64 * 1024);
    const frames = Array.from({ length: 40 }, (_, i) => message('alice', `b${i}`, 'yuki', body));
    await store.store(frames.map((frame) => ({ to: 'yuki', frame })));
    const first = await store.page('yuki', 0, 500);
    expect(first.messages).toHaveLength(16); // the 16th starts under 1 MiB, the 17th would not
    expect(first.hasMore).toBe(true);
    expect(await readAll(store, 'yuki', 500)).toEqual(mids(frames));
    // A frame larger than the page's bytes comes alone.
    const alone = await store.page('yuki', 0, 500, 1000);
    expect([mids(alone.messages), alone.hasMore]).toEqual([['alice:b0'], true]);
    // A page stopped by its limit is as before.
    expect((await store.page('yuki', 0, 3)).messages).toHaveLength(3);
  });

  it('never lets a paging reader skip a deliverable whose transaction commits late', async () => {
    // The first store's transaction is held open after its insert; a second store for the same
    // user starts meanwhile. A reader must never see the second without the first.
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let held = false;
    const gated: SqlDatabase = {
      ...db,
      transaction: (work) =>
        db.transaction(async (tx) => {
          const value = await work(tx);
          if (!held) {
            held = true;
            await gate;
          }
          return value;
        }),
    };
    const slowStore = createSqlOfflineStore(gated, { now: () => clock });
    const first = slowStore.store([{ to: 'hank', frame: message('alice', 'first', 'hank') }]);
    await new Promise((resolve) => setTimeout(resolve, 50));
    const second = store.store([{ to: 'hank', frame: message('alice', 'second', 'hank') }]);
    const during = store.page('hank', 0, 10);
    await new Promise((resolve) => setTimeout(resolve, 100));
    release();
    await Promise.all([first, second]);
    const seenDuring = mids((await during).messages);
    const final = await readAll(store, 'hank');
    expect(final).toEqual(['alice:first', 'alice:second']);
    expect(final.slice(0, seenDuring.length)).toEqual(seenDuring);
  });

  it('returns every deliverable exactly once to a reader paging during concurrent inserts', async () => {
    const writers = 8;
    const perWriter = 25;
    const written = Array.from({ length: writers }, (_, w) =>
      Array.from({ length: perWriter }, (_, i) => message(`w${w}`, `m${i}`, 'ivy')),
    );
    let writing = true;
    const writes = Promise.all(
      written.map(async (frames) => {
        for (let i = 0; i < frames.length; i += 5) {
          await store.store(frames.slice(i, i + 5).map((frame) => ({ to: 'ivy', frame })));
        }
      }),
    ).finally(() => (writing = false));
    const seen: string[] = [];
    let after = 0;
    for (let done = false; !done;) {
      done = !writing; // one more full read after the writers finished
      for (;;) {
        const page = await store.page('ivy', after, 7);
        seen.push(...mids(page.messages));
        after = page.lastSeq;
        if (!page.hasMore) break;
      }
    }
    await writes;
    expect(new Set(seen).size).toBe(seen.length);
    expect([...seen].sort()).toEqual(
      written
        .flat()
        .map((f) => f.mid)
        .sort(),
    );
    // each writer's own order is kept
    for (let w = 0; w < writers; w++) {
      expect(seen.filter((mid) => mid.startsWith(`w${w}:`))).toEqual(written[w].map((f) => f.mid));
    }
  });

  it('remembers when users last connected, never moving back, whether the replay is over, and purges old entries', async () => {
    await store.store([{ to: 'kim', frame: message('alice', 'k1', 'kim') }]);
    // kim has something stored, so a replay: under way until noted over; lee has nothing, so none.
    expect(
      await store.markConnected([
        { user: 'kim', at: 900 },
        { user: 'lee', at: 1000 },
        { user: 'kim', at: 1000 },
      ]),
    ).toEqual(new Set(['kim']));
    expect(await store.markConnected([{ user: 'kim', at: 500 }])).toEqual(new Set(['kim'])); // a late, older event
    // While a connect's replay is under way, what is stored is left to that replay.
    expect(await store.connectedSince(['kim', 'lee', 'max'], 0)).toEqual(new Set(['lee']));
    await store.replayed('kim');
    expect(await store.connectedSince(['kim', 'lee', 'max'], 1000)).toEqual(new Set(['kim', 'lee']));
    expect(await store.markConnected([{ user: 'kim', at: 2000 }])).toEqual(new Set(['kim']));
    expect(await store.connectedSince(['kim', 'lee'], 1500)).toEqual(new Set());
    await store.ack('kim', ['alice:k1']);
    expect(await store.markConnected([{ user: 'kim', at: 2000 }])).toEqual(new Set()); // nothing left to replay
    expect(await store.connectedSince(['kim', 'lee'], 1500)).toEqual(new Set(['kim']));
    expect(await store.connectedSince([], 0)).toEqual(new Set());
    await store.purge({ messagesBefore: 0, tombstonesBefore: 1500 });
    expect(await store.connectedSince(['kim', 'lee'], 0)).toEqual(new Set(['kim']));
  });

  it('notes a replay over only once nothing is stored behind what it sent', async () => {
    await store.store([{ to: 'ned', frame: message('alice', 'n1', 'ned') }]);
    expect(await store.markConnected([{ user: 'ned', at: 1000 }])).toEqual(new Set(['ned']));
    const sent = await store.page('ned', 0, 10);
    await store.store([{ to: 'ned', frame: message('alice', 'n2', 'ned') }]); // stored behind the page
    expect(await store.replayed('ned', sent.lastSeq)).toBe(false);
    expect(await store.connectedSince(['ned'], 0)).toEqual(new Set());
    const behind = await store.page('ned', sent.lastSeq, 10);
    expect(behind.messages.map((f) => f.mid)).toEqual(['alice:n2']);
    expect(await store.replayed('ned', behind.lastSeq)).toBe(true);
    expect(await store.connectedSince(['ned'], 0)).toEqual(new Set(['ned']));
  });

  it('purges deliverables past retention and expired ack tombstones, in batches', async () => {
    clock = 5_000_000;
    await store.store(
      ['old1', 'old2', 'old3'].map((id) => ({ to: 'jack', frame: message('alice', id, 'jack') })),
    );
    await store.ack('jack', ['alice:old1']);
    clock = 6_000_000;
    await store.store([{ to: 'jack', frame: message('alice', 'new', 'jack') }]);
    await store.ack('jack', ['alice:later']);

    const result = await store.purge({ messagesBefore: 5_500_000, tombstonesBefore: 5_500_000 });
    expect(result.messages).toBeGreaterThanOrEqual(2); // jack's two old ones, and older rows of earlier tests
    expect(mids((await store.page('jack', 0, 10)).messages)).toEqual(['alice:new']);
    // the tombstone of 'later' survives and still blocks it; the expired one of old1 is gone
    expect(await store.store([{ to: 'jack', frame: message('alice', 'later', 'jack') }])).toHaveLength(0);
    expect(await store.store([{ to: 'jack', frame: message('alice', 'old1', 'jack') }])).toHaveLength(1);
    expect(await store.purge({ messagesBefore: 0, tombstonesBefore: 0 })).toEqual({
      messages: 0,
      tombstones: 0,
      sequences: expect.any(Number),
    });
  });

  it('forgets the position counter of a recipient with nothing stored and no connect left; later positions still follow every earlier one', async () => {
    const counters = async (users: string[]) =>
      (
        await db.query<{ recipient: string }>(
          'SELECT recipient FROM offline_sequences WHERE recipient IN (SELECT jsonb_array_elements_text($1::text::jsonb)) ORDER BY recipient',
          [JSON.stringify(users)],
        )
      ).rows.map((row) => row.recipient);
    clock = 8_000_000;
    // olga: stored, paged (the app keeps the cursor), acked. quinn: still has one stored. rita: nothing
    // stored, but connected lately. A recipient nobody reads (a made-up id): its stored one purged.
    await store.store(['o1', 'o2', 'o3'].map((id) => ({ to: 'olga', frame: message('alice', id, 'olga') })));
    const paged = await store.page('olga', 0, 2);
    expect(paged.hasMore).toBe(true);
    await store.ack('olga', ['alice:o1', 'alice:o2', 'alice:o3']);
    await store.store([{ to: 'quinn', frame: message('alice', 'q1', 'quinn') }]);
    await store.markConnected([{ user: 'rita', at: 8_000_000 }]);
    clock = 1_000; // stored long ago
    await store.store([{ to: 'nobody-reads', frame: message('alice', 'n1', 'nobody-reads') }]);
    clock = 8_000_000;
    const users = ['nobody-reads', 'olga', 'quinn', 'rita'];
    expect(await counters(users)).toEqual(users);

    const purged = await store.purge({ messagesBefore: 2_000, tombstonesBefore: 7_000_000 });
    expect(await counters(users)).toEqual(['quinn', 'rita']);
    expect(purged.sequences).toBeGreaterThanOrEqual(2);
    // A new one for olga comes after the position of the page she read before it was forgotten.
    await store.store([{ to: 'olga', frame: message('alice', 'o4', 'olga') }]);
    expect(mids((await store.page('olga', paged.lastSeq, 10)).messages)).toEqual(['alice:o4']);
    expect(await readAll(store, 'olga')).toEqual(['alice:o4']);
  });

  it('purges old deliverables and tombstones even when forgetting old connects fails (a statement timeout)', async () => {
    const timingOut: SqlDatabase = Object.assign(Object.create(db) as SqlDatabase, {
      query: (sql: string, params?: unknown[]) =>
        sql.startsWith('DELETE FROM offline_connects')
          ? Promise.reject(
              Object.assign(new Error('canceling statement due to statement timeout'), { code: '57014' }),
            )
          : db.query(sql, params),
    });
    const purging = createSqlOfflineStore(timingOut, { now: () => clock, purgeBatch: 2 });
    clock = 7_000_000;
    await store.store([{ to: 'kim', frame: message('alice', 'stale', 'kim') }]);
    await expect(purging.purge({ messagesBefore: 7_500_000, tombstonesBefore: 0 })).rejects.toThrow(
      /timeout/,
    );
    expect(mids((await store.page('kim', 0, 10)).messages)).toEqual([]);
  });
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
    await store.store([{ to: 'bob', frame: message('alice', 'm1', 'bob') }]);
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
      await new Promise((r) => setTimeout(r, 300)); // the purge skips the row the ack holds
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
      expect(await store.store([{ to: 'bob', frame: message('alice', 'm1', 'bob') }])).toEqual([]);
    } finally {
      await acker.end();
    }
  });
});

describe('retention purge racing a store for a recipient whose position counter it forgets (real Postgres)', () => {
  const target = testDatabases().find((t) => t.name === 'postgres')!;
  afterAll(() => target.dispose());

  it('keeps the counter a store has written since the purge began, and positions go on after it', async () => {
    const db = await target.open();
    const store = createSqlOfflineStore(db, { now: () => 1_000 });
    await store.init();
    await store.ack('carl', ['alice:c0']); // a counter for carl, nothing stored: one the purge forgets
    const schema = (await db.query<{ s: string }>('SELECT current_schema() AS s')).rows[0].s;
    const writer = new Client({ connectionString: TEST_DATABASE_URL, options: `-c search_path=${schema}` });
    await writer.connect();
    try {
      // A store for carl, held open on its own connection: its position reserved, its row inserted.
      await writer.query('BEGIN');
      const reserved = await writer.query<{ last_seq: string }>(
        `INSERT INTO offline_sequences (recipient, last_seq) VALUES ('carl', 1)
         ON CONFLICT (recipient) DO UPDATE SET last_seq = offline_sequences.last_seq + 1
         RETURNING last_seq::text`,
      );
      await writer.query(
        'INSERT INTO offline_messages (recipient, mid, seq, frame, stored_at) VALUES ($1, $2, $3, $4, $5)',
        [
          'carl',
          'alice:c1',
          reserved.rows[0].last_seq,
          JSON.stringify(message('alice', 'c1', 'carl')),
          1_000,
        ],
      );
      // The purge's snapshot sees carl with nothing stored; it skips the counter's row, which the store holds.
      const purging = store.purge({ messagesBefore: 0, tombstonesBefore: 0 });
      await new Promise((r) => setTimeout(r, 300));
      await writer.query('COMMIT');
      await purging;
      const left = await db.query("SELECT 1 FROM offline_sequences WHERE recipient = 'carl'");
      expect(left.rows).toHaveLength(1);
      await store.store([{ to: 'carl', frame: message('alice', 'c2', 'carl') }]);
      expect(await readAll(store, 'carl')).toEqual(['alice:c1', 'alice:c2']);
    } finally {
      await writer.end();
    }
  });
});

/**
 * A consumer's statement locks rows B, X, A in that order; the purge deletes in physical order, A
 * then B. The purge holding A waits for B, the batch holding B waits for A once X is free: before
 * the purge skipped locked rows, Postgres failed one of them with 'deadlock detected' a second later.
 */
describe('retention purge racing consumer batches that lock rows in another order (real Postgres)', () => {
  const OLD = 1_000;
  const NOW = 1_000_000;
  /** A's row was written first (the purge meets it first); the batch locks B, then X, then A. */
  interface CrossedRows {
    name: string;
    /** Writes rows A, B and X at OLD, in that order. */
    setup(store: OfflineStore, db: SqlDatabase): Promise<void>;
    /** Locks X, as another transaction working on it would. */
    holdX: string;
    /** The consumer's batch: one statement locking B, X and A in that order. */
    batch(store: OfflineStore): Promise<unknown>;
  }
  const scenarios: CrossedRows[] = [
    {
      // Acks in the order users sent them, not the order their deliverables were stored in.
      name: 'an ack batch deleting stored deliverables',
      async setup(store, db) {
        for (const id of ['a', 'b', 'x'])
          await store.store([{ to: 'dana', frame: message('eve', id, 'dana') }]);
        // Deliverables of others, stored lately: at this size the ack finds each by its key, in the
        // acks' order (below about 100,000 rows, the planner reads the table in physical order).
        await db.query(
          `INSERT INTO offline_messages (recipient, mid, seq, frame, stored_at)
           SELECT 'filler-' || n, 'm', n, '{}', $1 FROM generate_series(1, 100000) AS n`,
          [NOW],
        );
        await db.query('ANALYZE offline_messages');
      },
      holdX: "SELECT 1 FROM offline_messages WHERE recipient = 'dana' AND mid = 'eve:x' FOR UPDATE",
      batch: (store) => store.ackAll([{ user: 'dana', mids: ['eve:b', 'eve:x', 'eve:a'] }]),
    },
    {
      // Connects are noted in byte order of user ids; the purge meets them in the order they were made.
      name: 'a connection batch noting connects',
      async setup(store) {
        for (const user of ['conn-3', 'conn-1', 'conn-2']) await store.markConnected([{ user, at: OLD }]);
      },
      holdX: "SELECT 1 FROM offline_connects WHERE recipient = 'conn-2' FOR UPDATE",
      batch: (store) =>
        store.markConnected(['conn-1', 'conn-2', 'conn-3'].map((user) => ({ user, at: NOW }))),
    },
    {
      // Position counters are reserved in byte order of user ids; the purge forgets idle ones in the order they were made.
      name: 'an ack batch reserving the position counters of users with nothing stored',
      async setup(store) {
        for (const user of ['seq-3', 'seq-1', 'seq-2']) await store.ack(user, ['eve:gone']);
      },
      holdX: "SELECT 1 FROM offline_sequences WHERE recipient = 'seq-2' FOR UPDATE",
      batch: (store) =>
        store.ackAll(['seq-1', 'seq-2', 'seq-3'].map((user) => ({ user, mids: ['eve:gone'] }))),
    },
  ];

  it.each(scenarios)('never deadlocks with $name', async (scenario) => {
    const target = testDatabases().find((t) => t.name === 'postgres')!;
    const db = await target.open();
    let clock = OLD;
    const store = createSqlOfflineStore(db, { now: () => clock });
    await store.init();
    await scenario.setup(store, db);
    clock = NOW;
    const schema = (await db.query<{ s: string }>('SELECT current_schema() AS s')).rows[0].s;
    const holder = new Client({ connectionString: TEST_DATABASE_URL, options: `-c search_path=${schema}` });
    await holder.connect();
    /** The backend waiting on `pid`'s locks, once there is one. */
    const blockedBy = async (pid: number, unless?: () => boolean): Promise<number | undefined> => {
      for (const deadline = Date.now() + 10_000; Date.now() < deadline && !unless?.();) {
        const found = await db.query<{ pid: number }>(
          'SELECT pid FROM pg_stat_activity WHERE $1::int = ANY (pg_blocking_pids(pid))',
          [pid],
        );
        if (found.rows.length > 0) return found.rows[0].pid;
        await new Promise((r) => setTimeout(r, 20));
      }
      if (!unless?.()) throw new Error(`nothing waited on backend ${pid}`);
    };
    const settled = <T>(promise: Promise<T>) => {
      const state = {
        done: false,
        outcome: promise.then(
          () => 'done',
          (err: Error) => err.message,
        ),
      };
      void state.outcome.finally(() => (state.done = true));
      return state;
    };
    try {
      // The window between the batch's locks (microseconds in one statement) held open: another
      // transaction holds X, so the batch holds B and waits for X.
      await holder.query('BEGIN');
      await holder.query(scenario.holdX);
      const holderPid = (await holder.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0].pid;
      const batch = settled(scenario.batch(store));
      const batchPid = await blockedBy(holderPid);
      // The purge of every row older than NOW meets A first, then B.
      const purge = settled(store.purge({ messagesBefore: NOW, tombstonesBefore: NOW }));
      await blockedBy(batchPid!, () => purge.done);
      await holder.query('COMMIT');
      expect({ batch: await batch.outcome, purge: await purge.outcome }).toEqual({
        batch: 'done',
        purge: 'done',
      });
    } finally {
      await holder.end();
      await target.dispose();
    }
  });
});

describe('offline store on PGlite, which runs no autovacuum', () => {
  const TABLES = ['offline_messages', 'offline_acks', 'offline_connects', 'offline_sequences'];

  /** Bytes of the store's tables with their indexes and TOAST, and how often each was vacuumed. */
  const footprint = async (db: SqlDatabase) => {
    const rows = await db.query<{ bytes: string; vacuums: string }>(
      `SELECT sum(pg_total_relation_size(relid))::text AS bytes, sum(vacuum_count)::text AS vacuums
       FROM pg_stat_user_tables WHERE relname = ANY($1::text[])`,
      [TABLES],
    );
    return { bytes: Number(rows.rows[0].bytes), vacuums: Number(rows.rows[0].vacuums) };
  };

  it('levels off while users come once and go: the adapter vacuums, so the space acks and purges free is reused', async () => {
    const db = await createPgliteDatabase(undefined, { vacuumIntervalMs: 20 });
    let clock = 1_000_000;
    const store = createSqlOfflineStore(db, { now: () => clock });
    await store.init();
    const DAY = 86_400_000;
    const sizes: number[] = [];
    try {
      for (let round = 0; round < 8; round++) {
        // 1,000 users never seen before: each connects, is stored a message, acks it.
        const users = Array.from({ length: 1000 }, (_, i) => `u${round}-${i}`);
        await store.markConnected(users.map((user) => ({ user, at: clock })));
        await store.store(
          users.map((user) => ({ to: user, frame: message('alice', `m${round}`, user, 'x'.repeat(200)) })),
        );
        await store.ackAll(users.map((user) => ({ user, mids: [`alice:m${round}`] })));
        // A month on: the purge leaves nothing of them.
        clock += 31 * DAY;
        await store.purge({ messagesBefore: clock - 30 * DAY, tombstonesBefore: clock - 8 * DAY });
        const before = (await footprint(db)).vacuums;
        for (const deadline = Date.now() + 2000; Date.now() < deadline;) {
          if ((await footprint(db)).vacuums > before) break;
          await new Promise((r) => setTimeout(r, 10));
        }
        sizes.push((await footprint(db)).bytes);
      }
      expect((await db.query('SELECT 1 FROM offline_sequences')).rows).toEqual([]);
      // Without VACUUM every round added its rows' space for good (850 KB here, 3.4 MB over the last
      // four); vacuumed, the tables level off once the space of a round or two is there to reuse.
      expect(sizes[7] - sizes[3]).toBeLessThan(sizes[0] / 2);
    } finally {
      await db.close();
    }
  });
});
