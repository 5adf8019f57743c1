/** @expectedSeconds 24 */
import {
  DeliverEvent,
  deliveriesIn,
  GroupCommandEvent,
  GroupFrame,
  GROUP_PAGE_MAX_BYTES,
  REPORT_PAGE_MAX_BYTES,
  ReportList,
  TOPICS,
} from '@parley/contracts';
import { MemoryBus } from '@parley/kafka';
import { migrate, SqlDatabase } from '@parley/postgres';
import { testDatabases } from '@parley/postgres/testing';
import { createMetricsRegistry, DAY_MS, internalHeaders, Readiness, silentLogger } from '@parley/service-kit';
import { createGroupMs, GroupMs, GroupMsDeps } from '../src/app';
import { LARGE_LISTS_AT_ONCE } from '../src/http-routes';
import { GROUP_MIGRATIONS } from '../src/migrations';
import { createSqlReportStore } from '../src/reports';
import { createSqlGroupStore } from '../src/sql-group-store';
import { waitFor } from '@parley/test-kit';

const SECRET = 'test-internal-secret-0123';

describe.each(testDatabases())('group-ms service on $name', (target) => {
  let db: SqlDatabase;
  let bus: MemoryBus;
  let service: GroupMs;
  let ids = 0;

  beforeAll(async () => {
    db = await target.open();
    await migrate(db, 'group-ms', GROUP_MIGRATIONS);
  });
  afterAll(() => target.dispose());

  /** A group-ms on the test database; `overrides` replace its defaults. */
  const groupMs = (overrides: Partial<GroupMsDeps> = {}) =>
    createGroupMs({
      bus,
      store: createSqlGroupStore(db),
      reports: createSqlReportStore(db),
      logger: silentLogger(),
      metrics: createMetricsRegistry('group-ms', { collectDefaults: false }),
      readiness: new Readiness(),
      port: 0,
      host: '127.0.0.1',
      internalSecret: SECRET,
      maxMembers: 3,
      maxGroupsPerUser: 1000,
      ...overrides,
    });

  beforeEach(async () => {
    bus = new MemoryBus();
    service = groupMs({ newId: () => `id${++ids}` });
    await service.start();
  });
  afterEach(() => service.stop());

  const call = (method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, user: string, payload?: object) =>
    service.http.inject({ method, url, headers: internalHeaders(SECRET, user), payload });
  const deliveredTo = (predicate: (d: DeliverEvent) => boolean) =>
    bus
      .events(TOPICS.delivery)
      .flatMap(deliveriesIn)
      .filter(predicate)
      .map((e) => e.to)
      .sort();

  it('names a group created without an id with the injected id source', async () => {
    const created = await call('POST', '/internal/groups', 'alice', { name: 'Unnamed' });
    expect(created.statusCode).toBe(201);
    expect(created.json().id).toMatch(/^id\d+$/);
    expect((await call('GET', `/internal/groups/${created.json().id}`, 'alice')).json().name).toBe('Unnamed');
  });

  it('serves the group API with the protocol rules and error bodies', async () => {
    const created = await call('POST', '/internal/groups', 'alice', {
      id: 'team',
      name: 'Team',
      members: ['bob'],
    });
    expect(created.statusCode).toBe(201);
    expect(created.json()).toEqual({
      id: 'team',
      name: 'Team',
      members: ['alice', 'bob'],
      admins: ['alice'],
      createdAt: expect.any(Number),
    });
    expect(
      (await call('POST', '/internal/groups', 'alice', { id: 'team', name: 'Team', members: ['bob'] }))
        .statusCode,
    ).toBe(201);
    const conflict = await call('POST', '/internal/groups', 'bob', { id: 'team', name: 'Mine', members: [] });
    expect([conflict.statusCode, conflict.json().error.code]).toEqual([409, 'conflict']);

    expect((await call('GET', '/internal/groups/team', 'bob')).json().members).toEqual(['alice', 'bob']);
    const hidden = await call('GET', '/internal/groups/team', 'mallory');
    expect([hidden.statusCode, hidden.json().error.code]).toEqual([404, 'not_found']);
    expect(
      (await call('GET', '/internal/groups', 'bob')).json().groups.map((g: { id: string }) => g.id),
    ).toEqual(['team']);

    expect(
      (await call('POST', '/internal/groups/team/members', 'bob', { members: ['carol'] })).json().members,
    ).toEqual(['alice', 'bob', 'carol']);
    const full = await call('POST', '/internal/groups/team/members', 'bob', { members: ['dave'] });
    expect([full.statusCode, full.json().error.code]).toEqual([409, 'group_full']);
    const forbidden = await call('DELETE', '/internal/groups/team/members/carol', 'bob');
    expect([forbidden.statusCode, forbidden.json().error.code]).toEqual([403, 'forbidden']);
    expect((await call('DELETE', '/internal/groups/team/members/carol', 'alice')).json().members).toEqual([
      'alice',
      'bob',
    ]);
    expect((await call('DELETE', '/internal/groups/team/members/bob', 'bob')).statusCode).toBe(200);
    expect((await call('GET', '/internal/groups/team', 'alice')).json().members).toEqual(['alice']);
    expect(
      (await call('POST', '/internal/groups', 'alice', { name: 'No id', members: [] })).json().id,
    ).toMatch(/^[A-Za-z0-9_.-]+$/);
  });

  it("pages a member's groups oldest first with limit and the next cursor; without either, all at once", async () => {
    for (const id of ['pg-5', 'pg-1', 'pg-4', 'pg-2', 'pg-3'])
      // created in the same millisecond or not
      await call('POST', '/internal/groups', 'pia', { id, name: id, members: ['quin'] });
    await call('POST', '/internal/groups', 'rex', { id: 'pg-other', name: 'not hers', members: [] });
    const list = async (user: string, query: string) =>
      (await call('GET', `/internal/groups${query}`, user)).json();
    const all = await list('quin', '');
    expect(all).toEqual({ groups: expect.any(Array) }); // no `next` without paging
    const ids = all.groups.map((g: { id: string }) => g.id);
    expect([...ids].sort()).toEqual(['pg-1', 'pg-2', 'pg-3', 'pg-4', 'pg-5']);

    const pages: string[][] = [];
    for (let after: string | null = '', n = 0; after !== null && n < 10; n++) {
      const page = await list('quin', `?limit=2${after ? `&after=${after}` : ''}`);
      pages.push(page.groups.map((g: { id: string }) => g.id));
      after = page.next;
    }
    expect(pages.map((p) => p.length)).toEqual([2, 2, 1]);
    expect(pages.flat()).toEqual(ids); // the same order, each group once
    const rest = await list('quin', `?after=${(await list('quin', '?limit=1')).next}`);
    expect([rest.groups.length, rest.next]).toEqual([4, null]);
    // pia is in the same groups, but quin's cursor is no position in her list (an app switching accounts).
    const quins = (await list('quin', '?limit=1')).next;
    const pias = await call('GET', `/internal/groups?after=${quins}`, 'pia');
    expect([pias.statusCode, pias.json().error.code, pias.json().error.message]).toEqual([
      400,
      'invalid_request',
      "query after: a cursor from another user's list; page again from the start (without after)",
    ]);

    const forged = await call('GET', '/internal/groups?after=bm9wZQ', 'quin');
    expect([forged.statusCode, forged.json().error]).toEqual([
      400,
      { code: 'invalid_request', message: 'query after: is not a cursor returned by this API' },
    ]);
    // Well formed but naming no group id (a NUL in it, which Postgres cannot take): a forged cursor, not a 500.
    const nul = Buffer.from('g1:5:pg\u00001').toString('base64url');
    const forgedId = await call('GET', `/internal/groups?after=${nul}`, 'quin');
    expect([forgedId.statusCode, forgedId.json().error]).toEqual([
      400,
      { code: 'invalid_request', message: 'query after: is not a cursor returned by this API' },
    ]);
    const tooMany = await call('GET', '/internal/groups?limit=201', 'quin');
    expect([tooMany.statusCode, tooMany.json().error.code]).toEqual([400, 'invalid_request']);
  });

  it("refuses to list a member's groups at once past the members of the largest page (a user in many full groups); pages still list them all", async () => {
    // maxMembers 3 here: the largest page (200 groups) holds at most 600 members; 201 full groups hold 603.
    for (let i = 0; i < 201; i++)
      await call('POST', '/internal/groups', 'hoarder', {
        id: `full-${i}`,
        name: 'n',
        members: ['h1', 'h2'],
      });
    const all = await call('GET', '/internal/groups', 'hoarder');
    expect([all.statusCode, all.json().error]).toEqual([
      400,
      {
        code: 'invalid_request',
        message: expect.stringMatching(/^more groups than one answer holds: .*page with \?limit=/),
      },
    ]);
    const page = (await call('GET', '/internal/groups?limit=200', 'hoarder')).json();
    const rest = (await call('GET', `/internal/groups?limit=200&after=${page.next}`, 'hoarder')).json();
    expect([page.groups.length, rest.groups.length, rest.next]).toEqual([200, 1, null]);
    // A member of fewer, or smaller, groups still gets them all at once.
    expect((await call('GET', '/internal/groups', 'h1')).statusCode).toBe(400);
    await call('DELETE', '/internal/groups/full-0/members/h1', 'h1');
    const h1 = await call('GET', '/internal/groups', 'h1');
    expect([h1.statusCode, h1.json().groups.length]).toEqual([200, 200]);
  }, 90_000); // 201 groups created one call at a time: 30 s was passed on a loaded CI box

  it("cuts a page of a member's groups once they reach GROUP_PAGE_MAX_BYTES, whatever its limit, one group at least, and pages on to the rest", async () => {
    await service.stop();
    service = groupMs({ newId: () => `id${++ids}`, maxMembers: 1024 });
    await service.start();
    // 20 full groups of 64-character ids, about 68 kB each as JSON: 1.4 MB in all.
    const longId = (name: string) => name.padEnd(64, '.');
    const members = Array.from({ length: 1023 }, (_, i) => longId(`wide-member-${i}`));
    const created: string[] = [];
    for (let i = 0; i < 20; i++) {
      const id = longId(`wide-${String(i).padStart(2, '0')}`);
      const create = await call('POST', '/internal/groups', 'wide-owner', {
        id,
        name: 'n'.repeat(200),
        members,
      });
      expect(create.statusCode).toBe(201);
      created.push(id);
    }
    const groupSize = JSON.stringify(
      (await call('GET', `/internal/groups/${created[0]}`, 'wide-owner')).json(),
    ).length;
    const listed: string[] = [];
    const pageSizes: number[] = [];
    for (let after = ''; ;) {
      const page = await call('GET', `/internal/groups?limit=200${after && `&after=${after}`}`, 'wide-owner');
      pageSizes.push(page.rawPayload.length);
      const { groups, next } = page.json() as { groups: Array<{ id: string }>; next: string | null };
      listed.push(...groups.map((g) => g.id));
      if (next === null) break;
      after = next;
    }
    expect(listed).toEqual(created); // in order, each once
    expect(pageSizes.length).toBe(2);
    for (const size of pageSizes) expect(size).toBeLessThan(GROUP_PAGE_MAX_BYTES + groupSize);
    // One group at least, though one alone passes the bound.
    const one = await createSqlGroupStore(db).listForMember('wide-owner', { limit: 200, maxBytes: 1 });
    expect([one.groups.map((g) => g.id), one.more]).toEqual([[created[0]], true]);
    // Without paging, all of them still come at once (their members are under 200 full groups').
    expect((await call('GET', '/internal/groups', 'wide-owner')).json().groups).toHaveLength(20);
  });

  it('answers at most LARGE_LISTS_AT_ONCE lists of more than one page asked without paging at once, and refuses another 503 until one is sent', async () => {
    // Pages of one group each (their bound at 1 byte), and the second page of each list held back.
    const store = createSqlGroupStore(db);
    let waiting = 0;
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    await service.stop();
    service = groupMs({
      newId: () => `id${++ids}`,
      store: {
        ...store,
        async listForMember(user, page) {
          if (page.after) {
            waiting++;
            await held;
          }
          return store.listForMember(user, { ...page, maxBytes: 1 });
        },
      },
    });
    await service.start();
    for (const id of ['ll-0', 'll-1', 'll-2'])
      await call('POST', '/internal/groups', 'lister', { id, name: id, members: [] });
    const first = [call('GET', '/internal/groups', 'lister'), call('GET', '/internal/groups', 'lister')];
    await waitFor(() => waiting === LARGE_LISTS_AT_ONCE);
    const refused = await call('GET', '/internal/groups', 'lister');
    expect([refused.statusCode, refused.json().error.code, refused.headers['retry-after']]).toEqual([
      503,
      'unavailable',
      expect.any(String),
    ]);
    expect(refused.json().error.message).toMatch(/page with \?limit=/);
    // Paged, it is answered meanwhile.
    expect((await call('GET', '/internal/groups?limit=200', 'lister')).statusCode).toBe(200);
    release();
    for (const answer of await Promise.all(first))
      expect(answer.json().groups.map((g: { id: string }) => g.id)).toEqual(['ll-0', 'll-1', 'll-2']);
    // Once they are sent, another is answered.
    expect((await call('GET', '/internal/groups', 'lister')).json().groups).toHaveLength(3);
  });

  it('has an erased user leave every group, past one page of them, as a leave each (the members are told, not the user)', async () => {
    await service.stop();
    service = groupMs({ newId: () => `id${++ids}`, erasePageSize: 2 });
    await service.start();
    for (let i = 0; i < 4; i++)
      await call('POST', '/internal/groups', 'ezra', { id: `ez${i}`, name: 'E', members: ['fay'] });
    await call('POST', '/internal/groups', 'fay', { id: 'fays', name: 'F', members: ['ezra'] });
    await call('POST', '/internal/groups', 'fay', { id: 'fays-only', name: 'F', members: [] });
    const erased = await call('DELETE', '/internal/account', 'ezra');
    expect(erased.json()).toEqual({ erased: 5 });
    expect((await call('GET', '/internal/groups', 'ezra')).json()).toEqual({ groups: [] });
    const fays = (await call('GET', '/internal/groups', 'fay')).json().groups;
    expect(fays).toHaveLength(6);
    expect(fays.every((g: { members: string[] }) => g.members.join() === 'fay')).toBe(true);
    // Each group tells its remaining member, as for a leave of ezra's own.
    const leaveNotices = bus
      .events(TOPICS.delivery)
      .flatMap(deliveriesIn)
      .filter((d) => d.to === 'fay' && d.frame.type === 'group' && d.frame.op === 'leave');
    expect(leaveNotices).toHaveLength(5);
    // Not ezra: stored for an erased account, the notice would outlive its erasure.
    expect(deliveredTo((d) => d.to === 'ezra' && d.frame.type === 'group' && d.frame.op === 'leave')).toEqual(
      [],
    );
    expect((await call('DELETE', '/internal/account', 'ezra')).json()).toEqual({ erased: 0 });
  });

  it("answers an erasure 503 once its time is spent, the groups left so far left, and the next call goes on (a user in more groups than leave within the caller's timeout)", async () => {
    await service.stop();
    // A budget spent at once: each call leaves one group, then answers 503 while more remain.
    service = groupMs({ newId: () => `id${++ids}`, erasePageSize: 2, eraseBudgetMs: 0 });
    await service.start();
    for (let i = 0; i < 3; i++)
      await call('POST', '/internal/groups', 'gus', { id: `gu${i}`, name: 'G', members: ['hal'] });
    const answers: unknown[] = [];
    for (let i = 0; i < 4; i++) {
      const res = await call('DELETE', '/internal/account', 'gus');
      const groupsLeft = (await call('GET', '/internal/groups', 'gus')).json().groups.length;
      answers.push([res.statusCode, res.statusCode === 200 ? res.json() : res.json().error.code, groupsLeft]);
    }
    expect(answers).toEqual([
      [503, 'unavailable', 2],
      [503, 'unavailable', 1],
      [200, { erased: 1 }, 0],
      [200, { erased: 0 }, 0],
    ]);
  });

  it('blocks and unblocks over the internal API: 204 each, idempotent both ways, the list oldest block first', async () => {
    await service.stop();
    let now = 5000;
    service = groupMs({ newId: () => `id${++ids}`, clock: () => (now -= 10) }); // later blocks stamped earlier
    await service.start();
    const answer = async (method: 'GET' | 'PUT' | 'DELETE', url: string) => {
      const res = await call(method, url, 'blo');
      return [res.statusCode, res.body];
    };
    expect(await answer('PUT', '/internal/blocks/zed')).toEqual([204, '']);
    expect(await answer('PUT', '/internal/blocks/amy')).toEqual([204, '']);
    expect(await answer('PUT', '/internal/blocks/zed')).toEqual([204, '']); // keeps its first time
    expect((await call('GET', '/internal/blocks', 'blo')).json()).toEqual({ blocked: ['amy', 'zed'] });
    expect(await answer('DELETE', '/internal/blocks/amy')).toEqual([204, '']);
    expect(await answer('DELETE', '/internal/blocks/amy')).toEqual([204, '']);
    expect(await answer('DELETE', '/internal/blocks/never-blocked')).toEqual([204, '']);
    expect((await call('GET', '/internal/blocks', 'blo')).json()).toEqual({ blocked: ['zed'] });
    expect((await call('GET', '/internal/blocks', 'zed')).json()).toEqual({ blocked: [] });
  });

  it('refuses blocking oneself (400 naming the field), a bad id, and a block past the limit (409 too_many_blocks) while a repeat still passes', async () => {
    await service.stop();
    service = groupMs({ newId: () => `id${++ids}`, maxBlocksPerUser: 2 });
    await service.start();
    const self = await call('PUT', '/internal/blocks/lim', 'lim');
    expect([self.statusCode, self.json().error]).toEqual([
      400,
      { code: 'invalid_request', message: 'user: you cannot block yourself' },
    ]);
    const bad = await call('PUT', '/internal/blocks/a%20b', 'lim');
    expect([bad.statusCode, bad.json().error.code, bad.json().error.message]).toEqual([
      400,
      'invalid_request',
      expect.stringContaining('user'),
    ]);
    expect((await call('PUT', '/internal/blocks/one', 'lim')).statusCode).toBe(204);
    expect((await call('PUT', '/internal/blocks/two', 'lim')).statusCode).toBe(204);
    const past = await call('PUT', '/internal/blocks/three', 'lim');
    expect([past.statusCode, past.json().error]).toEqual([
      409,
      { code: 'too_many_blocks', message: 'at most 2 users may be blocked; unblock one first' },
    ]);
    expect((await call('PUT', '/internal/blocks/two', 'lim')).statusCode).toBe(204);
    expect((await call('GET', '/internal/blocks', 'lim')).json()).toEqual({ blocked: ['one', 'two'] });
  });

  it('answers which of the users asked about blocked the caller, as the presence list is read, and refuses a list past 200 users', async () => {
    await call('PUT', '/internal/blocks/seeker', 'hider1');
    await call('PUT', '/internal/blocks/seeker', 'hider2');
    await call('PUT', '/internal/blocks/someone', 'hider3');
    await call('PUT', '/internal/blocks/hider1', 'seeker'); // seeker's own block hides nothing from seeker
    const blockers = await call(
      'GET',
      '/internal/blocks/blockers?users=hider2,hider3,,hider1,hider2,x',
      'seeker',
    );
    expect([blockers.statusCode, blockers.json()]).toEqual([200, { blockers: ['hider2', 'hider1'] }]);
    expect((await call('GET', '/internal/blocks/blockers?users=hider1', 'hider3')).json()).toEqual({
      blockers: [],
    });
    const many = Array.from({ length: 201 }, (_, i) => `u${i}`).join(',');
    const tooMany = await call('GET', `/internal/blocks/blockers?users=${many}`, 'seeker');
    expect([tooMany.statusCode, tooMany.json().error]).toEqual([
      400,
      { code: 'invalid_request', message: 'users: at most 200 users' },
    ]);
    const missing = await call('GET', '/internal/blocks/blockers', 'seeker');
    expect([missing.statusCode, missing.json().error.code]).toEqual([400, 'invalid_request']);
  });

  it("erases the blocks the user made with the account, not others' blocks of them (a blocked user would lift them with a call), its answer the groups left as before", async () => {
    await call('POST', '/internal/groups', 'gone', { id: 'gone-g', name: 'G', members: ['kept'] });
    await call('PUT', '/internal/blocks/kept', 'gone');
    await call('PUT', '/internal/blocks/gone', 'kept');
    await call('PUT', '/internal/blocks/other', 'kept');
    const erased = await call('DELETE', '/internal/account', 'gone');
    expect([erased.statusCode, erased.json()]).toEqual([200, { erased: 1 }]);
    expect((await call('GET', '/internal/blocks', 'gone')).json()).toEqual({ blocked: [] });
    expect((await call('GET', '/internal/blocks', 'kept')).json()).toEqual({ blocked: ['gone', 'other'] });
    expect((await call('GET', '/internal/blocks/blockers?users=kept', 'gone')).json()).toEqual({
      blockers: ['kept'],
    });
  });

  it("files a report for moderators, lists it to them a page at a time, counts it by reason, and erases it with its reporter's account, not the reported user's", async () => {
    const reported = await call('POST', '/internal/reports', 'rita', {
      user: 'rex',
      reason: 'harassment',
      comment: 'line one\nline two',
      messages: [{ mid: 'rex:m1', body: { text: 'hey \u0000 you' }, sentAt: 5 }],
    });
    expect([reported.statusCode, reported.json()]).toEqual([
      201,
      { id: expect.any(String), at: expect.any(Number) },
    ]);
    // sam's app sends his report again (a timeout): one report, counted once, the same receipt.
    const sams = { id: 'rep-1', user: 'rex', reason: 'spam' };
    const first = await call('POST', '/internal/reports', 'sam', sams);
    const again = await call('POST', '/internal/reports', 'sam', sams);
    expect([first.statusCode, again.statusCode, again.json()]).toEqual([201, 201, first.json()]);
    expect(first.json().id).toBe('sam:rep-1');
    const listed = await call('GET', '/internal/reports?limit=1', 'moderator');
    expect(listed.json()).toEqual({
      reports: [
        {
          id: reported.json().id,
          position: expect.any(Number),
          reporter: 'rita',
          user: 'rex',
          reason: 'harassment',
          comment: 'line one\nline two',
          messages: [{ mid: 'rex:m1', body: { text: 'hey \u0000 you' }, sentAt: 5 }],
          at: reported.json().at,
        },
      ],
      next: expect.any(Number),
    });
    const rest = (await call('GET', `/internal/reports?after=${listed.json().next}`, 'moderator')).json();
    // A position past any bigint is the moderator's mistake (400 naming it), not a 500.
    const pastAny = await call('GET', '/internal/reports?after=99999999999999999999', 'moderator');
    expect([pastAny.statusCode, pastAny.json().error.code]).toEqual([400, 'invalid_request']);
    expect(pastAny.json().error.message).toContain('after');
    expect(rest.reports.map((r: { reporter: string }) => r.reporter)).toEqual(['sam']);
    expect(rest).not.toHaveProperty('next');
    const metrics = (await service.http.inject('/metrics')).body;
    expect(metrics).toContain('parley_group_reports_total{reason="harassment",service="group-ms"} 1');
    expect(metrics).toContain('parley_group_reports_total{reason="spam",service="group-ms"} 1');
    expect(metrics).toContain('parley_group_reports_total{reason="hate",service="group-ms"} 0');

    // rex's own token erases: the reports about him stay for the moderators.
    await call('DELETE', '/internal/account', 'rex');
    const left = (await call('GET', '/internal/reports', 'moderator')).json() as ReportList;
    expect(left.reports.map((r) => r.reporter)).toEqual(['rita', 'sam']);
    await call('DELETE', '/internal/account', 'rita');
    await call('DELETE', '/internal/account', 'sam');
    expect((await call('GET', '/internal/reports', 'moderator')).json()).toEqual({ reports: [] });
  });

  it("cuts a moderators' page at REPORT_PAGE_MAX_BYTES of quoted messages, however many reports it may hold, and pages on to the rest", async () => {
    const before = (await call('GET', '/internal/reports?limit=500', 'moderator')).json() as ReportList;
    let after = before.reports.at(-1)?.position ?? 0;
    // 12 reports quoting 20 messages of 30,000 characters each (600 kB), as a 1 MiB REST body allows.
    const messages = Array.from({ length: 20 }, (_, i) => ({
      mid: `hoarder:m${i}`,
      body: 'x'.repeat(30_000),
    }));
    for (let i = 0; i < 12; i++)
      expect(
        (
          await call('POST', '/internal/reports', `bulk-reporter-${i}`, {
            user: 'hoarder',
            reason: 'spam',
            messages,
          })
        ).statusCode,
      ).toBe(201);
    const read: string[] = [];
    const pageSizes: number[] = [];
    for (;;) {
      const page = await call('GET', `/internal/reports?limit=500&after=${after}`, 'moderator');
      pageSizes.push(page.rawPayload.length);
      const { reports, next } = page.json() as ReportList;
      read.push(...reports.map((r) => r.reporter));
      if (next === undefined) break;
      after = next;
    }
    expect(read).toEqual(Array.from({ length: 12 }, (_, i) => `bulk-reporter-${i}`));
    // Each page under the bound plus the report that reached it; 12 of them took two pages.
    expect(pageSizes.length).toBeGreaterThanOrEqual(2);
    for (const size of pageSizes) expect(size).toBeLessThan(REPORT_PAGE_MAX_BYTES + 700_000);
    for (let i = 0; i < 12; i++) await call('DELETE', '/internal/account', `bulk-reporter-${i}`);
  });

  it('refuses a report of oneself, a bad reason or comment with the field named, and one past the daily limit with when to retry', async () => {
    await service.stop();
    let now = 1_000_000_000;
    service = groupMs({ newId: () => `id${++ids}`, clock: () => now, maxReportsPerDay: 2 });
    await service.start();
    const self = await call('POST', '/internal/reports', 'ray', { user: 'ray', reason: 'spam' });
    expect([self.statusCode, self.json().error]).toEqual([
      400,
      { code: 'invalid_request', message: 'user: you cannot report yourself' },
    ]);
    const reason = await call('POST', '/internal/reports', 'ray', { user: 'rex', reason: 'rude' });
    expect([reason.statusCode, reason.json().error.code]).toEqual([400, 'invalid_request']);
    expect(reason.json().error.message).toContain('reason');
    expect(reason.json().error.message).toContain('harassment');
    const comment = await call('POST', '/internal/reports', 'ray', {
      user: 'rex',
      reason: 'spam',
      comment: 'a\u0007b',
    });
    expect([comment.statusCode, comment.json().error.message]).toEqual([
      400,
      expect.stringContaining('comment'),
    ]);

    for (const user of ['r1', 'r2'])
      expect(
        (await call('POST', '/internal/reports', 'ray', { id: user, user, reason: 'spam' })).statusCode,
      ).toBe(201);
    // A retry of one filed (its id again) is answered as filed, past the limit too: nothing new.
    const retried = await call('POST', '/internal/reports', 'ray', { id: 'r2', user: 'r2', reason: 'spam' });
    expect([retried.statusCode, retried.json().id]).toEqual([201, 'ray:r2']);
    now += 3600_000;
    const third = await call('POST', '/internal/reports', 'ray', { user: 'r3', reason: 'spam' });
    expect([third.statusCode, third.json().error.code, third.headers['retry-after']]).toEqual([
      429,
      'rate_limited',
      String(23 * 3600),
    ]);
    now += 23 * 3600_000;
    expect((await call('POST', '/internal/reports', 'ray', { user: 'r3', reason: 'spam' })).statusCode).toBe(
      201,
    );
  });

  it('refuses a change past the groups one user may be in: 409 too_many_groups over REST, an error deliverable to its sender from the group-commands topic', async () => {
    await service.stop();
    service = groupMs({ newId: () => `id${++ids}`, maxGroupsPerUser: 1 });
    await service.start();
    const refusal = (group: string, who: string) => ({
      code: 'too_many_groups',
      message: `group ${group}: ${who} already in the most groups one user may be in (1)`,
    });
    await call('POST', '/internal/groups', 'ivy', { id: 'ivy-1', name: 'I', members: [] });
    const create = await call('POST', '/internal/groups', 'ivy', { id: 'ivy-2', name: 'I', members: [] });
    expect([create.statusCode, create.json().error]).toEqual([409, refusal('ivy-2', 'ivy')]);
    await call('POST', '/internal/groups', 'jon', { id: 'jon-1', name: 'J', members: [] });
    const add = await call('POST', '/internal/groups/jon-1/members', 'jon', { members: ['ivy'] });
    expect([add.statusCode, add.json().error]).toEqual([409, refusal('jon-1', 'ivy')]);

    const frame: GroupFrame = { type: 'group', id: 'j1', op: 'add', group: 'jon-1', members: ['ivy'] };
    await bus.publish(TOPICS.groupCommands, [{ v: 1, kind: 'group-command', from: 'jon', sentAt: 1, frame }]);
    await waitFor(() => deliveredTo((d) => d.frame.type === 'error').length === 1);
    const [error] = bus
      .events(TOPICS.delivery)
      .flatMap(deliveriesIn)
      .filter((d) => d.frame.type === 'error');
    expect(error).toMatchObject({
      to: 'jon',
      frame: { mid: '~err:jon:j1', id: 'j1', ...refusal('jon-1', 'ivy') },
    });
    expect((await call('GET', '/internal/groups/jon-1', 'jon')).json().members).toEqual(['jon']);
  });

  it('refuses internal calls without the secret, and bad input with the field named', async () => {
    const noSecret = await service.http.inject({
      method: 'GET',
      url: '/internal/groups',
      headers: { 'x-parley-user': 'alice' },
    });
    expect(noSecret.statusCode).toBe(403);
    const bad = await call('POST', '/internal/groups', 'alice', { name: '', members: [] });
    expect(bad.statusCode).toBe(400);
    expect(bad.json().error.message).toContain('name');
    // Postgres cannot store U+0000: refused as input, not a 500 from the database.
    const nul = await call('POST', '/internal/groups', 'alice', { id: 'nul', name: 'a\u0000b', members: [] });
    expect([nul.statusCode, nul.json().error.code]).toEqual([400, 'invalid_request']);
    // Nor a lone surrogate, which JSON can carry and jsonb cannot: a 500 here would make the pipe
    // (group-message-router) retry the op for good.
    const half = await call('POST', '/internal/groups', 'alice', { id: 'sur', name: 'x\ud800', members: [] });
    expect([half.statusCode, half.json().error.message]).toEqual([400, expect.stringMatching(/^name: /)]);
  });

  it('publishes a group deliverable per member (and removed member) with unique mids, and a change event, for REST changes', async () => {
    await call('POST', '/internal/groups', 'alice', { id: 'rest', name: 'R', members: ['bob', 'carol'] });
    await call('DELETE', '/internal/groups/rest/members/carol', 'alice');
    await waitFor(() => bus.events(TOPICS.groupChanges).length === 2);
    const groupFrames = (op: string) => (d: DeliverEvent) =>
      d.frame.type === 'group' && d.frame.group === 'rest' && d.frame.op === op;
    expect(deliveredTo(groupFrames('create'))).toEqual(['alice', 'bob', 'carol']);
    expect(deliveredTo(groupFrames('remove'))).toEqual(['alice', 'bob', 'carol']);
    // One event per change on MemoryBus's one partition, the frame written once.
    expect(bus.events(TOPICS.delivery).map((e) => e.kind)).toEqual(['deliver-many', 'deliver-many']);
    const mids = new Set(
      bus
        .events(TOPICS.delivery)
        .flatMap(deliveriesIn)
        .map((e) => ('mid' in e.frame ? e.frame.mid : '')),
    );
    expect(mids.size).toBe(2);
    expect(bus.events(TOPICS.groupChanges).map((e) => e.members)).toEqual([
      ['alice', 'bob', 'carol'],
      ['alice', 'bob'],
    ]);
  });

  it.each(['api', 'topic'] as const)(
    'applies group commands from the pipe once, tells members incl. removed ones, and refuses invalid ones (through the %s)',
    async (via) => {
      const command = (from: string, frame: GroupFrame): GroupCommandEvent => ({
        v: 1,
        kind: 'group-command',
        from,
        sentAt: 7000,
        frame,
      });
      const group = `pipe-${via}`;
      const id = (n: number) => `${via}${n}`;
      const create = command('alice', {
        type: 'group',
        id: id(1),
        op: 'create',
        group,
        name: 'P',
        members: ['bob', 'carol'],
      });
      const remove = command('alice', { type: 'group', id: id(2), op: 'remove', group, members: ['bob'] });
      const refused = command('carol', { type: 'group', id: id(3), op: 'remove', group, members: ['alice'] });
      const commands = [create, remove, remove, refused];
      if (via === 'topic') {
        await bus.publish(TOPICS.groupCommands, commands);
        await waitFor(() => deliveredTo((d) => d.frame.type === 'error').length === 1);
      } else {
        // What group-message-router calls, in line with the messages behind the ops.
        const applied = await service.http.inject({
          method: 'POST',
          url: '/internal/group-commands',
          headers: internalHeaders(SECRET),
          payload: { commands },
        });
        expect([applied.statusCode, applied.json()]).toEqual([200, { applied: 4 }]);
      }

      const byMid = (mid: string) => (d: DeliverEvent) => 'mid' in d.frame && d.frame.mid === mid;
      expect(deliveredTo(byMid(`~group:alice:${id(1)}`))).toEqual(['alice', 'bob', 'carol']);
      // the replayed remove is delivered again under the same mid (clients dedup); the group changed once
      expect(deliveredTo(byMid(`~group:alice:${id(2)}`))).toEqual([
        'alice',
        'alice',
        'bob',
        'bob',
        'carol',
        'carol',
      ]);
      expect(deliveredTo(byMid(`~err:carol:${id(3)}`))).toEqual(['carol']);
      expect((await call('GET', `/internal/groups/${group}`, 'alice')).json()).toMatchObject({
        members: ['alice', 'carol'],
        admins: ['alice'],
      });
      expect((await service.http.inject('/metrics')).body).toContain(
        'parley_group_commands_total{op="remove",service="group-ms"} 3',
      );
    },
  );

  it('remembers an op from the pipe that changed nothing or was refused: its replay after a later change repeats that', async () => {
    const command = (from: string, frame: GroupFrame): GroupCommandEvent => ({
      v: 1,
      kind: 'group-command',
      from,
      sentAt: 8000,
      frame,
    });
    const apply = async (...commands: GroupCommandEvent[]) =>
      expect(
        (
          await service.http.inject({
            method: 'POST',
            url: '/internal/group-commands',
            headers: internalHeaders(SECRET),
            payload: { commands },
          })
        ).statusCode,
      ).toBe(200);
    const members = async () => (await call('GET', '/internal/groups/replays', 'alice')).json().members;
    const create = command('alice', {
      type: 'group',
      id: 'r1',
      op: 'create',
      group: 'replays',
      name: 'R',
      members: ['bob', 'carol'],
    });
    const addAgain = command('bob', {
      type: 'group',
      id: 'r2',
      op: 'add',
      group: 'replays',
      members: ['carol'],
    });
    const overfull = command('bob', {
      type: 'group',
      id: 'r3',
      op: 'add',
      group: 'replays',
      members: ['dave'],
    });
    await apply(create, addAgain, overfull); // carol is a member already; a fourth exceeds maxMembers 3
    expect(deliveredTo((d) => d.frame.type === 'error')).toEqual(['bob']);

    await call('DELETE', '/internal/groups/replays/members/carol', 'alice');
    await apply(addAgain, overfull); // redelivered, say after a crash: room for dave now, carol gone
    expect(await members()).toEqual(['alice', 'bob']);
    const errors = bus
      .events(TOPICS.delivery)
      .flatMap(deliveriesIn)
      .filter((d) => d.frame.type === 'error')
      .map((d) => d.frame);
    expect(errors).toEqual([errors[0], errors[0]]); // the same refusal, under the same mid
    expect(errors[0]).toMatchObject({ mid: '~err:bob:r3', code: 'group_full' });
  });

  it('takes group commands over the internal API only with the secret, and names a bad field', async () => {
    const post = (headers: Record<string, string>, payload: object) =>
      service.http.inject({ method: 'POST', url: '/internal/group-commands', headers, payload });
    const rename: GroupCommandEvent = {
      v: 1,
      kind: 'group-command',
      from: 'alice',
      sentAt: 1,
      frame: { type: 'group', id: 'x1', op: 'rename', group: 'nowhere', name: 'N' },
    };
    expect((await post({}, { commands: [rename] })).statusCode).toBe(403);
    const empty = await post(internalHeaders(SECRET), { commands: [] });
    expect([empty.statusCode, empty.json().error.message]).toEqual([
      400,
      expect.stringContaining('commands'),
    ]);
    const refusal = async (payload: object) => {
      const res = await post(internalHeaders(SECRET), payload);
      return [res.statusCode, res.json().error?.code, res.json().error?.message];
    };
    const withFrame = (frame: object) => ({
      commands: [{ ...rename, frame: { ...rename.frame, ...frame } }],
    });
    // One error naming the field, not one per op the frame might have been ("op: must be one of
    // "create", "leave", "rename"; members: is required; members: is required").
    expect(await refusal(withFrame({ op: 'nope' }))).toEqual([
      400,
      'invalid_request',
      'commands[0].frame.op: must be one of "create", "add", "remove", "leave", "rename"',
    ]);
    expect(await refusal(withFrame({ name: 5 }))).toEqual([
      400,
      'invalid_request',
      'commands[0].frame.name: must be string',
    ]);
    expect(await refusal(withFrame({ op: 'add', members: 'bob' }))).toEqual([
      400,
      'invalid_request',
      'commands[0].frame.members: must be array',
    ]);
    expect(await refusal([rename])).toEqual([400, 'invalid_request', 'body: must be object']);
    expect(bus.events(TOPICS.delivery)).toEqual([]);
  });

  it('forgets applied ops past their retention, and counts them, but not one whose notice is unpublished', async () => {
    let now = Date.now() - 100 * DAY_MS; // older than every op the other tests applied
    const flaky = new MemoryBus();
    const purging = groupMs({ bus: flaky, clock: () => now, opsRetentionMs: 8 * DAY_MS });
    await purging.start();
    try {
      const create = (id: string) =>
        purging.http.inject({
          method: 'POST',
          url: '/internal/groups',
          headers: internalHeaders(SECRET, 'alice'),
          payload: { id, name: id, members: ['bob'] },
        });
      const opsOf = async () =>
        (
          await db.query<{ group_id: string }>(
            "SELECT group_id FROM group_ops WHERE group_id IN ('aged', 'recent', 'stuck') ORDER BY group_id",
          )
        ).rows.map((r) => r.group_id);
      expect((await create('aged')).statusCode).toBe(201);
      flaky.refusePublish = () => true; // Kafka away from here on: these notices wait in the outbox
      expect((await create('stuck')).statusCode).toBe(201);
      now += 9 * DAY_MS;
      expect((await create('recent')).statusCode).toBe(201);
      expect(await opsOf()).toEqual(['aged', 'recent', 'stuck']);

      expect(await purging.purgeNow()).toEqual({
        ops: 1,
        groups: 0,
        blockChanges: expect.any(Number),
        routed: expect.any(Number),
        reports: expect.any(Number),
      });
      expect(await opsOf()).toEqual(['recent', 'stuck']);
      const metrics = (await purging.http.inject('/metrics')).body;
      expect(metrics).toContain('parley_group_ops_purged_total{service="group-ms"} 1');
    } finally {
      await purging.stop();
    }
  });

  it('forgets a group its last member left once GROUP_OPS_KEEP_DAYS have passed, not one with members or left lately', async () => {
    let now = Date.now() - 100 * DAY_MS; // older than every group the other tests made
    const purging = groupMs({ clock: () => now, opsRetentionMs: 8 * DAY_MS });
    await purging.start();
    try {
      const as = (user: string, method: 'POST' | 'DELETE', url: string, payload?: object) =>
        purging.http.inject({ method, url, headers: internalHeaders(SECRET, user), payload });
      const groupsNamed = async () =>
        (
          await db.query<{ id: string }>(
            "SELECT id FROM groups WHERE id IN ('emptied', 'kept', 'emptied-lately') ORDER BY id",
          )
        ).rows.map((r) => r.id);
      for (const id of ['emptied', 'kept', 'emptied-lately'])
        expect(
          (await as('alice', 'POST', '/internal/groups', { id, name: id, members: ['bob'] })).statusCode,
        ).toBe(201);
      // Everyone leaves 'emptied'; 'kept' keeps bob.
      for (const user of ['alice', 'bob'])
        expect((await as(user, 'DELETE', `/internal/groups/emptied/members/${user}`)).statusCode).toBe(200);
      expect((await as('alice', 'DELETE', '/internal/groups/kept/members/alice')).statusCode).toBe(200);
      now += 9 * DAY_MS;
      for (const user of ['alice', 'bob'])
        expect((await as(user, 'DELETE', `/internal/groups/emptied-lately/members/${user}`)).statusCode).toBe(
          200,
        );
      expect(await groupsNamed()).toEqual(['emptied', 'emptied-lately', 'kept']);

      const purged = await purging.purgeNow();
      expect(await groupsNamed()).toEqual(['emptied-lately', 'kept']);
      expect(purged).toEqual({
        ops: expect.any(Number),
        groups: 1,
        blockChanges: expect.any(Number),
        routed: expect.any(Number),
        reports: expect.any(Number),
      });
      // Its id is free, as it was: created again, it is a new group.
      const again = await as('carol', 'POST', '/internal/groups', {
        id: 'emptied',
        name: 'Again',
        members: [],
      });
      expect([again.statusCode, again.json().members]).toEqual([201, ['carol']]);
      const metrics = (await purging.http.inject('/metrics')).body;
      expect(metrics).toContain('parley_group_empty_groups_purged_total{service="group-ms"} 1');
    } finally {
      await purging.stop();
    }
  });

  it('publishes the notice of a REST change whose publish failed from the outbox, once', async () => {
    const flaky = new MemoryBus();
    let now = Date.now();
    const outboxed = groupMs({
      bus: flaky,
      clock: () => now, // both changes below in one millisecond
      outboxGraceMs: 0,
      outboxIntervalMs: 3_600_000, // the test runs it
    });
    await outboxed.start();
    try {
      flaky.refusePublish = () => true;
      const created = await outboxed.http.inject({
        method: 'POST',
        url: '/internal/groups',
        headers: internalHeaders(SECRET, 'alice'),
        payload: { id: 'outboxed', name: 'Outboxed', members: ['bob'] },
      });
      // Committed, not told: the caller hears it was done, the outbox tells it. A leave answered
      // 503 and retried would have met 404 (no longer a member).
      expect([created.statusCode, created.json().members]).toEqual([201, ['alice', 'bob']]);
      const left = await outboxed.http.inject({
        method: 'DELETE',
        url: '/internal/groups/outboxed/members/bob',
        headers: internalHeaders(SECRET, 'bob'),
      });
      expect([left.statusCode, left.json().members]).toEqual([200, ['alice']]);
      flaky.refusePublish = () => false;
      now += 2; // the leave, stamped in the create's millisecond, took the next one (after the create)
      expect(await outboxed.publishOutboxNow()).toBe(2);
      const told = flaky
        .events(TOPICS.delivery)
        .flatMap(deliveriesIn)
        .filter((d) => d.frame.type === 'group' && d.frame.group === 'outboxed')
        .map((d) => `${d.frame.type === 'group' && d.frame.op} ${d.to}`);
      // In the order applied, even within one millisecond.
      expect(told).toEqual(['create alice', 'create bob', 'leave alice', 'leave bob']);
      expect(flaky.events(TOPICS.groupChanges).map((e) => (e.members ?? []).join())).toEqual([
        'alice,bob',
        'alice',
      ]);
      expect(await outboxed.publishOutboxNow()).toBe(0);
    } finally {
      await outboxed.stop();
    }
  });
});

