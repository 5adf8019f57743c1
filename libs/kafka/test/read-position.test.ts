import { ReadPosition, STALE_FETCHER_MS } from '../src';

describe('ReadPosition', () => {
  let now = 1_000_000;
  const clock = () => now;
  beforeEach(() => {
    now = 1_000_000;
  });

  test('a member that has not fetched yet has read nothing it can vouch for; one that fetches nothing is current', () => {
    const position = new ReadPosition(clock);
    expect(position.upTo()).toBe(now); // no partitions, no fetcher
    position.fetchStarted(1);
    expect(position.upTo()).toBe(0);
    now += 100;
    position.fetchStarted(1); // the first fetch returned nothing to handle
    now += 100;
    expect(position.upTo()).toBe(1_000_000);
  });

  test('a fetch vouches for what was written before it started only once its batches are handled', () => {
    const position = new ReadPosition(clock);
    position.fetchStarted(1);
    now += 10;
    position.fetchStarted(1); // fetch 2 starts at 1_000_010 ...
    now += 5;
    position.batchStarted(0, 1_000_012); // ... and returns a record written at 1_000_012
    now += 5000; // a long handler
    expect(position.upTo()).toBe(1_000_000);
    position.chunkHandled(0, 1_000_012, undefined, false); // the batch ended at the watermark seen by fetch 2
    // Records written while it ran are not vouched for until the next fetch starts.
    expect(position.upTo()).toBe(1_000_000);
    position.fetchStarted(1);
    expect(position.upTo()).toBe(1_000_010);
  });

  test('a partition with more to read holds the position at its first unhandled record', () => {
    const position = new ReadPosition(clock);
    position.fetchStarted(1);
    now += 10;
    position.fetchStarted(1);
    position.batchStarted(3, 500);
    position.chunkHandled(3, 600, 700, true); // the batch's next record was written at 700
    now += 10;
    position.fetchStarted(1);
    expect(position.upTo()).toBe(699);
    position.chunkHandled(3, 900, undefined, true); // the batch ended, the partition holds more
    expect(position.upTo()).toBe(900);
    position.batchStarted(3, 950);
    position.chunkHandled(3, 990, undefined, false);
    expect(position.upTo()).toBe(1_000_010);
  });

  test('a rebalance forgets everything; pausing holds the position until resumed', () => {
    const position = new ReadPosition(clock);
    position.fetchStarted(1);
    position.fetchStarted(1);
    position.batchStarted(0, 10);
    position.joined();
    expect(position.upTo()).toBe(now);
    position.paused();
    now += 1000;
    expect(position.upTo()).toBe(1_000_000);
    position.resumed();
    expect(position.upTo()).toBe(1_001_000);
  });

  test('a fetcher that stopped fetching (its broker lost leadership) stops counting', () => {
    const position = new ReadPosition(clock);
    position.fetchStarted(1);
    position.fetchStarted(1);
    position.fetchStarted(2);
    now += STALE_FETCHER_MS - 1;
    position.fetchStarted(2);
    expect(position.upTo()).toBe(1_000_000);
    now += 2;
    position.fetchStarted(2);
    expect(position.upTo()).toBe(now - 2);
  });
});
