import { waitFor } from '@parley/test-kit';
import { fleetSuite } from './helpers';

describe('fleet: presence, typing and read receipts end to end', () => {
  const { clients } = fleetSuite();

  const presenceOf = async (user: string) =>
    (await clients.rest('observer', 'GET', `/v1/presence?users=${user}`)).body.presence[0];

  it('keeps a user online while any device is connected; lastSeen is the last disconnect', async () => {
    const phone = await clients.connect('pia', { deviceId: 'phone' });
    const laptop = await clients.connect('pia', { deviceId: 'laptop' });
    await waitFor(async () => (await presenceOf('pia')).online, 5000, 'online');
    const connected = (await presenceOf('pia')).lastSeen;
    await new Promise((r) => setTimeout(r, 5)); // the disconnect a millisecond later at least
    await phone.close();
    // Seen leaving: the phone's disconnect is processed, and the laptop's socket keeps her online.
    await waitFor(async () => (await presenceOf('pia')).lastSeen > connected, 5000, 'the disconnect');
    expect(await presenceOf('pia')).toMatchObject({ online: true });
    const before = Date.now();
    await laptop.close();
    await waitFor(async () => (await presenceOf('pia')).online === false, 5000, 'offline');
    expect((await presenceOf('pia')).lastSeen).toBeGreaterThanOrEqual(before);
  });

  it('answers the limits of users=: 200 users, repeats counted once', async () => {
    const ids = (n: number) => Array.from({ length: n }, (_, i) => `u${i}`).join(',');
    const ok = await clients.rest('observer', 'GET', `/v1/presence?users=${ids(200)}`);
    expect(ok.status).toBe(200);
    expect(ok.body.presence).toHaveLength(200);
    expect(await clients.rest('observer', 'GET', `/v1/presence?users=${ids(201)}`)).toMatchObject({
      status: 400,
      body: { error: { code: 'invalid_request', message: 'users: at most 200 users' } },
    });
    const repeats = await clients.rest(
      'observer',
      'GET',
      `/v1/presence?users=${Array(300).fill('same').join(',')}`,
    );
    expect(repeats.body).toEqual({ presence: [{ user: 'same', online: false, lastSeen: null }] });
  });

  it('typing reaches the devices connected now and nothing else', async () => {
    const tom = await clients.connect('tom');
    const una1 = await clients.connect('una', { deviceId: 'a' });
    const una2 = await clients.connect('una', { deviceId: 'b' });
    tom.send({ type: 'typing', to: 'una', chat: 'direct' });
    for (const d of [una1, una2])
      expect(await d.next((f) => f.type === 'typing')).toEqual({
        type: 'typing',
        from: 'tom',
        to: 'una',
        chat: 'direct',
      });
    // To a user not connected: nothing is kept for later. A message sent after it is stored; the
    // notice, routed before it in the same partition, is not.
    tom.send({ type: 'typing', to: 'nobody-typed', chat: 'direct' });
    tom.send({ type: 'message', id: 'after-typing', to: 'nobody-typed', body: 1 });
    await waitFor(
      async () => (await clients.rest('nobody-typed', 'GET', '/v1/messages')).body.messages.length > 0,
      10_000,
      'the message stored',
    );
    expect((await clients.rest('nobody-typed', 'GET', '/v1/messages')).body.messages).toEqual([
      expect.objectContaining({ type: 'message', mid: 'tom:after-typing' }),
    ]);
    expect((await clients.rest('tom', 'POST', '/v1/send', { type: 'typing', to: 'una' })).body).toEqual({
      results: [
        {
          index: 0,
          status: 'rejected',
          code: 'invalid_frame',
          message: 'type: must be one of message, ack, read, group',
        },
      ],
    });
  });

  it('group typing reaches the other members only', async () => {
    const [ann, ben, cid] = await Promise.all(
      ['gann', 'gben', 'gcid'].map((u) => clients.connect(u, { autoAck: true })),
    );
    expect(
      (await clients.rest('gann', 'POST', '/v1/groups', { id: 'gt1', name: 'T', members: ['gben'] })).status,
    ).toBe(201);
    await ben.next((f) => f.type === 'group');
    cid.send({ type: 'typing', to: 'gt1', chat: 'group' });
    ann.send({ type: 'typing', to: 'gt1', chat: 'group' });
    expect(await ben.next((f) => f.type === 'typing')).toEqual({
      type: 'typing',
      from: 'gann',
      to: 'gt1',
      chat: 'group',
    });
    // A message sent after both notices, in the group's order: once it is in, so would they be.
    ann.send({ type: 'message', id: 'after', to: 'gt1', chat: 'group', body: 1 });
    await ben.next((f) => f.type === 'message');
    expect(ben.ofType('typing')).toHaveLength(1); // not the non-member's
    expect(ann.ofType('typing')).toEqual([]); // not the sender's own
    expect(cid.ofType('typing')).toEqual([]);
  });

  it("passes a read from any device or API to every device of the sender, and only the sender's mids", async () => {
    const alice1 = await clients.connect('ra', { deviceId: 'a1', autoAck: true });
    const alice2 = await clients.connect('ra', { deviceId: 'a2', autoAck: true });
    const carol = await clients.connect('rc', { autoAck: true });
    const bob = await clients.connect('rb', { autoAck: true });
    alice1.send({ type: 'message', id: 'm1', to: 'rc', body: 'hi' });
    alice1.send({ type: 'message', id: 'm2', to: 'rc', body: 'there' });
    await carol.until(() => carol.ofType('message').length === 2);
    // A read naming none of ra's mids (one addressed to the wrong user) is refused, and reaches nobody.
    bob.send({ type: 'read', id: 'wrong', to: 'ra', mids: ['rc:zzz'] });
    expect(await bob.next((f) => f.type === 'error' && f.id === 'wrong')).toMatchObject({
      code: 'invalid_frame',
      mid: '~err:rb:wrong',
    });
    carol.send({ type: 'read', to: 'ra', mids: ['ra:m1', 'rb:x'] });
    const rest = await clients.rest('rc', 'POST', '/v1/send', {
      type: 'read',
      id: 'r1',
      to: 'ra',
      mids: ['ra:m2'],
    });
    expect(rest.body.results).toEqual([{ index: 0, status: 'accepted', id: 'r1', mid: 'rc:r1' }]);
    for (const device of [alice1, alice2])
      await device.until(
        () => device.ofType('receipt').filter((f) => f.status === 'read' && f.by === 'rc').length === 2,
      );
    const reads = alice1.ofType('receipt').filter((f) => f.status === 'read');
    // Both reads (WebSocket, REST) name only ra's mids; bob's named none of hers and came to nothing.
    expect(reads.map((f) => [f.by, f.mids]).sort()).toEqual([
      ['rc', ['ra:m1']],
      ['rc', ['ra:m2']],
    ]);
  });
});