describe.each(testDatabases())('group-ms schema upgrade on $name', (target) => {
  let db: SqlDatabase;
  beforeAll(async () => {
    db = await target.open();
  });
  afterAll(() => target.dispose());

  it('marks the groups left without members before migration 013, so the purge still finds them', async () => {
    await migrate(
      db,
      'group-ms',
      GROUP_MIGRATIONS.filter((m) => m.id < '013'),
    );
    const old = Date.now() - 30 * DAY_MS;
    await db.query(
      `INSERT INTO groups (id, name, created_by, created_at, updated_at)
       VALUES ('emptied-before', 'e', 'alice', $1, $1), ('full-before', 'f', 'alice', $1, $1)`,
      [old],
    );
    await db.query(
      "INSERT INTO group_members (group_id, user_id, role, joined_at) VALUES ('full-before', 'bob', 'admin', $1)",
      [old],
    );
    await migrate(db, 'group-ms', GROUP_MIGRATIONS);
    const marks = await db.query<{ id: string; memberless: boolean }>(
      'SELECT id, memberless FROM groups ORDER BY id',
    );
    expect(marks.rows).toEqual([
      { id: 'emptied-before', memberless: true },
      { id: 'full-before', memberless: false },
    ]);
    const store = createSqlGroupStore(db);
    expect(await store.forgetEmptyGroupsBefore(Date.now() - DAY_MS)).toBe(1);
    expect((await db.query<{ id: string }>('SELECT id FROM groups')).rows).toEqual([{ id: 'full-before' }]);
  });
});

