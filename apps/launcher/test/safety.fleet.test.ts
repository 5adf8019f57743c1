import { INTERNAL_SECRET_HEADER } from '@parley/contracts';
import { DEV_INTERNAL_SECRET } from '@parley/service-kit';
import { fleetSuite } from './helpers';

describe('fleet: blocking and reporting a user end to end', () => {
  const { clients, fleet } = fleetSuite({ maxAttempts: 2 });

  it("keeps a blocked user's 1:1 messages, typing and reads from the blocker, shows the blocker offline to them, and lets new messages through once unblocked", async () => {
    const ana = await clients.connect('ana-b1', { autoAck: true });
    const max = await clients.connect('max-b1', { autoAck: true });
    const cleo = await clients.connect('cleo-b1', { autoAck: true });
    // Before the block: ana writes to max (max will send a read of it later).
    ana.send({ type: 'message', id: 'before', to: 'max-b1', body: 'hello max' });
    await max.next((f) => f.mid === 'ana-b1:before');

    expect((await clients.rest('ana-b1', 'PUT', '/v1/blocks/max-b1')).status).toBe(204);
    expect((await clients.rest('ana-b1', 'PUT', '/v1/blocks/max-b1')).status).toBe(204); // a repeat
    expect((await clients.rest('ana-b1', 'GET', '/v1/blocks')).body).toEqual({ blocked: ['max-b1'] });

    // Nobody has written to ana yet, so no router keeps her blocks: the block holds at once.
    max.send({ type: 'message', id: 'spam', to: 'ana-b1', body: 'blocked?' });
    expect(await max.next((f) => f.type === 'accepted' && f.id === 'spam')).toMatchObject({
      mid: 'max-b1:spam',
    });
    max.send({ type: 'typing', to: 'ana-b1' });
    max.send({ type: 'read', to: 'ana-b1', mids: ['ana-b1:before'] });
    // max's frames are routed in his order: once cleo has his next message, those before it were
    // routed too. cleo then writes to ana, behind anything routed to ana before.
    max.send({ type: 'message', id: 'to-cleo', to: 'cleo-b1', body: 'hi cleo' });
    await cleo.next((f) => f.mid === 'max-b1:to-cleo');
    cleo.send({ type: 'message', id: 'marker', to: 'ana-b1', body: 'after' });
    await ana.next((f) => f.mid === 'cleo-b1:marker');
    await new Promise((r) => setTimeout(r, 300));

    const fromMax = ana.frames.filter((f) => f.from === 'max-b1' || f.by === 'max-b1');
    expect(fromMax.filter((f) => f.type !== 'receipt' || f.status !== 'delivered')).toEqual([]); // max's acks still confirm delivery
    expect(
      max.frames.filter((f) => f.type === 'receipt' && (f.mids as string[]).includes('max-b1:spam')),
    ).toEqual([]);
    const synced = await clients.rest('ana-b1', 'GET', '/v1/messages');
    expect(synced.body.messages.filter((m: { from: string }) => m.from === 'max-b1')).toEqual([]);

    // Presence: ana is online, but not to max.
    const presenceOf = async (asker: string) =>
      (await clients.rest(asker, 'GET', '/v1/presence?users=ana-b1')).body.presence;
    expect(await presenceOf('cleo-b1')).toEqual([
      { user: 'ana-b1', online: true, lastSeen: expect.any(Number) },
    ]);
    expect(await presenceOf('max-b1')).toEqual([{ user: 'ana-b1', online: false, lastSeen: null }]);

    // Unblocked: what max sends once the routers have read the change (within two of their 1 s
    // polls) arrives; what he sent meanwhile does not.
    expect((await clients.rest('ana-b1', 'DELETE', '/v1/blocks/max-b1')).status).toBe(204);
    expect((await clients.rest('ana-b1', 'GET', '/v1/blocks')).body).toEqual({ blocked: [] });
    await new Promise((r) => setTimeout(r, 2100));
    max.send({ type: 'message', id: 'sorry', to: 'ana-b1', body: 'sorry' });
    await ana.next((f) => f.mid === 'max-b1:sorry');
    expect(ana.frames.filter((f) => f.mid === 'max-b1:spam')).toEqual([]);
    expect(await presenceOf('max-b1')).toEqual([
      { user: 'ana-b1', online: true, lastSeen: expect.any(Number) },
    ]);
  });

  it("still delivers a blocked user's messages in a group they share, refuses a new group of theirs with the blocker in it, and refuses blocking oneself", async () => {
    const ana = await clients.connect('ana-b2', { autoAck: true });
    const max = await clients.connect('max-b2', { autoAck: true });
    const created = await clients.rest('max-b2', 'POST', '/v1/groups', {
      id: 'blocked-club',
      name: 'Club',
      members: ['ana-b2'],
    });
    expect(created.status).toBe(201);
    expect((await clients.rest('ana-b2', 'PUT', '/v1/blocks/max-b2')).status).toBe(204);
    max.send({ type: 'message', id: 'g1', to: 'blocked-club', chat: 'group', body: 'to the group' });
    await ana.next((f) => f.mid === 'max-b2:g1');

    // A new group with ana in it would be a way round the block: refused, naming her.
    const another = await clients.rest('max-b2', 'POST', '/v1/groups', {
      id: 'blocked-club-2',
      name: 'Club 2',
      members: ['ana-b2'],
    });
    expect(another.status).toBe(403);
    expect(another.body.error).toEqual({
      code: 'forbidden',
      message: 'group blocked-club-2: you cannot add ana-b2',
    });

    const self = await clients.rest('ana-b2', 'PUT', '/v1/blocks/ana-b2');
    expect(self.status).toBe(400);
    expect(self.body.error.code).toBe('invalid_request');
  });

  it("files a report with the messages the reporter received, which moderators read from group-ms's internal API", async () => {
    const ana = await clients.connect('ana-r1', { autoAck: true });
    const max = await clients.connect('max-r1', { autoAck: true });
    max.send({ type: 'message', id: 'rude', to: 'ana-r1', body: { text: 'something rude' } });
    const received = await ana.next((f) => f.mid === 'max-r1:rude');

    const filed = await clients.rest('ana-r1', 'POST', '/v1/reports', {
      user: 'max-r1',
      reason: 'harassment',
      messages: [{ mid: received.mid, body: received.body, sentAt: received.sentAt }],
    });
    expect(filed.status).toBe(201);
    // Where `npm start` says moderators read them.
    const moderatorView = await fetch(fleet().urls.reports, {
      headers: { [INTERNAL_SECRET_HEADER]: DEV_INTERNAL_SECRET },
    });
    const { reports } = (await moderatorView.json()) as { reports: Array<Record<string, unknown>> };
    expect(reports.filter((r) => r.reporter === 'ana-r1')).toEqual([
      {
        id: filed.body.id,
        position: expect.any(Number),
        reporter: 'ana-r1',
        user: 'max-r1',
        reason: 'harassment',
        messages: [{ mid: 'max-r1:rude', body: { text: 'something rude' }, sentAt: received.sentAt }],
        at: filed.body.at,
      },
    ]);
    // Not for the app: the public API has no way to read reports.
    expect((await clients.rest('ana-r1', 'GET', '/v1/reports')).status).toBe(404);
    // max is not told, and can still write to ana (reporting is not blocking).
    max.send({ type: 'message', id: 'after', to: 'ana-r1', body: 'still here' });
    await ana.next((f) => f.mid === 'max-r1:after');
    expect(max.frames.filter((f) => JSON.stringify(f).includes('report'))).toEqual([]);
  });
});
