import { waitFor } from '@parley/test-kit';
import { fleetSuite } from './helpers';

describe('fleet: groups end to end', () => {
  const { clients } = fleetSuite();

  it('a group created over REST reaches every member as a group deliverable', async () => {
    const [ann, ben] = [
      await clients.connect('ann', { autoAck: true }),
      await clients.connect('ben', { autoAck: true }),
    ];
    const created = await clients.rest('ann', 'POST', '/v1/groups', {
      id: 'rest-team',
      name: 'Team',
      members: ['ben'],
    });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({
      id: 'rest-team',
      name: 'Team',
      members: expect.arrayContaining(['ann', 'ben']),
      admins: ['ann'],
    });
    for (const member of [ann, ben]) {
      expect(await member.next((f) => f.type === 'group' && f.group === 'rest-team')).toMatchObject({
        op: 'create',
        by: 'ann',
        mid: expect.stringMatching(/^~/),
      });
    }
    expect((await clients.rest('cid', 'GET', '/v1/groups/rest-team')).status).toBe(404);
  });

  it('a group created without members holds its creator alone, over REST as over WebSocket', async () => {
    const ada = await clients.connect('ada', { autoAck: true });
    const created = await clients.rest('ada', 'POST', '/v1/groups', { id: 'rest-solo', name: 'Notes' });
    expect([created.status, created.body]).toMatchObject([201, { members: ['ada'], admins: ['ada'] }]);
    ada.send({ type: 'group', id: 'c-solo', op: 'create', group: 'ws-solo', name: 'Notes' });
    expect(await ada.next((f) => f.type === 'group' && f.group === 'ws-solo')).toMatchObject({
      op: 'create',
    });
    expect((await clients.rest('ada', 'GET', '/v1/groups/ws-solo')).body).toMatchObject({ members: ['ada'] });
  });

  it('a group created over WebSocket reaches every member; a message reaches each member once; a non-member reaches nobody', async () => {
    const ann = await clients.connect('ann2', { autoAck: true });
    const ben = await clients.connect('ben2', { autoAck: true });
    const cid = await clients.connect('cid2', { autoAck: true });
    const eve = await clients.connect('eve2', { autoAck: true });
    ann.send({
      type: 'group',
      id: 'g-op1',
      op: 'create',
      group: 'ws-team',
      name: 'WS Team',
      members: ['ben2', 'cid2'],
    });
    expect(await ann.next((f) => f.type === 'accepted')).toEqual({
      type: 'accepted',
      id: 'g-op1',
      mid: 'ann2:g-op1',
    });
    for (const member of [ann, ben, cid])
      await member.next((f) => f.type === 'group' && f.group === 'ws-team');

    ann.send({ type: 'message', id: 'gm1', to: 'ws-team', chat: 'group', body: 'hello team' });
    for (const member of [ben, cid]) {
      expect(await member.next((f) => f.type === 'message' && f.mid === 'ann2:gm1')).toMatchObject({
        from: 'ann2',
        to: 'ws-team',
        chat: 'group',
        body: 'hello team',
      });
    }
    eve.send({ type: 'message', id: 'spam', to: 'ws-team', chat: 'group', body: 'let me in' });
    expect(await eve.next((f) => f.type === 'error' && f.id === 'spam')).toMatchObject({
      code: 'not_member',
      mid: expect.any(String),
    });

    await new Promise((r) => setTimeout(r, 1500)); // longer than the ack timeout: acked messages are not redelivered
    for (const member of [ben, cid])
      expect(member.ofType('message').filter((f) => f.mid === 'ann2:gm1')).toHaveLength(1);
    expect(ann.ofType('message')).toEqual([]);
    for (const member of [ann, ben, cid])
      expect(member.frames.some((f) => f.body === 'let me in')).toBe(false);
  });

  it('a removed member stops receiving the group', async () => {
    const ann = await clients.connect('ann3', { autoAck: true });
    const ben = await clients.connect('ben3', { autoAck: true });
    const cid = await clients.connect('cid3', { autoAck: true });
    await clients.rest('ann3', 'POST', '/v1/groups', {
      id: 'rm-team',
      name: 'Team',
      members: ['ben3', 'cid3'],
    });
    const removed = await clients.rest('ann3', 'DELETE', '/v1/groups/rm-team/members/cid3');
    expect(removed.status).toBe(200);
    expect(await cid.next((f) => f.type === 'group' && f.op === 'remove')).toMatchObject({
      group: 'rm-team',
    });
    expect((await clients.rest('ben3', 'DELETE', '/v1/groups/rm-team/members/ann3')).status).toBe(403);
    ann.send({ type: 'message', id: 'after-rm', to: 'rm-team', chat: 'group', body: 'without cid' });
    await ben.next((f) => f.mid === 'ann3:after-rm');
    await new Promise((r) => setTimeout(r, 500));
    expect(cid.frames.some((f) => f.mid === 'ann3:after-rm')).toBe(false);
    await waitFor(
      async () => (await clients.rest('cid3', 'GET', '/v1/groups')).body.groups.length === 0,
      3000,
      'cid3 out of the group',
    );
  });
});