describe.each(testDatabases())('group-ms group counts upgrade on $name', (target) => {
  let db: SqlDatabase;
  beforeAll(async () => {
    db = await target.open();
  });
  afterAll(() => target.dispose());

  it('counts the groups of every member from before migration 016, and keeps counting from there, through a TRUNCATE too', async () => {
    await migrate(
      db,
      'group-ms',
      GROUP_MIGRATIONS.filter((m) => m.id < '016'),
    );
    await db.query(
      `INSERT INTO groups (id, name, created_by, created_at, updated_at)
       VALUES ('before-1', 'a', 'ann', 1, 1), ('before-2', 'b', 'ann', 1, 1)`,
    );
    await db.query(
      `INSERT INTO group_members (group_id, user_id, role, joined_at)
       VALUES ('before-1', 'ann', 'admin', 1), ('before-1', 'bob', 'member', 1), ('before-2', 'ann', 'admin', 1)`,
    );
    await migrate(db, 'group-ms', GROUP_MIGRATIONS);
    const counts = async () =>
      (await db.query('SELECT user_id, groups FROM group_user_counts ORDER BY user_id')).rows;
    expect(await counts()).toEqual([
      { user_id: 'ann', groups: 2 },
      { user_id: 'bob', groups: 1 },
    ]);
    // What a limit reads for them, counted from the rows written before the upgrade.
    let read = new Map<string, number>();
    await createSqlGroupStore(db).apply('after', 'op-1', async (_current, context) => {
      read = await context.lockGroupCounts(['bob', 'ann']);
      return null;
    });
    expect(read).toEqual(
      new Map([
        ['bob', 1],
        ['ann', 2],
      ]),
    );
    // Rows written as an older replica writes them, during a rollout, are counted too.
    await db.query("DELETE FROM group_members WHERE group_id = 'before-1'");
    expect(await counts()).toEqual([{ user_id: 'ann', groups: 1 }]);
    await db.query('TRUNCATE group_members'); // an operator's: no row trigger fires
    expect(await counts()).toEqual([]);
  });
});
