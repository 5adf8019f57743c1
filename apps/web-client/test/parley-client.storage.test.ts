import { createServer } from 'node:http';
import { AddressInfo } from 'node:net';
import { DeliverableEvent, ParleyClient } from '../public/parley-client.js';
import { onlineClient } from './support/scripted-socket';

/** A store the test settles by hand, as an app's IndexedDB or SQLite write. */
function deferred() {
  let settle!: { resolve: () => void; reject: (err: Error) => void };
  const promise = new Promise<void>((resolve, reject) => (settle = { resolve, reject }));
  return { promise, ...settle };
}

const message = (id: string) => ({
  type: 'message',
  mid: `alice:${id}`,
  id,
  from: 'alice',
  to: 'bob',
  chat: 'direct',
  body: id,
  sentAt: 1,
});

describe('parley-client.js with an asynchronous store (event.waitUntil)', () => {
  beforeEach(() => jest.useFakeTimers());
  afterEach(() => jest.useRealTimers());

  async function online() {
    const { client, socket } = await onlineClient();
    const acked = () => socket.sent.filter((f) => f.type === 'ack').flatMap((f) => f.mids as string[]);
    return { client, socket, acked };
  }

  it('acks a deliverable once the store it was handed to resolves, not when its listener returns', async () => {
    const { client, socket, acked } = await online();
    const store = deferred();
    client.addEventListener('message', (event) => (event as DeliverableEvent).waitUntil(store.promise));
    socket.receive(message('m1'));
    await jest.advanceTimersByTimeAsync(1_000);
    expect(acked()).toEqual([]);
    store.resolve();
    await jest.advanceTimersByTimeAsync(100);
    expect(acked()).toEqual(['alice:m1']);
    client.close();
  });

  it('leaves a deliverable whose store failed unacked, and hands it over again when it comes again', async () => {
    const { client, socket, acked } = await online();
    const stores = [deferred(), deferred()];
    const handed: string[] = [];
    client.addEventListener('message', (event) => {
      handed.push((event as CustomEvent).detail.mid);
      (event as DeliverableEvent).waitUntil(stores[handed.length - 1].promise);
    });
    socket.receive(message('m1'));
    stores[0].reject(new Error('QuotaExceededError'));
    await jest.advanceTimersByTimeAsync(1_000);
    expect(acked()).toEqual([]);
    socket.receive(message('m1')); // the server's retry: the ack never came
    stores[1].resolve();
    await jest.advanceTimersByTimeAsync(100);
    expect([handed, acked()]).toEqual([['alice:m1', 'alice:m1'], ['alice:m1']]);
    client.close();
  });

  it('acks a duplicate that arrives while the first is being stored only once that store succeeds', async () => {
    const { client, socket, acked } = await online();
    const store = deferred();
    let handed = 0;
    client.addEventListener('message', (event) => {
      handed++;
      (event as DeliverableEvent).waitUntil(store.promise);
    });
    socket.receive(message('m1'));
    socket.receive(message('m1'));
    await jest.advanceTimersByTimeAsync(1_000);
    expect([handed, acked()]).toEqual([1, []]);
    store.resolve();
    await jest.advanceTimersByTimeAsync(100);
    expect(new Set(acked())).toEqual(new Set(['alice:m1']));
    client.close();
  });
});

describe('parley-client.js outbox ids', () => {
  it('refuses at once an id the server would refuse without naming it, which would stay in the outbox for ever', () => {
    const client = new ParleyClient({ wsUrl: 'ws://gateway/v1/ws', getToken: async () => 'token' });
    expect(() => client.send('bob', 'hi', 'direct', 'has space')).toThrow(TypeError);
    expect(() => client.send('bob', 'hi', 'direct', 42 as unknown as string)).toThrow(TypeError);
    expect(() => client.groupOp('leave', 'g1', {}, 'x'.repeat(65))).toThrow(TypeError);
    expect(client.outbox.size).toBe(0);
    expect(client.send('bob', 'hi', 'direct', 'c-1_ok').id).toBe('c-1_ok');
    expect([...client.outbox.keys()]).toEqual(['c-1_ok']);
  });
});

describe('parley-client.js sync with an asynchronous store', () => {
  it('acks what the app stored of a page, and leaves what it failed to store on the server', async () => {
    const acks: string[][] = [];
    const server = createServer((request, response) => {
      let body = '';
      request.on('data', (chunk) => (body += chunk));
      request.on('end', () => {
        if (request.method === 'POST') acks.push(JSON.parse(body).mids);
        const answer =
          request.method === 'GET'
            ? { messages: [message('m1'), message('m2')], next: null }
            : { results: [] };
        response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(answer));
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const client = new ParleyClient({
        restUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
        wsUrl: 'ws://127.0.0.1:9/v1/ws',
        getToken: async () => 'token',
      });
      client.addEventListener('message', (event) => {
        const { mid } = (event as CustomEvent).detail;
        const write = new Promise<void>((resolve, reject) =>
          setTimeout(() => (mid === 'alice:m2' ? reject(new Error('disk full')) : resolve()), 20),
        );
        (event as DeliverableEvent).waitUntil(write);
      });
      expect(await client.sync()).toBe(2);
      expect(acks).toEqual([['alice:m1']]);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });
});
