import pino from 'pino';
import { startBroker, type Broker } from '../src/broker';
import { ApiKey } from '../src/broker/protocol/api';
import { ErrorCode } from '../src/broker/protocol/errors';
import {
  committedOffset,
  errorCodeOf,
  fetchRequest,
  joinAnswer,
  joinGroupV0,
  metadataV4,
  offsetCommitError,
  offsetCommitV2,
  offsetFetchV1,
  RawClient,
  syncGroupV0,
} from './support/raw-client';

const logger = pino({ level: 'silent' });
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('a connection to the embedded broker, as one to Kafka', () => {
  let broker: Broker;
  const clients: RawClient[] = [];
  beforeEach(async () => {
    broker = await startBroker({ logger });
  });
  afterEach(async () => {
    for (const client of clients.splice(0)) client.close();
    await broker.stop();
  });
  const connect = async () => {
    const client = await RawClient.connect(broker.address);
    clients.push(client);
    return client;
  };
  const committed = async (client: RawClient, groupId: string, topic: string) =>
    committedOffset(await client.request(ApiKey.OffsetFetch, 1, offsetFetchV1(groupId, topic, 0)));

  test("a request sent behind a long-polling Fetch is handled only once the fetch is answered; another connection's meanwhile", async () => {
    const [reader, other] = [await connect(), await connect()];
    await reader.request(ApiKey.Metadata, 4, metadataV4('held'));
    const sentAt = performance.now();
    const fetched = reader
      .request(ApiKey.Fetch, 4, fetchRequest('held', { maxWaitMs: 800, minBytes: 1 }))
      .then(() => performance.now() - sentAt);
    const commit = offsetCommitV2('g', -1, '', { topic: 'held', partition: 0, offset: 5 });
    const commitAnswer = reader.request(ApiKey.OffsetCommit, 2, commit);
    await sleep(200);
    expect(await committed(other, 'g', 'held')).toBe(-1); // the commit waits behind the fetch
    expect(await fetched).toBeGreaterThanOrEqual(750); // its whole maxWait: nothing came
    expect(offsetCommitError(await commitAnswer)).toBe(ErrorCode.NONE);
    expect(await committed(other, 'g', 'held')).toBe(5);
  });

  test('an OffsetCommit sent behind a JoinGroup waiting in the rebalance is checked against the generation that join ends in', async () => {
    const [a, b] = [await connect(), await connect()];
    await a.request(ApiKey.Metadata, 4, metadataV4('joined'));
    const join = async (client: RawClient, memberId: string) =>
      joinAnswer(await client.request(ApiKey.JoinGroup, 0, joinGroupV0('g', memberId, 10_000)));
    const sync = async (client: RawClient, generation: number, memberId: string) =>
      errorCodeOf(await client.request(ApiKey.SyncGroup, 0, syncGroupV0('g', generation, memberId)));
    // A leads, B follows, both in a Stable group.
    const leader = await join(a, '');
    expect(await sync(a, leader.generation, leader.memberId)).toBe(ErrorCode.NONE);
    const followerJoin = join(b, '');
    await sleep(50); // B waits in the barrier for A's rejoin
    const { generation } = await join(a, leader.memberId);
    const follower = await followerJoin;
    expect(await sync(a, generation, leader.memberId)).toBe(ErrorCode.NONE);
    expect(await sync(b, generation, follower.memberId)).toBe(ErrorCode.NONE);

    // The leader rejoins (a rebalance that waits for B) and commits right behind on its connection,
    // still as a member of the generation it had: Kafka handles the commit after the join is answered.
    const rejoin = join(a, leader.memberId);
    const commit = offsetCommitV2('g', generation, leader.memberId, {
      topic: 'joined',
      partition: 0,
      offset: 7,
    });
    const commitAnswer = a.request(ApiKey.OffsetCommit, 2, commit);
    await sleep(200);
    expect((await join(b, follower.memberId)).generation).toBe(generation + 1);
    expect((await rejoin).generation).toBe(generation + 1);
    expect(offsetCommitError(await commitAnswer)).toBe(ErrorCode.ILLEGAL_GENERATION);
    expect(await committed(b, 'g', 'joined')).toBe(-1);
  });
});
