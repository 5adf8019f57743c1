import pino from 'pino';
import { GroupCoordinator } from '../src/broker/group/coordinator';
import { ErrorCode } from '../src/broker/protocol/errors';

const logger = pino({ level: 'silent' });
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('group coordinator', () => {
  let groups: GroupCoordinator;
  beforeEach(() => {
    groups = new GroupCoordinator({ minSessionTimeoutMs: 10, maxSessionTimeoutMs: 60_000 }, logger);
  });
  afterEach(() => groups.close());

  const join = (memberId: string, clientId: string, sessionTimeout: number, metadata = Buffer.alloc(0)) =>
    groups.join({
      groupId: 'g',
      memberId,
      clientId,
      clientHost: '/test',
      sessionTimeout,
      rebalanceTimeout: 5000,
      protocolType: 'consumer',
      protocols: [{ name: 'range', metadata }],
    });
  const members = () => groups.describe('g').members.map((m) => m.memberId);

  test('a follower waiting in SyncGroup outlives its session timeout; its session restarts from the answer, and ends if it stays silent', async () => {
    const first = await join('', 'leader', 5000);
    // The follower's join starts a rebalance, which the leader joins again.
    const [follower, leader] = await Promise.all([
      join('', 'follower', 300),
      join(first.memberId, 'leader', 5000),
    ]);
    expect(leader.leaderId).toBe(leader.memberId);
    const waiting = groups.sync('g', follower.generationId, follower.memberId, []);
    await sleep(600); // the leader assigns slowly: past the follower's session
    const assignment = Buffer.from('partition 1');
    const leaderSync = await groups.sync('g', leader.generationId, leader.memberId, [
      { memberId: leader.memberId, assignment: Buffer.from('partition 0') },
      { memberId: follower.memberId, assignment },
    ]);
    expect(leaderSync.errorCode).toBe(ErrorCode.NONE);
    expect(await waiting).toEqual({ errorCode: ErrorCode.NONE, assignment });
    await sleep(100);
    expect(members()).toEqual([leader.memberId, follower.memberId]);
    // Its process died as it got its assignment: no heartbeat ever comes, and it is evicted.
    await sleep(600);
    expect(members()).toEqual([leader.memberId]);
    expect(groups.heartbeat('g', leader.generationId, leader.memberId)).toBe(ErrorCode.REBALANCE_IN_PROGRESS);
  });

  test("a follower's rejoin with unchanged metadata in a Stable group is answered at once with the current generation; a leader's or a changed one's starts a rebalance", async () => {
    const first = await join('', 'leader', 5000);
    const [follower, leader] = await Promise.all([
      join('', 'follower', 5000),
      join(first.memberId, 'leader', 5000),
    ]);
    await Promise.all([
      groups.sync('g', leader.generationId, leader.memberId, []),
      groups.sync('g', follower.generationId, follower.memberId, []),
    ]);
    expect(groups.describe('g').state).toBe('Stable');

    const again = await join(follower.memberId, 'follower', 5000);
    expect(again).toMatchObject({
      errorCode: ErrorCode.NONE,
      generationId: follower.generationId,
      leaderId: leader.memberId,
      members: [],
    });
    expect(groups.describe('g').state).toBe('Stable');
    expect(groups.heartbeat('g', leader.generationId, leader.memberId)).toBe(ErrorCode.NONE);

    const changed = join(follower.memberId, 'follower', 5000, Buffer.from('another topic'));
    expect(groups.describe('g').state).toBe('PreparingRebalance');
    const rejoined = await Promise.all([changed, join(leader.memberId, 'leader', 5000)]);
    expect(rejoined.map((r) => r.generationId)).toEqual([leader.generationId + 1, leader.generationId + 1]);
    await groups.sync('g', leader.generationId + 1, leader.memberId, []);
    expect(groups.describe('g').state).toBe('Stable');

    const leaderAgain = join(leader.memberId, 'leader', 5000);
    expect(groups.describe('g').state).toBe('PreparingRebalance');
    await Promise.all([leaderAgain, join(follower.memberId, 'follower', 5000, Buffer.from('another topic'))]);
  });
});
