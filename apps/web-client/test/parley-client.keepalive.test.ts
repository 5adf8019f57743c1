import { onlineClient, ScriptedSocket } from './support/scripted-socket';

describe('parley-client.js keepalive', () => {
  beforeEach(() => jest.useFakeTimers());
  afterEach(() => jest.useRealTimers());

  it('keeps a socket whose pong is late behind frames still arriving (a backlog on a slow link), and drops one where nothing arrives', async () => {
    const { client, socket } = await onlineClient();
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

  it('sends a frame again under its id when a live socket never answered it (answers dropped for a socket far behind), and not one that was answered', async () => {
    const { client, socket } = await onlineClient();
    client.send('alice', { text: 'lost answer' }, 'direct', 'm1');
    client.send('alice', { text: 'answered' }, 'direct', 'm2');
    socket.receive({ type: 'accepted', id: 'm2', mid: 'bob:m2' });
    // The socket stays alive (every ping answered), but m1's `accepted` never comes.
    const pings = () => socket.sent.filter((f) => f.type === 'ping').length;
    for (let second = 0, answered = 0; second < 60; second++) {
      await jest.advanceTimersByTimeAsync(1000);
      for (; answered < pings(); answered++) socket.receive({ type: 'pong' });
    }
    const sent = (id: string) => socket.sent.filter((f) => f.id === id).length;
    expect({ m1: sent('m1'), m2: sent('m2'), socketClosed: socket.closedWith }).toEqual({
      m1: 2,
      m2: 1,
      socketClosed: undefined,
    });
    expect(client.outbox.has('m1')).toBe(true);
    socket.receive({ type: 'accepted', id: 'm1', mid: 'bob:m1' });
    expect(client.outbox.size).toBe(0);
    client.close();
  });
});
