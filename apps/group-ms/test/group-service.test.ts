import { GroupCommandEvent, GroupFrame, ParleyError } from '@parley/contracts';
import { migrate, SqlDatabase } from '@parley/postgres';
import { testDatabases } from '@parley/postgres/testing';
import { ChangeRequest, GroupOperation, toGroup } from '../src/group';
import { GroupService } from '../src/group-service';
import { GROUP_MIGRATIONS } from '../src/migrations';
import { createSqlGroupStore } from '../src/sql-group-store';

describe.each(testDatabases())('group rules on $name', (target) => {
  let db: SqlDatabase;
  let groups: GroupService;
  let seq = 0;
  beforeAll(async () => {
    db = await target.open();
    await migrate(db, 'group-ms', GROUP_MIGRATIONS);
    groups = new GroupService(createSqlGroupStore(db), { maxMembers: 4, maxGroupsPerUser: 1000 });
  });
  afterAll(() => target.dispose());

  const change = (group: string, by: string, operation: GroupOperation, service = groups) => {
    const mid = `~test:${++seq}`;
    const request: ChangeRequest = { group, by, at: 1000 + seq, operation };
    return service.change(request, { opMid: mid, noticeMid: mid });
  };
  const refusedWith = async (promise: Promise<unknown>) => {
    const err = await promise.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ParleyError);
    return (err as ParleyError).code;
  };
  const command = (from: string, frame: GroupFrame, sentAt = 5000): GroupCommandEvent => ({
    v: 1,
    kind: 'group-command',
    from,
    sentAt,
    frame,
  });

  it('creates a group with the creator as member and admin, and tells every member', async () => {
    const { state, effects } = await change('g-create', 'alice', {
      op: 'create',
      name: 'Team',
      members: ['bob', 'carol', 'bob'],
    });
    expect(toGroup(state!)).toEqual({
      id: 'g-create',
      name: 'Team',
      members: ['alice', 'bob', 'carol'],
      admins: ['alice'],
      createdAt: state!.createdAt,
    });
    expect(toGroup((await groups.find('g-create'))!)).toEqual(toGroup(state!));
    expect(effects.notices[0].recipients).toEqual(['alice', 'bob', 'carol']);
    expect(effects.notices[0].frame).toMatchObject({
      type: 'group',
      op: 'create',
      group: 'g-create',
      name: 'Team',
      members: ['alice', 'bob', 'carol'],
      by: 'alice',
    });
    expect(effects.changes).toEqual([
      {
        v: 1,
        kind: 'group-changed',
        group: 'g-create',
        members: ['alice', 'bob', 'carol'],
        at: state!.updatedAt,
      },
    ]);
  });

  it('treats the same create by the same creator as a repeat; another content, or another user, as a conflict', async () => {
    await change('g-idem', 'alice', { op: 'create', name: 'Team', members: ['bob'] });
    const again = await change('g-idem', 'alice', { op: 'create', name: 'Team', members: ['bob', 'alice'] });
    expect(toGroup(again.state!)).toMatchObject({ name: 'Team', members: ['alice', 'bob'] });
    expect(again.effects).toEqual({ deliveries: [], notices: [], changes: [] });
    // not silently the old group: the new name and members would never be applied
    await expect(change('g-idem', 'alice', { op: 'create', name: 'Other', members: [] })).rejects.toThrow(
      'group g-idem: already exists with another name or other members',
    );
    expect(await refusedWith(change('g-idem', 'bob', { op: 'create', name: 'Mine', members: [] }))).toBe(
      'conflict',
    );
  });

  it("says why a member's create of an existing group conflicts: not its creator, though its name and members are the same", async () => {
    await change('g-not-mine', 'alice', { op: 'create', name: 'Team', members: ['bob'] });
    const same = change('g-not-mine', 'bob', { op: 'create', name: 'Team', members: ['alice'] });
    await expect(same).rejects.toMatchObject({
      code: 'conflict',
      message: 'group g-not-mine: already exists, created by another user',
    });
  });

  it('lets a group id its last member left be created again, by anyone', async () => {
    await change('g-gone', 'zed', { op: 'create', name: 'Z', members: [] });
    await change('g-gone', 'zed', { op: 'remove', members: ['zed'] });
    const again = await change('g-gone', 'amy', { op: 'create', name: 'New', members: ['bo'] });
    expect(toGroup(again.state!)).toMatchObject({ name: 'New', members: ['amy', 'bo'], admins: ['amy'] });
    expect(again.effects.notices[0].frame).toMatchObject({ op: 'create', by: 'amy' });
    expect(toGroup((await groups.find('g-gone'))!)).toMatchObject({ name: 'New', members: ['amy', 'bo'] });
  });

  it('lets any member add members, and tells old and new members', async () => {
    await change('g-add', 'alice', { op: 'create', name: 'T', members: ['bob'] });
    const { state, effects } = await change('g-add', 'bob', { op: 'add', members: ['carol', 'alice'] });
    expect(toGroup(state!).members).toEqual(['alice', 'bob', 'carol']);
    expect(effects.notices[0].recipients).toEqual(['alice', 'bob', 'carol']);
    expect(effects.notices[0].frame).toMatchObject({ op: 'add', members: ['carol'], by: 'bob' });
  });

  it('lets an admin remove others and tells the removed member too', async () => {
    await change('g-rm', 'alice', { op: 'create', name: 'T', members: ['bob', 'carol'] });
    const { state, effects } = await change('g-rm', 'alice', { op: 'remove', members: ['bob'] });
    expect(toGroup(state!).members).toEqual(['alice', 'carol']);
    expect(effects.notices[0].recipients.sort()).toEqual(['alice', 'bob', 'carol']);
    expect(effects.notices[0].frame).toMatchObject({ op: 'remove', members: ['bob'], by: 'alice' });
    expect(effects.changes[0].members).toEqual(['alice', 'carol']);
  });

  it('refuses a non-admin removing someone else (forbidden) and changes nothing', async () => {
    await change('g-forbid', 'alice', { op: 'create', name: 'T', members: ['bob', 'carol'] });
    expect(await refusedWith(change('g-forbid', 'bob', { op: 'remove', members: ['carol'] }))).toBe(
      'forbidden',
    );
    expect(toGroup((await groups.find('g-forbid'))!).members).toEqual(['alice', 'bob', 'carol']);
  });

  it('lets a member leave; the last admin leaving hands admin to the longest-standing member', async () => {
    await change('g-leave', 'alice', { op: 'create', name: 'T', members: ['bob', 'carol'] });
    const bobLeft = await change('g-leave', 'bob', { op: 'leave' });
    expect(bobLeft.effects.notices[0].frame).toMatchObject({ op: 'leave', members: ['bob'], by: 'bob' });
    expect(bobLeft.effects.notices[0].recipients.sort()).toEqual(['alice', 'bob', 'carol']);
    expect(bobLeft.effects.notices[0].frame).not.toHaveProperty('admins'); // alice is still admin
    const aliceLeft = await change('g-leave', 'alice', { op: 'leave' });
    expect(toGroup(aliceLeft.state!)).toMatchObject({ members: ['carol'], admins: ['carol'] });
    // the members hear who is admin now, without asking
    expect(aliceLeft.effects.notices[0].frame).toMatchObject({
      op: 'leave',
      members: ['alice'],
      admins: ['carol'],
    });
  });

  it('lets a member rename the group', async () => {
    await change('g-rename', 'alice', { op: 'create', name: 'Old', members: ['bob'] });
    const { state, effects } = await change('g-rename', 'bob', { op: 'rename', name: 'New' });
    expect(state!.name).toBe('New');
    expect(state!.updatedAt).toBeGreaterThan(state!.createdAt);
    expect(effects.notices[0].frame).toMatchObject({ op: 'rename', name: 'New', by: 'bob' });
    expect(effects.notices[0].frame).not.toHaveProperty('members');
  });

  it('shows non-members nothing: every op on a group they are not in is not_found', async () => {
    await change('g-private', 'alice', { op: 'create', name: 'T', members: ['bob'] });
    for (const operation of [
      { op: 'add', members: ['mallory'] },
      { op: 'rename', name: 'x' },
      { op: 'leave' },
      { op: 'remove', members: ['bob'] },
    ] as GroupOperation[]) {
      expect(await refusedWith(change('g-private', 'mallory', operation))).toBe('not_found');
    }
    expect(await refusedWith(change('g-missing', 'alice', { op: 'add', members: ['bob'] }))).toBe(
      'not_found',
    );
    expect((await groups.listForMember('mallory', { limit: 200 })).groups.map((g) => g.id)).toEqual([]);
    expect((await groups.listForMember('bob', { limit: 200 })).groups.map((g) => g.id)).toContain(
      'g-private',
    );
  });

  it('enforces the size limit on create and add', async () => {
    expect(
      await refusedWith(change('g-big', 'alice', { op: 'create', name: 'T', members: ['b', 'c', 'd', 'e'] })),
    ).toBe('group_full');
    expect(await groups.find('g-big')).toBeUndefined();
    await change('g-full', 'alice', { op: 'create', name: 'T', members: ['b', 'c'] });
    expect(await refusedWith(change('g-full', 'alice', { op: 'add', members: ['d', 'e'] }))).toBe(
      'group_full',
    );
    expect((await change('g-full', 'alice', { op: 'add', members: ['d'] })).state!.members).toHaveLength(4);
  });

  it('limits the groups one user may be in: a create (for its creator or a member) or an add past it is refused too_many_groups, naming who, and changes nothing', async () => {
    const limited = new GroupService(createSqlGroupStore(db), { maxMembers: 4, maxGroupsPerUser: 2 });
    const limitedChange = (group: string, by: string, operation: GroupOperation) =>
      change(group, by, operation, limited);
    const atLimit = (group: string, who: string) => ({
      code: 'too_many_groups',
      message: `group ${group}: ${who} already in the most groups one user may be in (2)`,
    });
    await limitedChange('lim-1', 'ann', { op: 'create', name: 'T', members: ['ben'] });
    await limitedChange('lim-2', 'ann', { op: 'create', name: 'T', members: [] });
    // ann is in 2: she creates no third group, and is made a member of none
    await expect(
      limitedChange('lim-3', 'ann', { op: 'create', name: 'T', members: ['cat'] }),
    ).rejects.toMatchObject(atLimit('lim-3', 'ann'));
    await expect(
      limitedChange('lim-3', 'cat', { op: 'create', name: 'T', members: ['ben', 'ann'] }),
    ).rejects.toMatchObject(atLimit('lim-3', 'ann'));
    expect(await groups.find('lim-3')).toBeUndefined();
    await limitedChange('lim-3', 'cat', { op: 'create', name: 'T', members: ['ben'] }); // ben: 2 now
    await limitedChange('lim-4', 'cat', { op: 'create', name: 'T', members: [] });
    await expect(
      limitedChange('lim-4', 'cat', { op: 'add', members: ['dan', 'ann', 'ben'] }),
    ).rejects.toMatchObject(atLimit('lim-4', 'ann, ben'));
    expect(toGroup((await groups.find('lim-4'))!).members).toEqual(['cat']);

    // At the limit, what adds no group still goes: a repeated create, a rename, an add of a member.
    expect(
      (await limitedChange('lim-1', 'ann', { op: 'create', name: 'T', members: ['ben'] })).effects.notices,
    ).toEqual([]);
    await limitedChange('lim-1', 'ann', { op: 'rename', name: 'Renamed' });
    await limitedChange('lim-1', 'ann', { op: 'add', members: ['ben'] });
    // A group left is a place free again.
    await limitedChange('lim-2', 'ann', { op: 'leave' });
    await limitedChange('lim-4', 'cat', { op: 'add', members: ['ann'] });
    expect(toGroup((await groups.find('lim-4'))!).members).toEqual(['cat', 'ann']);
    expect((await groups.listForMember('ann', { limit: 200 })).groups.map((g) => g.id)).toEqual([
      'lim-1',
      'lim-4',
    ]);
  });

  it('refuses a pipe op past the groups one user may be in with an error deliverable to its sender, as one past the size limit', async () => {
    const limited = new GroupService(createSqlGroupStore(db), { maxMembers: 4, maxGroupsPerUser: 1 });
    await change('lim-pipe-1', 'eve', { op: 'create', name: 'T', members: ['fay'] }, limited);
    await change('lim-pipe-2', 'gil', { op: 'create', name: 'T', members: [] }, limited);
    const refused = await limited.applyCommand(
      command('gil', { type: 'group', id: 'lp1', op: 'add', group: 'lim-pipe-2', members: ['fay'] }),
    );
    expect(refused).toEqual({
      deliveries: [
        {
          v: 1,
          kind: 'deliver',
          to: 'gil',
          frame: {
            type: 'error',
            mid: '~err:gil:lp1',
            id: 'lp1',
            code: 'too_many_groups',
            message: 'group lim-pipe-2: fay already in the most groups one user may be in (1)',
          },
        },
      ],
      notices: [],
      changes: [],
    });
    expect(toGroup((await groups.find('lim-pipe-2'))!).members).toEqual(['gil']);
  });

  it('refuses a create or add, by REST or over the pipe, that would put a user in a group by someone they blocked; a group they share is kept', async () => {
    const store = createSqlGroupStore(db);
    await change('blk-shared', 'max', { op: 'create', name: 'T', members: ['ana'] });
    await store.block('ana', 'max', 1, 1000); // ana blocked max, after they shared a group
    const cannot = (group: string) => ({ code: 'forbidden', message: `group ${group}: you cannot add ana` });
    await expect(
      change('blk-new', 'max', { op: 'create', name: 'T', members: ['bea', 'ana'] }),
    ).rejects.toMatchObject(cannot('blk-new'));
    expect(await groups.find('blk-new')).toBeUndefined();
    await change('blk-add', 'max', { op: 'create', name: 'T', members: ['bea'] });
    await expect(change('blk-add', 'max', { op: 'add', members: ['ana'] })).rejects.toMatchObject(
      cannot('blk-add'),
    );
    const refused = await groups.applyCommand(
      command('max', { type: 'group', id: 'bk1', op: 'add', group: 'blk-add', members: ['ana'] }),
    );
    expect(refused.deliveries).toEqual([
      expect.objectContaining({
        to: 'max',
        frame: expect.objectContaining({ code: 'forbidden', id: 'bk1' }),
      }),
    ]);
    expect(toGroup((await groups.find('blk-add'))!).members).toEqual(['max', 'bea']);
    // Others may add her; the group ana and max shared stays as it was; an add that adds her to
    // nothing (she is a member already) is no way round the block, and changes nothing.
    await change('blk-add', 'bea', { op: 'add', members: ['ana'] });
    expect(toGroup((await groups.find('blk-add'))!).members).toEqual(['max', 'bea', 'ana']);
    expect(toGroup((await groups.find('blk-shared'))!).members).toEqual(['max', 'ana']);
    expect((await change('blk-shared', 'max', { op: 'add', members: ['ana'] })).effects.notices).toEqual([]);
  });

  it('leaves no count row for a user in no group that a refused pipe op named', async () => {
    const limited = new GroupService(createSqlGroupStore(db), { maxMembers: 4, maxGroupsPerUser: 1 });
    await change('lim-row-1', 'hal', { op: 'create', name: 'T', members: ['ida'] }, limited);
    const refused = await limited.applyCommand(
      command('hal', {
        type: 'group',
        id: 'lr1',
        op: 'create',
        group: 'lim-row-2',
        name: 'T',
        members: ['ida', 'jon'],
      }),
    );
    expect(refused.deliveries[0].frame).toMatchObject({ type: 'error', code: 'too_many_groups' });
    // The refusal is remembered (committed): jon's row, created to lock his count, is not.
    const rows = await db.query(
      "SELECT user_id, groups FROM group_user_counts WHERE user_id IN ('hal', 'ida', 'jon')",
    );
    expect(rows.rows.sort((a, b) => String(a.user_id).localeCompare(String(b.user_id)))).toEqual([
      { user_id: 'hal', groups: 1 },
      { user_id: 'ida', groups: 1 },
    ]);
  });

  it('applies a pipe op once: a replay changes nothing and repeats the same notice', async () => {
    await groups.applyCommand(
      command('alice', {
        type: 'group',
        id: 'c1',
        op: 'create',
        group: 'g-pipe',
        name: 'T',
        members: ['bob'],
      }),
    );
    const add = command('alice', { type: 'group', id: 'c2', op: 'add', group: 'g-pipe', members: ['carol'] });
    const first = await groups.applyCommand(add);
    await change('g-pipe', 'alice', { op: 'remove', members: ['carol'] });
    const replay = await groups.applyCommand(add);
    expect(toGroup((await groups.find('g-pipe'))!).members).toEqual(['alice', 'bob']);
    expect(replay).toEqual(first);
    expect(first.notices[0].frame).toMatchObject({
      mid: '~group:alice:c2',
      op: 'add',
      members: ['carol'],
    });
    const ops = await db.query<{ n: string }>("SELECT count(*) AS n FROM group_ops WHERE mid = 'alice:c2'");
    expect(Number(ops.rows[0].n)).toBe(1);
  });

  it('refuses a pipe op whose id the sender gave an op on another group, and changes neither group', async () => {
    await groups.applyCommand(
      command('alice', {
        type: 'group',
        id: 'twice',
        op: 'create',
        group: 'g-first',
        name: 'A',
        members: [],
      }),
    );
    const refused = await groups.applyCommand(
      command('alice', {
        type: 'group',
        id: 'twice',
        op: 'create',
        group: 'g-second',
        name: 'B',
        members: ['bob'],
      }),
    );
    expect(refused.notices).toEqual([]);
    expect(refused.deliveries).toEqual([
      {
        v: 1,
        kind: 'deliver',
        to: 'alice',
        frame: {
          type: 'error',
          mid: '~err:alice:twice',
          id: 'twice',
          code: 'invalid_frame',
          message: 'id: already used by an op of yours on another group; give each frame an id of its own',
        },
      },
    ]);
    expect(await groups.find('g-second')).toBeUndefined();
    expect(toGroup((await groups.find('g-first'))!).members).toEqual(['alice']);
  });

  it('records a placed pipe op that changes the group as its last piped op; a replay, a no-op, a refusal or a REST change keep it', async () => {
    const lastPiped = async (group: string) =>
      (
        await db.query<Record<string, unknown>>(
          'SELECT pipe_partition, pipe_offset, pipe_index, pipe_at FROM groups WHERE id = $1',
          [group],
        )
      ).rows.map((row) => ({
        partition: row.pipe_partition,
        offset: row.pipe_offset === null ? null : Number(row.pipe_offset),
        index: row.pipe_index,
        placed: row.pipe_at !== null,
      }))[0];
    const create = command('alice', {
      type: 'group',
      id: 'p1',
      op: 'create',
      group: 'g-placed',
      name: 'P',
      members: ['bob'],
    });
    await groups.applyCommand(create); // a router of an earlier release: no place
    expect(await lastPiped('g-placed')).toEqual({
      partition: null,
      offset: null,
      index: null,
      placed: false,
    });

    const add = command('alice', {
      type: 'group',
      id: 'p2',
      op: 'add',
      group: 'g-placed',
      members: ['carol'],
    });
    await groups.applyCommand(add, { partition: 3, offset: 41, index: 2 });
    const recorded = { partition: 3, offset: 41, index: 2, placed: true };
    expect(await lastPiped('g-placed')).toEqual(recorded);

    // Found applied before: its replay at another place (a rebalance) moves nothing.
    await groups.applyCommand(add, { partition: 3, offset: 90, index: 0 });
    // A repeat that changes nothing, and a refused op, are no change either.
    await groups.applyCommand(
      command('alice', { type: 'group', id: 'p3', op: 'add', group: 'g-placed', members: ['carol'] }),
      { partition: 3, offset: 42, index: 0 },
    );
    const refused = await groups.applyCommand(
      command('mallory', { type: 'group', id: 'p4', op: 'rename', group: 'g-placed', name: 'X' }),
      { partition: 3, offset: 43, index: 0 },
    );
    expect(refused.deliveries[0].frame).toMatchObject({ type: 'error' });
    // A REST change has no place in the topic: the group's last piped op stays.
    await change('g-placed', 'alice', { op: 'rename', name: 'Q' });
    expect(await lastPiped('g-placed')).toEqual(recorded);

    await groups.applyCommand(command('bob', { type: 'group', id: 'p5', op: 'leave', group: 'g-placed' }), {
      partition: 3,
      offset: 44,
      index: 0,
    });
    expect(await lastPiped('g-placed')).toEqual({ partition: 3, offset: 44, index: 0, placed: true });
    expect(toGroup((await groups.find('g-placed'))!).members).toEqual(['alice', 'carol']);
  });

  it('stamps a pipe op when it is applied, not when it was sent: an op from a backlog is no stale outbox entry', async () => {
    const at = Date.now();
    const clocked = new GroupService(
      createSqlGroupStore(db),
      { maxMembers: 4, maxGroupsPerUser: 1000 },
      () => at,
    );
    const sentLongAgo = command(
      'alice',
      { type: 'group', id: 'c9', op: 'create', group: 'g-stamp', name: 'T', members: [] },
      at - 60_000,
    );
    const applied = await clocked.applyCommand(sentLongAgo);
    expect(applied.notices[0].frame).toMatchObject({ mid: '~group:alice:c9', at });
    // what the outbox would republish as not published within its grace: not this one, just applied
    expect((await clocked.unpublished(at - 5000, 100)).opMids).not.toContain('alice:c9');
  });

  it("gives a change's notice a time after the group's previous change, even when it was stamped before waiting for the group", async () => {
    // Two changes race for the group's lock: the one stamped first (at 3000, then slowed on its
    // way to the lock) is applied second. Its notice must not read as the earlier change: clients
    // place notices by `at`, and would show the group renamed to "Second" last.
    const stamped = (at: number, operation: GroupOperation) => {
      const mid = `~test:${++seq}`;
      return groups.change({ group: 'g-at', by: 'alice', at, operation }, { opMid: mid, noticeMid: mid });
    };
    await stamped(2000, { op: 'create', name: 'T', members: ['bob'] });
    const applied1st = await stamped(3001, { op: 'rename', name: 'First' });
    const applied2nd = await stamped(3000, { op: 'rename', name: 'Second' });
    const [first, second] = [applied1st, applied2nd].map((o) => o.effects.notices[0].frame.at);
    expect(second).toBeGreaterThan(first);
    expect((await groups.find('g-at'))!.updatedAt).toBe(second);
  });

  it('refuses an invalid pipe op with an error deliverable to the sender only', async () => {
    await groups.applyCommand(
      command('alice', {
        type: 'group',
        id: 'c3',
        op: 'create',
        group: 'g-pipe-err',
        name: 'T',
        members: ['bob'],
      }),
    );
    const refused = await groups.applyCommand(
      command('bob', { type: 'group', id: 'c4', op: 'remove', group: 'g-pipe-err', members: ['alice'] }),
    );
    expect(refused).toEqual({
      deliveries: [
        {
          v: 1,
          kind: 'deliver',
          to: 'bob',
          frame: {
            type: 'error',
            mid: '~err:bob:c4',
            id: 'c4',
            code: 'forbidden',
            message: expect.any(String),
          },
        },
      ],
      notices: [],
      changes: [],
    });
  });

  it('reads a group, and the groups of a member, as of one moment: a change committed meanwhile is not half seen', async () => {
    /** The test database, which commits `meanwhile` once, just after the first read of `groups` outside a transaction. */
    const interleaved = (meanwhile: () => Promise<unknown>): SqlDatabase => {
      let pending: (() => Promise<unknown>) | undefined = meanwhile;
      return {
        ...db,
        transaction: (work) => db.transaction(work),
        async query<R>(sql: string, params?: unknown[]) {
          const result = await db.query<R>(sql, params);
          const now = pending;
          pending = undefined;
          if (now && /\bFROM groups\b/.test(sql)) await now();
          else pending = now;
          return result;
        },
      };
    };
    const readerOf = (meanwhile: () => Promise<unknown>) =>
      new GroupService(createSqlGroupStore(interleaved(meanwhile)), {
        maxMembers: 4,
        maxGroupsPerUser: 1000,
      });

    await change('g-moment', 'alice', { op: 'create', name: 'Before', members: ['bob'] });
    const renamedAndGrown = async () => {
      await change('g-moment', 'alice', { op: 'rename', name: 'After' });
      await change('g-moment', 'alice', { op: 'add', members: ['carol'] });
    };
    const found = toGroup((await readerOf(renamedAndGrown).find('g-moment'))!);
    expect([found.name, found.members]).toEqual(['Before', ['alice', 'bob']]); // not 'Before' with carol

    const bobRemoved = () => change('g-moment', 'alice', { op: 'remove', members: ['bob'] });
    const listed = (await readerOf(bobRemoved).listForMember('bob', { limit: 200 })).groups.map(toGroup);
    // Listed as bob's group while he was in it, with him in it: never a group he is not in.
    expect(listed.filter((g) => g.id === 'g-moment').map((g) => g.members)).toEqual([
      ['alice', 'bob', 'carol'],
    ]);
  });

  it('serializes concurrent changes to one group', async () => {
    await change('g-race', 'alice', { op: 'create', name: 'T', members: [] });
    const adds = ['b', 'c', 'd'].map((user) => change('g-race', 'alice', { op: 'add', members: [user] }));
    await Promise.all(adds);
    expect(toGroup((await groups.find('g-race'))!).members.sort()).toEqual(['alice', 'b', 'c', 'd']);

    // Each add fits the size limit (4) alone, not both: the one decided second sees the first's members.
    await change('g-race-full', 'alice', { op: 'create', name: 'T', members: [] });
    const outcomes = await Promise.allSettled([
      change('g-race-full', 'alice', { op: 'add', members: ['b', 'c'] }),
      change('g-race-full', 'alice', { op: 'add', members: ['d', 'e'] }),
    ]);
    expect(outcomes.map((o) => o.status).sort()).toEqual(['fulfilled', 'rejected']);
    const refused = outcomes.find((o) => o.status === 'rejected') as PromiseRejectedResult;
    expect(refused.reason).toMatchObject({ code: 'group_full' });
    expect(toGroup((await groups.find('g-race-full'))!).members).toHaveLength(3);
  });

  it('holds the groups one user may be in when adds to different groups race for them', async () => {
    const limited = new GroupService(createSqlGroupStore(db), { maxMembers: 4, maxGroupsPerUser: 3 });
    const ids = Array.from({ length: 10 }, (_, i) => `lim-race-${i}`);
    for (const id of ids) await change(id, 'host', { op: 'create', name: 'T', members: [] });
    const outcomes = await Promise.allSettled(
      ids.map((id) => change(id, 'host', { op: 'add', members: ['wanted'] }, limited)),
    );
    const refusals = outcomes.filter((o): o is PromiseRejectedResult => o.status === 'rejected');
    expect(refusals.map((o) => (o.reason as ParleyError).code)).toEqual(Array(7).fill('too_many_groups'));
    expect((await groups.listForMember('wanted', { limit: 200 })).groups).toHaveLength(3);
  });

  it("holds a bounded number of locks however many users a change adds: Postgres's lock table is the whole server's", async () => {
    if (target.name !== 'postgres') return; // PGlite is one session: no other sees its lock table
    const store = createSqlGroupStore(db);
    const group = `lim-locks-${++seq}`;
    const users = Array.from({ length: 1024 }, (_, i) => `locker-${i}`);
    let held = -1;
    await store.apply(group, `~test:${seq}`, async (_current, context) => {
      await context.lockGroupCounts(users);
      held = await locksHeldWith(db, group); // from another connection of the pool
      return null;
    });
    // Postgres sizes the table for max_locks_per_transaction (64 by default) a connection: a lock
    // per user let a few creates of 1,024 members at once fill it ("out of shared memory" for
    // every session of every service on the server).
    expect(held).toBeGreaterThan(0);
    expect(held).toBeLessThanOrEqual(16);
  });

  it('lets changes adding other users go on while a change holds the counts of a thousand', async () => {
    if (target.name !== 'postgres') return; // PGlite is one session: every transaction waits its turn
    const store = createSqlGroupStore(db);
    const crowd = Array.from({ length: 1000 }, (_, i) => `crowd-${i}`);
    const bystanders = Array.from({ length: 20 }, (_, i) => `bystander-${i}`);
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let holding!: () => void;
    const held = new Promise<void>((resolve) => (holding = resolve));
    const big = store.apply(`lim-big-${++seq}`, `~test:${seq}`, async (_current, context) => {
      await context.lockGroupCounts(crowd);
      holding();
      await released;
      return null;
    });
    await held;
    try {
      // Each bystander's add completes while the big change holds its users: none shares a lock with it.
      const adds = bystanders.map((user, i) =>
        change(`lim-by-${i}`, user, { op: 'create', name: 'T', members: [] }),
      );
      const outcome = await Promise.race([
        Promise.all(adds).then(() => 'done'),
        new Promise((resolve) => setTimeout(resolve, 3000, 'waited for the big change')),
      ]);
      expect(outcome).toBe('done');
    } finally {
      release();
      await big;
    }
  });

  it("keeps each user's group count equal to the groups the user is in, through creates, adds, removes, leaves and purges", async () => {
    const users = ['cnt-a', 'cnt-b', 'cnt-c', 'cnt-d'];
    await change('cnt-1', 'cnt-a', { op: 'create', name: 'T', members: ['cnt-b', 'cnt-c'] });
    await change('cnt-2', 'cnt-b', { op: 'create', name: 'T', members: ['cnt-a'] });
    await change('cnt-2', 'cnt-a', { op: 'add', members: ['cnt-c', 'cnt-d'] });
    await change('cnt-1', 'cnt-a', { op: 'remove', members: ['cnt-c'] });
    await change('cnt-2', 'cnt-d', { op: 'leave' });
    await change('cnt-3', 'cnt-d', { op: 'create', name: 'T', members: [] });
    await change('cnt-3', 'cnt-d', { op: 'leave' }); // cnt-3 is left without members
    expect(await countsOf(db, users)).toEqual({ 'cnt-a': 2, 'cnt-b': 2, 'cnt-c': 1, 'cnt-d': 0 });
    expect(await countsOf(db, users)).toEqual(await membershipsOf(db, users));
    // A user in no group keeps no row (an erased user's id is not left behind).
    expect((await db.query("SELECT user_id FROM group_user_counts WHERE user_id = 'cnt-d'")).rows).toEqual(
      [],
    );
    await createSqlGroupStore(db).forgetEmptyGroupsBefore(Date.now() + 1);
    expect(await countsOf(db, users)).toEqual({ 'cnt-a': 2, 'cnt-b': 2, 'cnt-c': 1, 'cnt-d': 0 });
    // Written by a session whose search_path does not name the tables' schema (an operator's).
    const schema = (await db.query<{ s: string }>('SELECT current_schema() AS s')).rows[0]!.s;
    await db.transaction(async (tx) => {
      await tx.query('SET LOCAL search_path TO pg_catalog');
      await tx.query(`DELETE FROM ${schema}.group_members WHERE group_id = 'cnt-1' AND user_id = 'cnt-b'`);
    });
    expect(await countsOf(db, users)).toEqual({ 'cnt-a': 2, 'cnt-b': 1, 'cnt-c': 1, 'cnt-d': 0 });
  });

  it('adds the same users to different groups at once, named in any order, without a deadlock', async () => {
    const crowd = ['p1', 'p2', 'p3', 'p4', 'p5', 'p6', 'p7'];
    const rotated = (i: number) => [...crowd.slice(i % crowd.length), ...crowd.slice(0, i % crowd.length)];
    const roomy = new GroupService(createSqlGroupStore(db), { maxMembers: 8, maxGroupsPerUser: 1000 });
    const creates = Array.from({ length: 16 }, (_, i) => {
      const members = i % 2 ? rotated(i).reverse() : rotated(i);
      return change(`lim-mix-${i}`, `mixer-${i}`, { op: 'create', name: 'T', members }, roomy);
    });
    expect((await Promise.allSettled(creates)).filter((o) => o.status === 'rejected')).toEqual([]);
    expect((await groups.listForMember('p1', { limit: 200 })).groups).toHaveLength(16);
  });
});

