import type { DeliveredMessage } from '@parley/contracts';
import { createCoalescer } from '../src/coalescer';
import { buildNotification, collapseIdOf, MessageSummary, summarize } from '../src/notification';

const msg = (
  from: string,
  id: string,
  body: unknown = { text: `hello ${id}` },
  chat: 'direct' | 'group' = 'direct',
  to = 'bob',
): DeliveredMessage => ({
  type: 'message',
  mid: `${from}:${id}`,
  id,
  from,
  to,
  chat,
  body,
  sentAt: 1,
});

describe('notification text', () => {
  const hidden = (...frames: DeliveredMessage[]) => buildNotification(frames.map((f) => summarize(f, false)));
  const shown = (...frames: DeliveredMessage[]) => buildNotification(frames.map((f) => summarize(f, true)));

  it('counts and names senders without message content by default', () => {
    expect(hidden(msg('alice', '1'))).toEqual({
      title: 'alice',
      body: 'New message from alice',
      data: { kind: 'parley.messages', count: '1', senders: 'alice', mid: 'alice:1' },
      collapseId: 'alice:1',
    });
    expect(hidden(msg('alice', '1'), msg('alice', '2'), msg('alice', '3')).body).toBe(
      '3 new messages from alice',
    );
    expect(hidden(msg('alice', '1'), msg('bob', '2'))).toMatchObject({
      title: 'Parley',
      body: '2 new messages from alice and bob',
    });
    expect(hidden(msg('a', '1'), msg('b', '2'), msg('c', '3')).body).toBe(
      '3 new messages from a and 2 others',
    );
    expect(hidden(msg('alice', '1', 'x', 'group', 'team'), msg('bob', '2', 'y', 'group', 'team')).body).toBe(
      '2 new messages from alice and bob in team',
    );
    expect(JSON.stringify(hidden(msg('alice', '1', { text: 'secret' })))).not.toContain('secret');
  });

  it("names at most 20 senders in the data payload, so a busy window stays within FCM's 4 KiB", () => {
    const senders = Array.from({ length: 100 }, (_, i) => `${'s'.repeat(60)}${String(i).padStart(4, '0')}`);
    const notification = hidden(...senders.map((from) => msg(from, '1')));
    expect(notification.data.senders.split(',')).toEqual(senders.slice(0, 20));
    expect(notification.data.count).toBe('100');
    expect(Buffer.byteLength(JSON.stringify(notification))).toBeLessThan(4096);
  });

  it('names a window by its latest mid, so the same window pushed again replaces the one shown', () => {
    expect(hidden(msg('alice', '1'), msg('bob', '7')).collapseId).toBe('bob:7');
    // APNs takes at most 64 bytes: a longer mid is named by its hash, the same each time.
    const long = msg('a'.repeat(64), 'x'.repeat(64));
    const id = hidden(long).collapseId;
    expect([id, Buffer.byteLength(id) <= 64, hidden(long).collapseId]).toEqual([
      expect.stringMatching(/^~[A-Za-z0-9_-]{43}$/),
      true,
      id,
    ]);
    expect(collapseIdOf('é'.repeat(33))).toMatch(/^~/); // 66 bytes in UTF-8
  });

  it('shows the latest text only when bodies may be included', () => {
    expect(shown(msg('alice', '1', 'hi there')).body).toBe('hi there');
    expect(shown(msg('alice', '1'), msg('alice', '2')).body).toBe('2 new messages from alice: hello 2');
    expect(shown(msg('alice', '1', { image: 'x.png' })).body).toBe('New message from alice');
    expect(shown(msg('alice', '1', 'x'.repeat(500))).body).toHaveLength(200);
  });

  it('cuts a long preview between characters, never inside an emoji (half a surrogate pair)', () => {
    // The emoji takes code units 198 and 199: a cut after 199 units kept its first half only.
    const text = `${'x'.repeat(198)}😀${'y'.repeat(50)}`;
    const body = shown(msg('alice', '1', text)).body;
    expect(body).toBe(`${'x'.repeat(198)}…`);
    expect((body as unknown as { isWellFormed(): boolean }).isWellFormed()).toBe(true);
    // Where the cut falls after a whole emoji, the emoji stays.
    expect(shown(msg('alice', '1', `${'x'.repeat(197)}😀${'y'.repeat(50)}`)).body).toBe(
      `${'x'.repeat(197)}😀…`,
    );
  });
});

describe('coalescer', () => {
  beforeEach(() => jest.useFakeTimers());
  afterEach(() => jest.useRealTimers());
  const summary = (from: string, id: string): MessageSummary => ({
    mid: `${from}:${id}`,
    from,
    chat: 'direct',
    to: 'bob',
  });

  it('makes one flush per user per window, each mid once, oldest first', () => {
    const flushed: [string, string[]][] = [];
    const coalescer = createCoalescer(2000, (user, messages) =>
      flushed.push([user, messages.map((m) => m.mid)]),
    );
    coalescer.add('bob', summary('alice', '1'));
    jest.advanceTimersByTime(1000);
    coalescer.add('bob', summary('alice', '2'));
    coalescer.add('bob', summary('alice', '2'));
    coalescer.add('carol', summary('alice', '3'));
    expect(flushed).toEqual([]);
    jest.advanceTimersByTime(1000);
    expect(flushed).toEqual([['bob', ['alice:1', 'alice:2']]]);
    jest.advanceTimersByTime(1000);
    expect(flushed).toEqual([
      ['bob', ['alice:1', 'alice:2']],
      ['carol', ['alice:3']],
    ]);
    expect(coalescer.openWindows).toBe(0);
  });

  it('drops acked messages from an open window and closes every window on flushAll', () => {
    const flushed: string[][] = [];
    const coalescer = createCoalescer(2000, (_user, messages) => flushed.push(messages.map((m) => m.mid)));
    coalescer.add('bob', summary('alice', '1'));
    coalescer.drop('bob', ['alice:1']);
    coalescer.add('dora', summary('alice', '2'));
    coalescer.add('dora', summary('alice', '3'));
    coalescer.drop('dora', ['alice:2']);
    coalescer.flushAll();
    expect(flushed).toEqual([['alice:3']]);
    jest.advanceTimersByTime(5000);
    expect(flushed).toHaveLength(1);
  });
});
