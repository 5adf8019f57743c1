import type { Socket } from 'node:net';
import { waitFor, WsTestClient } from '@parley/test-kit';
import { fleetSuite } from './helpers';

describe('fleet: 1:1 delivery end to end', () => {
  const { clients } = fleetSuite({ maxAttempts: 3 });

  it('delivers a message, then a delivered receipt on ack and a read receipt on read', async () => {
    const alice = await clients.connect('alice1');
    const bob = await clients.connect('bob1');
    alice.send({ type: 'message', id: 'c1', to: 'bob1', body: { text: 'hi' }, from: 'mallory' });
    expect(await alice.next((f) => f.type === 'accepted')).toEqual({
      type: 'accepted',
      id: 'c1',
      mid: 'alice1:c1',
    });
    const message = await bob.next((f) => f.type === 'message');
    expect(message).toEqual({
      type: 'message',
      mid: 'alice1:c1',
      id: 'c1',
      from: 'alice1',
      to: 'bob1',
      chat: 'direct',
      body: { text: 'hi' },
      sentAt: expect.any(Number),
    });
    bob.send({ type: 'ack', mids: ['alice1:c1'] });
    const delivered = await alice.next((f) => f.type === 'receipt' && f.status === 'delivered');
    expect(delivered).toMatchObject({ mids: ['alice1:c1'], by: 'bob1' });
    bob.send({ type: 'read', to: 'alice1', mids: ['alice1:c1'] });
    expect(await alice.next((f) => f.type === 'receipt' && f.status === 'read')).toMatchObject({
      mids: ['alice1:c1'],
      by: 'bob1',
    });
  });

  it('redelivers an unacked message with the same mid', async () => {
    const alice = await clients.connect('alice2', { autoAck: true });
    const bob = await clients.connect('bob2');
    alice.send({ type: 'message', id: 'r1', to: 'bob2', body: 1 });
    await bob.until(() => bob.ofType('message').length >= 2, 5000);
    expect(new Set(bob.ofType('message').map((f) => f.mid))).toEqual(new Set(['alice2:r1']));
    bob.send({ type: 'ack', mids: ['alice2:r1'] });
  });

  it('delivers to both devices of a user; one ack completes delivery', async () => {
    const alice = await clients.connect('alice3', { autoAck: true });
    const phone = await clients.connect('bob3', { deviceId: 'phone' });
    const laptop = await clients.connect('bob3', { deviceId: 'laptop' });
    alice.send({ type: 'message', id: 'd1', to: 'bob3', body: 'both' });
    await phone.next((f) => f.mid === 'alice3:d1');
    await laptop.next((f) => f.mid === 'alice3:d1');
    phone.send({ type: 'ack', mids: ['alice3:d1'] });
    await alice.next((f) => f.type === 'receipt');
    const seen = laptop.ofType('message').length;
    await new Promise((r) => setTimeout(r, 1500)); // past an ack timeout and a retry tick
    expect(laptop.ofType('message').length).toBe(seen);
  });

  it('delivers a message resent through POST /v1/send once: same mid, no copy after the ack', async () => {
    const alice = await clients.connect('alice8', { autoAck: true });
    const bob = await clients.connect('bob8', { autoAck: true });
    const frame = { type: 'message', id: 'once', to: 'bob8', body: 'only once' };
    const first = await clients.rest('alice8', 'POST', '/v1/send', frame);
    expect(first.body.results).toEqual([{ index: 0, status: 'accepted', id: 'once', mid: 'alice8:once' }]);
    await bob.next((f) => f.mid === 'alice8:once');
    await alice.next((f) => f.type === 'receipt' && f.status === 'delivered'); // bob's ack went through

    const again = await clients.rest('alice8', 'POST', '/v1/send', [frame]);
    expect(again.body.results).toEqual(first.body.results);
    // Everything for bob is delivered in order: once this arrives, the resend was handled before it.
    expect(
      (
        await clients.rest('alice8', 'POST', '/v1/send', {
          type: 'message',
          id: 'after',
          to: 'bob8',
          body: 'next',
        })
      ).status,
    ).toBe(200);
    await bob.next((f) => f.mid === 'alice8:after');
    await new Promise((r) => setTimeout(r, 2500)); // past two ack timeouts: no redelivery either
    const copies = bob.ofType('message').filter((f) => f.id === 'once' || f.body === 'only once');
    expect(copies.map((f) => f.mid)).toEqual(['alice8:once']);
  });

  it('stores a message for a disconnected user: in sync, gone after the ack, and delivered on connect', async () => {
    const alice = await clients.connect('alice4', { autoAck: true });
    alice.send({ type: 'message', id: 'o1', to: 'bob4', body: 'while away' });
    alice.send({ type: 'message', id: 'o2', to: 'bob4', body: 'still away' });
    await alice.until(() => alice.ofType('accepted').length === 2);
    let sync: { status: number; body: { messages: Array<{ mid: string }>; next: string | null } } = {
      status: 0,
      body: { messages: [], next: null },
    };
    await waitFor(
      async () => {
        sync = await clients.rest('bob4', 'GET', '/v1/messages?limit=10');
        return sync.body.messages.length === 2;
      },
      10_000,
      'the offline messages in sync',
    );
    expect(sync.body.messages.map((m) => m.mid)).toEqual(['alice4:o1', 'alice4:o2']);
    expect((await clients.rest('mallory', 'GET', '/v1/messages')).body.messages).toEqual([]);
    expect(
      (await clients.rest('bob4', 'POST', '/v1/send', { type: 'ack', mids: ['alice4:o1'] })).body.results[0]
        .status,
    ).toBe('accepted');
    await waitFor(
      async () => (await clients.rest('bob4', 'GET', '/v1/messages')).body.messages.length === 1,
      10_000,
      'the acked message to be dropped',
    );
    const bob = await clients.connect('bob4');
    expect(await bob.next((f) => f.mid === 'alice4:o2', 10_000)).toMatchObject({ body: 'still away' });
  });

  it('keeps a message left unacked by a user who went away before the newer ones in sync', async () => {
    const alice = await clients.connect('alice9', { autoAck: true });
    const bob = await clients.connect('bob9');
    alice.send({ type: 'message', id: 'u1', to: 'bob9', body: 'seen, not acked' });
    await bob.next((f) => f.mid === 'alice9:u1');
    await bob.close();
    await waitFor(
      async () => !(await clients.rest('alice9', 'GET', '/v1/presence?users=bob9')).body.presence[0].online,
      10_000,
      'bob9 to be offline',
    );
    alice.send({ type: 'message', id: 'u2', to: 'bob9', body: 'while away' });
    let mids: string[] = [];
    await waitFor(
      async () => {
        mids = (await clients.rest('bob9', 'GET', '/v1/messages')).body.messages.map(
          (m: { mid: string }) => m.mid,
        );
        return mids.length === 2;
      },
      10_000,
      'both messages in sync',
    );
    expect(mids).toEqual(['alice9:u1', 'alice9:u2']);
  });

  it('answers limits and bad frames with their errors', async () => {
    const alice = await clients.connect('alice5');
    alice.send({ type: 'message', id: 'x', to: 'not valid', body: 1 });
    expect(await alice.next((f) => f.type === 'error')).toMatchObject({
      id: 'x',
      code: 'invalid_frame',
      message: expect.stringContaining('to: must match'),
    });
    alice.send({ type: 'message', id: 'y', to: 'bob', body: 'x'.repeat(70 * 1024) });
    expect(await alice.closed()).toBe(1009);

    // The launcher's gateway allows 200 frames/s with a burst of 400: 600 frames at once overrun it.
    // (After 50 refusals in a row it also closes the socket with 4029, if the gateway reads that fast.)
    const eager = await clients.connect('eager5', { autoAck: true });
    for (let n = 0; n < 600; n++) eager.send({ type: 'message', id: `r${n}`, to: 'bob5', body: n });
    const answered = () => eager.ofType('accepted').length + eager.ofType('error').length;
    await eager.until(() => answered() === 600 || eager.closeCode !== undefined, 15_000);
    const refused = eager.ofType('error');
    expect(refused.length).toBeGreaterThan(0);
    for (const frame of refused)
      expect(frame).toMatchObject({
        code: 'rate_limited',
        id: expect.stringMatching(/^r\d+$/),
        message: expect.stringMatching(/^too many frames: retry after [\d.]+ s$/),
      });
    expect([undefined, 4029]).toContain(eager.closeCode);
  });

  it('erases an account: its groups left, its devices, what is stored for it and its last seen forgotten', async () => {
    const gus = await clients.connect('gus7');
    await waitFor(
      async () => (await clients.rest('hal7', 'GET', '/v1/presence?users=gus7')).body.presence[0].online,
      10_000,
      'gus online',
    );
    await gus.close();
    expect(
      (await clients.rest('gus7', 'PUT', '/v1/devices/phone', { token: 'gus-token', platform: 'android' }))
        .status,
    ).toBe(204);
    const group = await clients.rest('hal7', 'POST', '/v1/groups', {
      id: 'g-gus7',
      name: 'G',
      members: ['gus7'],
    });
    expect(group.status).toBe(201);
    await clients.rest('hal7', 'POST', '/v1/send', [
      { type: 'message', id: 'e1', to: 'gus7', body: 'one' },
      { type: 'message', id: 'e2', to: 'gus7', body: 'two' },
    ]);
    const stored = async () =>
      (await clients.rest('gus7', 'GET', '/v1/messages')).body.messages.filter(
        (m: { type: string }) => m.type === 'message',
      ).length;
    await waitFor(async () => (await stored()) === 2, 10_000, 'both messages stored');
    await waitFor(
      async () =>
        (await clients.rest('hal7', 'GET', '/v1/presence?users=gus7')).body.presence[0].lastSeen !== null,
      10_000,
      'gus last seen',
    );

    const erased = await clients.rest('gus7', 'DELETE', '/v1/account');
    expect([erased.status, erased.body]).toEqual([
      200,
      // Stored: both messages and the group's creation notice.
      { erased: { groups: 1, devices: 1, pending: expect.any(Number), stored: 3 } },
    ]);
    expect((await clients.rest('gus7', 'GET', '/v1/messages')).body).toEqual({ messages: [], next: null });
    expect((await clients.rest('gus7', 'GET', '/v1/groups')).body).toEqual({ groups: [] });
    expect((await clients.rest('hal7', 'GET', '/v1/groups/g-gus7')).body.members).toEqual(['hal7']);
    expect((await clients.rest('hal7', 'GET', '/v1/presence?users=gus7')).body.presence).toEqual([
      { user: 'gus7', online: false, lastSeen: null },
    ]);
    const again = await clients.rest('gus7', 'DELETE', '/v1/account');
    expect(again.body).toEqual({ erased: { groups: 0, devices: 0, pending: 0, stored: 0 } });
  });

  it('shows presence', async () => {
    await clients.connect('carol6');
    await waitFor(
      async () =>
        (await clients.rest('dave6', 'GET', '/v1/presence?users=carol6,nobody6')).body.presence[0].online ===
        true,
      5000,
      'presence',
    );
    const { body } = await clients.rest('dave6', 'GET', '/v1/presence?users=carol6,nobody6');
    expect(body.presence).toEqual([
      { user: 'carol6', online: true, lastSeen: expect.any(Number) },
      { user: 'nobody6', online: false, lastSeen: null },
    ]);
  });

  it('hands a replay larger than one /send back to a device reading at 5 MB/s without cutting it off', async () => {
    const senders = await Promise.all(
      [0, 1, 2, 3].map((i) => clients.connect(`sender9${i}`, { autoAck: true })),
    );
    const body = 'x'.repeat(60 * 1024);
    for (const sender of senders)
      for (let i = 0; i < 50; i++) sender.send({ type: 'message', id: `m${i}`, to: 'phone9', body });
    /** What sync holds for phone9, every page. */
    const stored = async () => {
      const mids: string[] = [];
      for (let after = ''; ;) {
        const { body } = await clients.rest('phone9', 'GET', `/v1/messages?limit=500${after}`);
        mids.push(...body.messages.map((m: { mid: string }) => m.mid));
        if (body.next === null) return mids;
        after = `&after=${body.next}`;
      }
    };
    await waitFor(async () => (await stored()).length === 200, 20_000, '12 MB stored for phone9');

    // A phone on a 40 Mbit/s link: the replay (12 MB, some twenty /send calls) comes faster than it reads.
    const phone = await clients.connect('phone9', { autoAck: true });
    const stopReading = readAtMost(phone, 100_000, 20);
    const received = () => new Set(phone.ofType('message').map((f) => f.mid as string));
    try {
      // Retries (1 s apart here, three pushes) hand it what it was not handed yet, or leave it stored.
      await phone.until(() => phone.closeCode !== undefined, 5000).catch(() => undefined);
      expect(phone.closeCode).toBeUndefined();
      // What it took is acked (gone from storage); nothing is lost.
      await waitFor(
        async () => new Set([...received(), ...(await stored())]).size === 200 && received().size > 0,
        10_000,
        'each message received or still stored',
      );
    } finally {
      stopReading();
    }
  }, 40_000);
});

/** Lets the client's socket read at most `bytes` each `tickMs`, as a slower link would. */
function readAtMost(client: WsTestClient, bytes: number, tickMs: number): () => void {
  const transport = (client.socket as unknown as { _socket: Socket })._socket;
  let budget = bytes;
  transport.on('data', (chunk: Buffer) => {
    budget -= chunk.length;
    if (budget <= 0) transport.pause();
  });
  const tick = setInterval(() => {
    budget = bytes;
    transport.resume();
  }, tickMs);
  return () => {
    clearInterval(tick);
    transport.resume();
  };
}
