import { setTimeout as sleep } from 'node:timers/promises';
import { INTERNAL_SECRET_HEADER } from '@parley/contracts';
import { DEV_INTERNAL_SECRET } from '@parley/service-kit';
import { waitFor } from '@parley/test-kit';
import { fleetSuite } from './helpers';

/**
 * A malicious but authenticated user (mallory) against the newer client-facing features: what she
 * may not do stays refused end to end (security review).
 */
describe('fleet: what an authenticated user cannot do to others', () => {
  const { clients, fleet } = fleetSuite();

  it('cannot speak as another user: from, by and sentAt she sends are replaced by her own', async () => {
    const bob = await clients.connect('sec-bob');
    const mallory = await clients.connect('sec-mallory');
    mallory.send({ type: 'message', id: 'm1', to: 'sec-bob', body: 'hi', from: 'sec-alice', sentAt: 1 });
    const got = await bob.next((f) => f.type === 'message');
    expect(got).toMatchObject({ mid: 'sec-mallory:m1', from: 'sec-mallory' });
    expect(got.sentAt).toBeGreaterThan(1);
    // A read receipt: `by` is hers, and only mids of its `to` are passed on.
    mallory.send({
      type: 'read',
      id: 'r1',
      to: 'sec-bob',
      mids: ['sec-alice:x', 'sec-bob:y'],
      by: 'sec-alice',
    });
    const receipt = await bob.next((f) => f.type === 'receipt');
    expect(receipt).toMatchObject({ status: 'read', by: 'sec-mallory', mids: ['sec-bob:y'] });
    // A read naming none of `to`'s mids (a third user's, or addressed to a group id) is refused.
    mallory.send({ type: 'read', id: 'r2', to: 'sec-bob', mids: ['sec-alice:x'] });
    expect(await mallory.next((f) => f.type === 'error' && f.id === 'r2')).toMatchObject({
      code: 'invalid_frame',
    });
  });

  it('cannot act in a group as another member or as an admin, nor see or type into a group she is not in', async () => {
    const alice = await clients.connect('sec-alice2', { autoAck: true });
    const carol = await clients.connect('sec-carol2', { autoAck: true });
    const mallory = await clients.connect('sec-mallory2', { autoAck: true });
    const created = await clients.rest('sec-alice2', 'POST', '/v1/groups', {
      id: 'sec-g1',
      name: 'team',
      members: ['sec-carol2', 'sec-mallory2'],
    });
    expect(created.status).toBe(201);
    // A member, not an admin: removing another is refused on both APIs; the group is unchanged.
    const rest = await clients.rest('sec-mallory2', 'DELETE', '/v1/groups/sec-g1/members/sec-carol2');
    expect([rest.status, rest.body.error.code]).toEqual([403, 'forbidden']);
    mallory.send({
      type: 'group',
      id: 'op1',
      op: 'remove',
      group: 'sec-g1',
      members: ['sec-alice2'],
      by: 'sec-alice2',
    });
    expect(await mallory.next((f) => f.type === 'error' && f.id === 'op1')).toMatchObject({
      code: 'forbidden',
    });
    // A group she is not in: invisible (404), not to be added to or written to.
    await clients.rest('sec-alice2', 'POST', '/v1/groups', {
      id: 'sec-g2',
      name: 'private',
      members: ['sec-carol2'],
    });
    expect((await clients.rest('sec-mallory2', 'GET', '/v1/groups/sec-g2')).status).toBe(404);
    const add = await clients.rest('sec-mallory2', 'POST', '/v1/groups/sec-g2/members', {
      members: ['sec-mallory2'],
    });
    expect(add.status).toBe(404);
    mallory.send({ type: 'typing', to: 'sec-g2', chat: 'group' });
    mallory.send({ type: 'message', id: 'gm1', to: 'sec-g2', chat: 'group', body: 'spam' });
    expect(await mallory.next((f) => f.type === 'error' && f.id === 'gm1')).toMatchObject({
      code: 'not_member',
    });
    await sleep(300);
    expect(
      [...alice.frames, ...carol.frames].filter((f) => f.from === 'sec-mallory2' && f.to === 'sec-g2'),
    ).toEqual([]);
    expect((await clients.rest('sec-alice2', 'GET', '/v1/groups/sec-g1')).body.members).toEqual([
      'sec-alice2',
      'sec-carol2',
      'sec-mallory2',
    ]);
  });

  it("erases only her own account: another user's groups, devices and stored messages stay", async () => {
    await clients.rest('sec-dave', 'PUT', '/v1/devices/phone', { token: 'dave-token', platform: 'android' });
    await clients.rest('sec-dave', 'POST', '/v1/groups', {
      id: 'sec-g3',
      name: 'd',
      members: ['sec-mallory3'],
    });
    const sender = await clients.connect('sec-erin');
    sender.send({ type: 'message', id: 'e1', to: 'sec-dave', body: 'kept' });
    await sender.next((f) => f.type === 'accepted');
    const stored = async () =>
      (await clients.rest('sec-dave', 'GET', '/v1/messages')).body.messages.filter(
        (m: { mid: string }) => m.mid === 'sec-erin:e1',
      );
    await waitFor(async () => (await stored()).length === 1, 10_000, "dave's message stored");
    // Removing a device id of dave's names her own (none): his stays.
    expect((await clients.rest('sec-mallory3', 'DELETE', '/v1/devices/phone')).status).toBe(204);
    const erased = await clients.rest('sec-mallory3', 'DELETE', '/v1/account');
    expect(erased).toMatchObject({ status: 200, body: { erased: { groups: 1, devices: 0 } } });
    const group = await clients.rest('sec-dave', 'GET', '/v1/groups/sec-g3');
    expect(group.body.members).toEqual(['sec-dave']);
    expect(await stored()).toHaveLength(1);
    const own = await clients.rest('sec-dave', 'DELETE', '/v1/account');
    expect(own.body.erased).toMatchObject({ devices: 1 });
    expect(own.body.erased.stored).toBeGreaterThanOrEqual(1);
  });

  it("cannot undo another user's block, mute or report of her by erasing her account", async () => {
    await clients.rest('sec-frank', 'PUT', '/v1/blocks/sec-mallory5');
    await clients.rest('sec-frank', 'PUT', '/v1/mutes/direct/sec-mallory5');
    const report = await clients.rest('sec-frank', 'POST', '/v1/reports', {
      user: 'sec-mallory5',
      reason: 'harassment',
    });
    expect(report.status).toBe(201);
    // Her own token calls it: nothing shows her account is gone anywhere else, and she goes on.
    expect((await clients.rest('sec-mallory5', 'DELETE', '/v1/account')).status).toBe(200);
    expect((await clients.rest('sec-frank', 'GET', '/v1/blocks')).body.blocked).toEqual(['sec-mallory5']);
    expect((await clients.rest('sec-frank', 'GET', '/v1/mutes')).body.mutes).toMatchObject([
      { chat: 'direct', id: 'sec-mallory5' },
    ]);
    const reports = await fetch(fleet().urls.reports, {
      headers: { [INTERNAL_SECRET_HEADER]: DEV_INTERNAL_SECRET },
    });
    expect(((await reports.json()) as { reports: Array<{ id: string }> }).reports.map((r) => r.id)).toContain(
      report.body.id,
    );
    // And the block still keeps her messages from him.
    const frank = await clients.connect('sec-frank', { autoAck: true });
    const mallory = await clients.connect('sec-mallory5');
    mallory.send({ type: 'message', id: 'again', to: 'sec-frank', body: 'unblocked?' });
    await mallory.next((f) => f.type === 'accepted');
    const carol = await clients.connect('sec-carol5');
    carol.send({ type: 'message', id: 'c1', to: 'sec-frank', body: 'hi' });
    await frank.next((f) => f.type === 'message' && f.from === 'sec-carol5');
    await sleep(500);
    expect(frank.frames.filter((f) => f.from === 'sec-mallory5')).toEqual([]);
  });

  it('answers no internal endpoint without the internal secret, and none on the public ports', async () => {
    const host = 'http://127.0.0.1';
    const { ports } = fleet();
    const internal: Array<[number, string, string]> = [
      [ports.groupMs, 'DELETE', '/internal/account'],
      [ports.groupMs, 'POST', '/internal/group-commands'],
      [ports.groupMs, 'GET', '/internal/groups'],
      [ports.pushMs, 'DELETE', '/internal/account'],
      [ports.pushMs, 'PUT', '/internal/devices/x'],
      [ports.sessionMs, 'DELETE', '/internal/account'],
      [ports.sessionMs, 'GET', '/internal/presence?users=a'],
      [ports.persistenceMs, 'DELETE', '/internal/account'],
      [ports.persistenceMs, 'GET', '/internal/messages'],
      [ports.wsGatewayInternal, 'POST', '/send'],
      [ports.wsGatewayInternal, 'POST', '/announce'],
    ];
    for (const [port, method, path] of internal) {
      const response = await fetch(`${host}:${port}${path}`, {
        method,
        headers: {
          'x-parley-user': 'sec-dave',
          'x-parley-internal-secret': 'guess',
          'content-type': 'application/json',
        },
        body: method === 'GET' ? undefined : '{}',
      });
      expect([port, path, response.status]).toEqual([port, path, 403]);
    }
    // The public ports route no internal path (a %-encoded one included).
    const token = await clients.token('sec-mallory4');
    for (const path of ['/internal/account', '/%69nternal/account', '/send', '/announce']) {
      for (const port of [ports.restGateway, ports.wsGateway]) {
        const response = await fetch(`${host}:${port}${path}`, {
          method: path.endsWith('account') ? 'DELETE' : 'POST',
          headers: { authorization: `Bearer ${token}` },
        });
        expect([port, path, response.status]).toEqual([port, path, 404]);
      }
    }
  });
});
