import { GroupCommandEvent } from '@parley/contracts';
import { migrate, SqlDatabase } from '@parley/postgres';
import { testDatabases } from '@parley/postgres/testing';
import { createSqlMembershipReader } from '../src/sql-membership';
// The router reads group-ms's tables: test against group-ms's own schema and store, not a copy.
import { GROUP_MIGRATIONS } from '../../group-ms/src/migrations';
import { createSqlGroupStore } from '../../group-ms/src/sql-group-store';
import { GroupService } from '../../group-ms/src/group-service';

describe.each(testDatabases())('SQL membership reader on $name', (target) => {
  let db: SqlDatabase;
  beforeAll(async () => {
    db = await target.open();
    await migrate(db, 'group-ms', GROUP_MIGRATIONS);
  });
  afterAll(() => target.dispose());

  it('reads the members group-ms wrote, in join order, and nothing for unknown groups', async () => {
    const groups = new GroupService(createSqlGroupStore(db), { maxMembers: 1024, maxGroupsPerUser: 1000 });
    await groups.change(
      { group: 'g1', by: 'alice', at: 1, operation: { op: 'create', name: 'T', members: ['carol', 'bob'] } },
      { opMid: 'm1', noticeMid: 'm1' },
    );
    await groups.change(
      { group: 'g1', by: 'alice', at: 2, operation: { op: 'remove', members: ['carol'] } },
      { opMid: 'm2', noticeMid: 'm2' },
    );
    const reader = createSqlMembershipReader(db);
    const g1 = await reader.membersOf('g1');
    expect(g1.members).toEqual(['alice', 'bob']);
    expect([g1.has('bob'), g1.has('carol')]).toEqual([true, false]);
    expect((await reader.membersOf('nope')).members).toEqual([]);
  });

  it('reads a version with the members that grows with every change, and versions in one read', async () => {
    const groups = new GroupService(createSqlGroupStore(db), { maxMembers: 1024, maxGroupsPerUser: 1000 });
    const reader = createSqlMembershipReader(db);
    await groups.change(
      { group: 'v1', by: 'alice', at: 1, operation: { op: 'create', name: 'V', members: ['bob'] } },
      { opMid: 'v-m1', noticeMid: 'v-m1' },
    );
    const before = await reader.membersOf('v1');
    await groups.change(
      { group: 'v1', by: 'alice', at: 2, operation: { op: 'add', members: ['carol'] } },
      { opMid: 'v-m2', noticeMid: 'v-m2' },
    );
    const versions = await reader.versionsOf(['v1', 'nope']);
    expect([...versions.keys()]).toEqual(['v1']);
    expect(versions.get('v1')).toBeGreaterThan(before.version!);
    expect(await reader.membersOf('v1')).toMatchObject({
      members: ['alice', 'bob', 'carol'],
      version: versions.get('v1'),
    });
    expect((await reader.membersOf('nope')).version).toBeUndefined();
  });

  it("reads the group's last op from the group topic with the members: its place, and when it was applied", async () => {
    const groups = new GroupService(
      createSqlGroupStore(db),
      { maxMembers: 1024, maxGroupsPerUser: 1000 },
      () => 5000,
    );
    const reader = createSqlMembershipReader(db);
    const op = (id: string, frame: Record<string, unknown>) => ({
      v: 1 as const,
      kind: 'group-command' as const,
      from: 'alice',
      sentAt: 1,
      frame: { type: 'group', id, group: 'p1', ...frame } as GroupCommandEvent['frame'],
    });
    await groups.applyCommand(op('c', { op: 'create', name: 'P', members: ['bob'] }));
    expect((await reader.membersOf('p1')).lastOp).toBeUndefined(); // applied with no place
    await groups.applyCommand(op('a', { op: 'add', members: ['carol'] }), {
      partition: 2,
      offset: 7,
      index: 1,
    });
    // The clock stands at 5000, where the create was applied: a change goes past its group's last one.
    expect(await reader.membersOf('p1')).toMatchObject({
      members: ['alice', 'bob', 'carol'],
      lastOp: { partition: 2, offset: 7, index: 1, at: 5001 },
    });
  });
});
