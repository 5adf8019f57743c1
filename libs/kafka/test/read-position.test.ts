import { ReadPosition, STALE_FETCHER_MS } from '../src';

describe('ReadPosition', () => {
  let now = 1_000_000;
  const clock = () => now;
  beforeEach(() => {
    now = 1_000_000;
  });
  /** A position whose broker 1 has completed one fetch cycle that started at 1_000_000. */
  /** A fetch from broker `node` that gets its answer. */
  const fetched = (position: ReadPosition, node = 1) => {
    position.fetchStarted(node);
    position.fetchAnswered();
  };
  const afterOneCycle = () => {
    const position = new ReadPosition(clock);
    fetched(position);
    now += 10;
    fetched(position);
    return position;
  };

  test('a member that has not fetched yet has read nothing it can vouch for; one that fetches nothing is current', () => {
    const position = new ReadPosition(clock);
    expect(position.upTo()).toBe(now); // no partitions, no fetcher
    fetched(position);
    expect(position.upTo()).toBe(0);
    now += 100;
    fetched(position); // the first fetch returned nothing to handle
    now += 100;
    expect(position.upTo()).toBe(1_000_000);
  });

  test('a fetch vouches for what was written before it started only once its batches are handled', () => {
    const position = afterOneCycle(); // fetch 2 starts at 1_000_010 ...
    now += 5;
    position.batchStarted(0, 1_000_012); // ... and returns a record written at 1_000_012
    now += 5000; // a long handler
    expect(position.upTo()).toBe(1_000_000);
    position.chunkHandled(0, 1_000_012, undefined, false); // the batch ended at the watermark fetch 2 saw
    position.batchEnded(0);
    // Records written while it ran are not vouched for until the next fetch starts.
    expect(position.upTo()).toBe(1_000_000);
    fetched(position);
    expect(position.upTo()).toBe(1_000_010);
  });

  test('a partition with more to read holds the position at its first unhandled record', () => {
    const position = afterOneCycle();
    position.batchStarted(3, 500);
    position.chunkHandled(3, 600, 700, true); // the batch's next record was written at 700
    now += 10;
    fetched(position);
    expect(position.upTo()).toBe(699);
    position.chunkHandled(3, 900, undefined, true); // the batch ended, the partition holds more
    position.batchEnded(3);
    expect(position.upTo()).toBe(900);
    position.batchStarted(3, 950);
    position.chunkHandled(3, 990, undefined, false);
    position.batchEnded(3);
    expect(position.upTo()).toBe(1_000_010);
  });

  test('a rebalance: fetches from before it vouch for nothing; a running batch of a kept partition still counts, a lost partition stops counting', () => {
    const position = new ReadPosition(clock);
    position.joined([0, 1, 2]);
    fetched(position);
    now += 10;
    fetched(position);
    position.batchStarted(0, 500); // still running through the rebalance
    position.batchStarted(1, 600); // still running, but partition 1 moves to another member
    now += 10;
    position.joined([0, 2]); // nothing gained: what the cycle before vouched for still stands
    expect(position.upTo()).toBe(500 - 1);
    position.chunkHandled(1, 650, undefined, true); // the old batch finishes after the rebalance
    position.batchEnded(1);
    position.chunkHandled(0, 550, undefined, false);
    position.batchEnded(0);
    expect(position.upTo()).toBe(1_000_000); // the cycle before the rebalance still stands...
    now += 10;
    fetched(position); // ...but the fetch that was running at the rebalance vouches for nothing
    expect(position.upTo()).toBe(0);
    now += 10;
    fetched(position);
    expect(position.upTo()).toBe(1_000_030);
  });

  test('a pause holds the position, and fetches made while paused vouch for nothing after it', () => {
    const position = afterOneCycle();
    now += 10;
    position.paused();
    now += 1000;
    fetched(position); // empty: nothing is requested while paused
    expect(position.upTo()).toBeLessThanOrEqual(1_000_020);
    now += 1000;
    position.resumed();
    fetched(position); // the first fetch after the pause
    expect(position.upTo()).toBe(0);
    now += 10;
    fetched(position);
    expect(position.upTo()).toBe(1_002_020);
  });

  test('a fetcher that went quiet stops counting; when all have, the last position is held', () => {
    const position = afterOneCycle();
    fetched(position, 2);
    now += 10;
    fetched(position, 2);
    expect(position.upTo()).toBe(1_000_000); // the slower broker sets the pace
    now += STALE_FETCHER_MS - 20;
    fetched(position, 2);
    expect(position.upTo()).toBe(1_000_000); // broker 1 is still live
    now += 30;
    expect(position.upTo()).toBe(1_000_020); // broker 1 went quiet: broker 2 alone
    now += STALE_FETCHER_MS;
    expect(position.upTo()).toBe(1_000_020); // both quiet (the consumer stopped): held
  });

  test('a fetcher is not taken for gone while a batch is still being handled', () => {
    const position = afterOneCycle();
    position.batchStarted(0, 1_000_005);
    now += STALE_FETCHER_MS * 2;
    expect(position.upTo()).toBe(1_000_000);
  });

  test('a fetch that got no answer (the broker is unreachable) vouches for nothing', () => {
    const position = afterOneCycle();
    now += 10;
    position.fetchStarted(1); // fails: kafkajs reports it as empty
    now += 10;
    position.fetchStarted(1); // fails again
    now += 10;
    position.fetchStarted(1);
    expect(position.upTo()).toBe(1_000_010); // still what the last answered fetch vouched for
    position.fetchAnswered();
    now += 10;
    fetched(position);
    expect(position.upTo()).toBe(1_000_040);
  });

  test('a member assigned no partition is current, though kafkajs never sends it a Fetch answer', () => {
    const position = new ReadPosition(clock);
    position.joined([]); // more members than partitions, or a surge pod in a rollout
    position.fetchStarted(1); // kafkajs starts fetch cycles, finds nothing to request, and sleeps
    now += 250;
    position.fetchStarted(1);
    expect(position.upTo()).toBe(now);
    position.joined([0]); // given a partition: conservative again until a fetch vouches for it
    expect(position.upTo()).toBe(0);
  });

  test('a partition gained in a rebalance is not vouched for by fetches from before it', () => {
    const position = new ReadPosition(clock);
    position.joined([0]);
    fetched(position);
    now += 10;
    fetched(position);
    expect(position.upTo()).toBe(1_000_000);
    now += 10;
    position.joined([0, 1]); // partition 1 comes from a member that was behind on it
    expect(position.upTo()).toBe(0);
    fetched(position);
    now += 10;
    fetched(position);
    expect(position.upTo()).toBe(1_000_020);
  });
});
