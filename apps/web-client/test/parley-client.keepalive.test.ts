import { ParleyClient } from '../public/parley-client.js';

/** A WebSocket whose server side the test plays: what the client sent, and whether it closed. */
class ScriptedSocket {
  static opened: ScriptedSocket[] = [];
  readyState = 1;
  sent: Array<Record<string, unknown>> = [];
  closedWith?: number;
  onmessage?: (event: { data: string }) => void;
  onclose?: (event: { code: number }) => void;
  onerror?: () => void;
  constructor(readonly url: string) {
    ScriptedSocket.opened.push(this);
  }
  send(text: string) {
    this.sent.push(JSON.parse(text));
  }
  close(code: number) {
    this.closedWith = code;
  }
  receive(frame: Record<string, unknown>) {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }
}

describe('parley-client.js keepalive', () => {
  beforeEach(() => jest.useFakeTimers());
  afterEach(() => jest.useRealTimers());

  it('keeps a socket whose pong is late behind frames still arriving (a backlog on a slow link), and drops one where nothing arrives', async () => {
    const client = new ParleyClient({
      restUrl: 'http://127.0.0.1:1', // the sync on connect fails, which does not matter here
      wsUrl: 'ws://gateway/v1/ws',
      getToken: async () => 'token',
      WebSocket: ScriptedSocket,
    });
    client.addEventListener('rejected', () => undefined);
    client.start();
    await jest.advanceTimersByTimeAsync(0);
    const socket = ScriptedSocket.opened[0]!;
    socket.receive({ type: 'hello', user: 'bob', connId: 'c1' });
    await jest.advanceTimersByTimeAsync(20_000);
    expect(socket.sent.filter((f) => f.type === 'ping')).toHaveLength(1);
    // The server wrote the pong behind a replay the link takes a message every 2 s of: 16 s late.
    for (let i = 0; i < 8; i++) {
      await jest.advanceTimersByTimeAsync(2_000);
      socket.receive({
        type: 'message',
        mid: `alice:m${i}`,
        id: `m${i}`,
        from: 'alice',
        to: 'bob',
        chat: 'direct',
        body: i,
        sentAt: 1,
      });
    }
    socket.receive({ type: 'pong' });
    expect(socket.closedWith).toBeUndefined();
    expect(ScriptedSocket.opened).toHaveLength(1);
    // The next ping meets a dead connection: nothing comes back at all.
    await jest.advanceTimersByTimeAsync(20_000 - 16_000);
    expect(socket.sent.filter((f) => f.type === 'ping')).toHaveLength(2);
    await jest.advanceTimersByTimeAsync(9_999);
    expect(socket.closedWith).toBeUndefined();
    await jest.advanceTimersByTimeAsync(1);
    expect(socket.closedWith).toBe(4000);
    client.close();
  });
});
