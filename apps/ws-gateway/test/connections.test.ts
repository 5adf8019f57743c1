import type { Duplex } from 'node:stream';
import type WebSocket from 'ws';
import { ClientConnection, ConnectionRegistry, MAX_UNSENT_ANSWER_BYTES } from '../src/connections';
import { TokenBucket } from '@parley/service-kit';

const connection = (user: string, id: string) =>
  new ClientConnection(
    id,
    user,
    undefined,
    {} as WebSocket,
    new TokenBucket(1, 1),
    new TokenBucket(1, 1),
    undefined,
    1024,
    {} as Duplex,
  );
const ids = (conns: Iterable<ClientConnection>) => [...conns].map((c) => c.id).sort();

describe('ConnectionRegistry', () => {
  it('holds one socket or several per user, counts them, and forgets a user with none left', () => {
    const registry = new ConnectionRegistry();
    const [a1, a2, a3, b1] = [
      connection('ann', 'a1'),
      connection('ann', 'a2'),
      connection('ann', 'a3'),
      connection('bo', 'b1'),
    ];
    registry.add(a1);
    registry.add(b1);
    expect(ids(registry.of('ann'))).toEqual(['a1']);
    registry.add(a2);
    registry.add(a3);
    expect(registry.size).toBe(4);
    expect(ids(registry.of('ann'))).toEqual(['a1', 'a2', 'a3']);
    expect(ids(registry.of('ann', ['a3', 'a1', 'zz']))).toEqual(['a1', 'a3']);
    expect(ids(registry.all())).toEqual(['a1', 'a2', 'a3', 'b1']);

    registry.remove(a2);
    registry.remove(a2); // already gone: not counted twice
    registry.remove(a1);
    expect(registry.size).toBe(2);
    expect(ids(registry.of('ann'))).toEqual(['a3']);
    registry.remove(a3);
    expect(registry.of('ann')).toEqual([]);
    expect(ids(registry.all())).toEqual(['b1']);
    expect(registry.size).toBe(1);
  });

  it('replaces a connection added again under its id without counting it twice', () => {
    const registry = new ConnectionRegistry();
    const first = connection('cy', 'c1');
    const again = connection('cy', 'c1');
    registry.add(first);
    registry.add(connection('cy', 'c2'));
    registry.add(again);
    expect(registry.size).toBe(2);
    expect(registry.of('cy', ['c1'])[0]).toBe(again);
  });

  it('hands out lists that later changes leave alone', () => {
    const registry = new ConnectionRegistry();
    registry.add(connection('di', 'd1'));
    const held = registry.of('di');
    registry.add(connection('di', 'd2'));
    expect(ids(held)).toEqual(['d1']);
  });
});

/** A socket whose client reads nothing: a write completes only once `drain()` lets it. */
class UnreadSocket {
  readonly OPEN = 1;
  readyState = 1;
  private readonly held: Array<{ size: number; done: () => void }> = [];
  send(text: string, done: () => void): void {
    this.held.push({ size: Buffer.byteLength(text), done });
  }
  terminate(): void {
    this.readyState = 3;
  }
  get heldBytes(): number {
    return this.held.reduce((sum, write) => sum + write.size, 0);
  }
  drain(): void {
    for (const write of this.held.splice(0)) write.done();
  }
}

describe('ClientConnection', () => {
  it('holds at most MAX_UNSENT_ANSWER_BYTES of answers past the unsent cap for a client that sends on and reads nothing', () => {
    const socket = new UnreadSocket();
    const cap = 1024;
    const conn = new ClientConnection(
      'c1',
      'mallory',
      undefined,
      socket as unknown as WebSocket,
      new TokenBucket(1, 1),
      new TokenBucket(1, 1),
      undefined,
      cap,
      { cork() {}, uncork() {} } as unknown as Duplex,
    );
    expect(conn.send(JSON.stringify({ type: 'message', pad: 'x'.repeat(2000) }))).toBe(true);
    const pushed = socket.heldBytes;
    // Behind the cap: a push is not written, an answer to the client's own frame still is...
    expect(conn.send(JSON.stringify({ type: 'typing', from: 'bob', to: 'mallory' }))).toBe(false);
    const refusal = JSON.stringify({
      type: 'error',
      code: 'rate_limited',
      message: 'too many frames: retry after 0.005 s',
      retryAfterMs: 5,
    });
    expect(conn.send(refusal, true)).toBe(true);
    // ...but not one for each of as many frames as it cares to send.
    const answered = Array.from({ length: 10_000 }, () => conn.send(refusal, true)).filter(Boolean).length;
    expect(socket.heldBytes).toBeLessThanOrEqual(pushed + MAX_UNSENT_ANSWER_BYTES);
    expect(answered).toBeGreaterThan(100);
    // Once it reads again, it is answered again.
    socket.drain();
    expect(conn.send(refusal, true)).toBe(true);
  });
});
