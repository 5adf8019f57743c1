import { setTimeout as sleep } from 'node:timers/promises';
import { waitFor } from '@parley/test-kit';
import { fleetSuite } from './helpers';

describe('fleet: push notifications end to end', () => {
  const { clients, fleet } = fleetSuite();
  const pushesTo = (token: string) => fleet().pushes.filter((p) => p.tokens.includes(token));

  it("tells an offline user's device of new messages, except those of the conversations they muted", async () => {
    expect(
      (await clients.rest('mia-p1', 'PUT', '/v1/devices/phone', { token: 'mia-token', platform: 'ios' }))
        .status,
    ).toBe(204);
    const created = await clients.rest('loud-p1', 'POST', '/v1/groups', {
      id: 'loud-group-p1',
      name: 'Loud',
      members: ['mia-p1'],
    });
    expect(created.status).toBe(201);
    expect((await clients.rest('mia-p1', 'PUT', '/v1/mutes/direct/spam-p1')).status).toBe(204);
    expect((await clients.rest('mia-p1', 'PUT', '/v1/mutes/group/loud-group-p1')).status).toBe(204);

    // mia has no socket: what is sent to her is stored, and announced unless muted.
    await clients.rest('spam-p1', 'POST', '/v1/send', [
      { type: 'message', id: 's1', to: 'mia-p1', body: 'buy' },
    ]);
    await clients.rest('loud-p1', 'POST', '/v1/send', [
      { type: 'message', id: 'l1', to: 'loud-group-p1', chat: 'group', body: 'lol' },
    ]);
    await clients.rest('friend-p1', 'POST', '/v1/send', [
      { type: 'message', id: 'f1', to: 'mia-p1', body: 'dinner?' },
    ]);
    const stored = async () =>
      (await clients.rest('mia-p1', 'GET', '/v1/messages')).body.messages.filter(
        (m: { type: string }) => m.type === 'message',
      ).length;
    await waitFor(async () => (await stored()) === 3, 15_000, 'all three messages stored for sync');
    await waitFor(() => pushesTo('mia-token').length > 0, 15_000, 'a push to mia');
    await sleep(3000); // a push window (2 s) past the last: a muted message would have been announced by now
    const announced = pushesTo('mia-token').map((p) => p.notification.data.senders);
    expect(announced.length).toBeGreaterThan(0);
    expect(announced.every((senders) => senders === 'friend-p1')).toBe(true);

    // Unmuted: announced again.
    expect((await clients.rest('mia-p1', 'DELETE', '/v1/mutes/direct/spam-p1')).status).toBe(204);
    await clients.rest('spam-p1', 'POST', '/v1/send', [
      { type: 'message', id: 's2', to: 'mia-p1', body: 'again' },
    ]);
    await waitFor(
      () => pushesTo('mia-token').some((p) => p.notification.data.senders === 'spam-p1'),
      15_000,
      'the unmuted sender announced',
    );
  });
});