/** The locks held by the transaction that holds `group`'s advisory lock (namespace 7104), of any kind. */
async function locksHeldWith(db: SqlDatabase, group: string): Promise<number> {
  const { rows } = await db.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM pg_locks l
     WHERE l.granted AND l.pid = (SELECT g.pid FROM pg_locks g
         WHERE g.locktype = 'advisory' AND g.classid = 7104 AND g.objsubid = 2 AND g.granted
           AND g.objid::bigint = (hashtext($1)::bigint & 4294967295))`,
    [group],
  );
  return rows[0]!.n;
}

/** group_user_counts' rows for `users` (0 for a user without one). */
const countsOf = (db: SqlDatabase, users: string[]) =>
  perUser(db, users, 'SELECT user_id, groups FROM group_user_counts WHERE user_id = ANY($1::text[])');

/** The groups each of `users` is in, counted from group_members. */
const membershipsOf = (db: SqlDatabase, users: string[]) =>
  perUser(
    db,
    users,
    'SELECT user_id, count(*)::int AS groups FROM group_members WHERE user_id = ANY($1::text[]) GROUP BY user_id',
  );

async function perUser(db: SqlDatabase, users: string[], sql: string): Promise<Record<string, number>> {
  const { rows } = await db.query<{ user_id: string; groups: number }>(sql, [users]);
  return Object.fromEntries(users.map((user) => [user, rows.find((r) => r.user_id === user)?.groups ?? 0]));
}
