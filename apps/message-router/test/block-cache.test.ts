import { blockKey, BlockPair, cacheBlocks } from '../src/blocks';
import { MemoryBlocks } from './support/memory-blocks';

const to = (recipient: string, sender = 'mallory'): BlockPair => ({ recipient, sender });

function cached(blocks: MemoryBlocks, options: { maxEntries?: number } = {}) {
  const clock = { now: 1_000_000 };
  const lookup = cacheBlocks(blocks, {
    pollMs: 1000,
    maxEntries: options.maxEntries ?? 100,
    clock: () => clock.now,
  });
  return { lookup, clock };
}

describe('cacheBlocks', () => {
  it('keeps at most maxEntries, one a recipient and one a user they blocked: past it, those kept longest are asked about again', async () => {
    const blocks = new MemoryBlocks();
    blocks.block('b', 'x');
    blocks.block('b', 'y');
    const { lookup } = cached(blocks, { maxEntries: 4 });
    await lookup([to('a'), to('b')]); // a 1, b 3
    await lookup([to('a'), to('b'), to('c')]); // c in, a out
    await lookup([to('b'), to('c')]);
    await lookup([to('a')]); // a in, b out (its three)
    await lookup([to('c'), to('a'), to('b')]); // b in (3), c out
    expect(blocks.lookups).toEqual([['a', 'b'], ['c'], ['a'], ['b']]);
  });

  it('checks a recipient it kept though keeping the new recipients of the batch pushes them out', async () => {
    const blocks = new MemoryBlocks();
    blocks.block('bob', 'mallory');
    const { lookup } = cached(blocks, { maxEntries: 2 });
    expect(await lookup([to('bob')])).toEqual(new Set([blockKey('bob', 'mallory')]));
    // bob is kept; carol is read, and keeping her forgets bob: the batch still holds bob's block.
    expect(await lookup([to('bob'), to('carol')])).toEqual(new Set([blockKey('bob', 'mallory')]));
    expect(blocks.lookups).toEqual([['bob'], ['carol']]);
  });

  it('checks a recipient it kept though a read of the changes forgets them while the batch reads others', async () => {
    const blocks = new MemoryBlocks();
    blocks.block('bob', 'mallory');
    const { lookup, clock } = cached(blocks);
    await lookup([to('bob')]);
    let release = () => {};
    const blocksOf = blocks.blocksOf.bind(blocks);
    blocks.blocksOf = async (users) => {
      const answer = await blocksOf(users);
      await new Promise<void>((resolve) => (release = resolve));
      return answer;
    };
    blocks.block('bob', 'eve'); // bob still blocks mallory
    clock.now += 1000; // this batch starts a read of the changes in the background
    const batch = lookup([to('bob'), to('carol')]);
    while (blocks.changeReads < 2) await new Promise((resolve) => setImmediate(resolve));
    await new Promise((resolve) => setImmediate(resolve)); // the read forgot bob
    release();
    expect(await batch).toEqual(new Set([blockKey('bob', 'mallory')]));
  });

  it('keeps nothing from a lookup that a read of the changes overtook: its answer may be older than the change', async () => {
    const blocks = new MemoryBlocks();
    let release = () => {};
    let gated = false;
    const blocksOf = blocks.blocksOf.bind(blocks);
    // bob's blocks are read (nobody) before his block, and answered after the change is read.
    blocks.blocksOf = async (users) => {
      const answer = await blocksOf(users);
      if (gated) await new Promise<void>((resolve) => (release = resolve));
      return answer;
    };
    const { lookup, clock } = cached(blocks);
    gated = true;
    const first = lookup([to('bob')]);
    await new Promise((resolve) => setImmediate(resolve));
    gated = false;
    blocks.block('bob', 'mallory');
    clock.now += 2001;
    await lookup([to('carol')]); // reads the changes first: bob's block
    release();
    expect(await first).toEqual(new Set()); // that batch went on the older answer
    expect(await lookup([to('bob')])).toEqual(new Set([blockKey('bob', 'mallory')]));
    expect(blocks.lookups).toEqual([['bob'], ['carol'], ['bob']]);
  });

  it('does not go on, nor wait for, a read of the changes that started more than a poll before the batch: one that hung answers as of its start', async () => {
    const blocks = new MemoryBlocks();
    const { lookup, clock } = cached(blocks);
    await lookup([to('bob')]);
    // The next read answers as of when it started (a snapshot), but only when released.
    let release = () => {};
    let gated = true;
    const changesSince = blocks.changesSince.bind(blocks);
    blocks.changesSince = async (since, limit) => {
      const gate = gated;
      const answer = await changesSince(since, limit);
      if (gate) await new Promise<void>((resolve) => (release = resolve));
      return answer;
    };
    clock.now += 1000; // this batch starts that read in the background
    await lookup([to('bob')]);
    gated = false;
    blocks.block('bob', 'mallory');
    clock.now += 10_000; // the read still under way; bob's block answered 10 s ago
    const batch = lookup([to('bob')]);
    const late = new Promise((resolve) => setTimeout(() => resolve('no answer'), 100));
    expect(await Promise.race([batch, late])).toEqual(new Set([blockKey('bob', 'mallory')]));
    release(); // the old read answers at last, as of its start: it undoes nothing
    await new Promise((resolve) => setImmediate(resolve));
    clock.now += 500;
    expect(await lookup([to('bob')])).toEqual(new Set([blockKey('bob', 'mallory')]));
    expect(blocks.changeReads).toBe(3);
  });

  it('forgets every changed user, however many changed since the last read', async () => {
    const blocks = new MemoryBlocks();
    const { lookup, clock } = cached(blocks, { maxEntries: 5000 });
    const users = Array.from({ length: 2500 }, (_, i) => `u${i}`);
    await lookup(users.map((user) => to(user)));
    for (const user of users) blocks.block(user, 'mallory');
    clock.now += 2001;
    expect((await lookup(users.map((user) => to(user)))).size).toBe(2500);
    expect(blocks.lookups.map((asked) => asked.length)).toEqual([2500, 2500]);
  });

  it('fails a lookup when the changes cannot be read and were last read longer than two polls ago', async () => {
    const blocks = new MemoryBlocks();
    const { lookup, clock } = cached(blocks);
    await lookup([to('bob')]);
    blocks.failWith = new Error('connect ECONNREFUSED 127.0.0.1:5432');
    clock.now += 1000; // the read in the background fails; the batch goes on what is kept
    expect(await lookup([to('bob')])).toEqual(new Set());
    clock.now += 1001;
    await expect(lookup([to('bob')])).rejects.toThrow('ECONNREFUSED');
    blocks.failWith = undefined;
    expect(await lookup([to('bob')])).toEqual(new Set());
    expect(blocks.lookups).toEqual([['bob']]); // the changes read at last: none, bob still kept
  });

  it('starts again from nothing when the changes were not read for ten minutes (group-ms may have forgotten some)', async () => {
    const blocks = new MemoryBlocks();
    const { lookup, clock } = cached(blocks);
    await lookup([to('bob')]);
    clock.now += 10 * 60_000 + 1;
    await lookup([to('bob')]);
    expect(blocks.lookups).toEqual([['bob'], ['bob']]);
  });

  it('reads a recipient again ten minutes after it was read, though no change was recorded (a hand edit, a restored database)', async () => {
    const blocks = new MemoryBlocks();
    const { lookup, clock } = cached(blocks);
    await lookup([to('bob')]);
    for (let minute = 1; minute < 10; minute++) {
      clock.now += 60_000;
      await lookup([to('bob')]);
    }
    expect(blocks.lookups).toEqual([['bob']]);
    clock.now += 60_000;
    await lookup([to('bob')]);
    expect(blocks.lookups).toEqual([['bob'], ['bob']]);
  });
});
