import { InboundEvent, compile, TOPICS } from '@parley/contracts';
import { route } from '../src/route';

const inbound = (frame: InboundEvent['frame']): InboundEvent => ({ v: 1, kind: 'inbound', from: 'alice', deviceId: 'phone', connId: 'c-1', gateway: 'gw-1', sentAt: 1000, frame });

describe('route', () => {
  it('sends a 1:1 message to the recipient with mid <from>:<id>', () => {
    const out = route(inbound({ type: 'message', id: 'c1', to: 'bob', chat: 'direct', body: { text: 'hi' } }));
    expect(out.group).toEqual([]);
    expect(out.delivery).toEqual([
      { v: 1, kind: 'deliver', to: 'bob', frame: { type: 'message', mid: 'alice:c1', id: 'c1', from: 'alice', to: 'bob', chat: 'direct', body: { text: 'hi' }, sentAt: 1000 } },
    ]);
    expect(TOPICS.delivery.key(out.delivery[0])).toBe('bob');
  });

  it('sends a group message to the group topic keyed by group id', () => {
    const out = route(inbound({ type: 'message', id: 'c2', to: 'g1', chat: 'group', body: 1 }));
    expect(out.delivery).toEqual([]);
    expect(out.group[0]).toMatchObject({ kind: 'group-message', from: 'alice', frame: { to: 'g1' } });
    expect(TOPICS.group.key(out.group[0])).toBe('g1');
  });

  it('turns an ack into an ack event keyed by the acking user', () => {
    const out = route(inbound({ type: 'ack', mids: ['bob:m1'] }));
    expect(out.delivery).toEqual([{ v: 1, kind: 'ack', user: 'alice', mids: ['bob:m1'], deviceId: 'phone', at: 1000 }]);
  });

  it('turns a read frame into a read receipt for the original sender with a deterministic mid', () => {
    const a = route(inbound({ type: 'read', to: 'bob', mids: ['bob:m1', 'bob:m2'] }));
    const b = route(inbound({ type: 'read', to: 'bob', mids: ['bob:m1', 'bob:m2'] }));
    expect(a).toEqual(b);
    expect(a.delivery[0]).toMatchObject({ kind: 'deliver', to: 'bob', frame: { type: 'receipt', status: 'read', by: 'alice', mids: ['bob:m1', 'bob:m2'] } });
    expect(a.delivery[0]).toMatchObject({ frame: { mid: expect.stringMatching(/^~read:alice:/) } });
  });

  it('marks direct typing ephemeral and sends group typing to the group topic', () => {
    expect(route(inbound({ type: 'typing', to: 'bob', chat: 'direct' })).delivery[0]).toMatchObject({ ephemeral: true, frame: { type: 'typing', from: 'alice', to: 'bob' } });
    expect(route(inbound({ type: 'typing', to: 'g1', chat: 'group' })).group[0]).toMatchObject({ kind: 'group-typing' });
  });

  it('forwards group operations as group commands', () => {
    const out = route(inbound({ type: 'group', id: 'c3', op: 'create', group: 'g1', name: 'Team', members: ['bob'] }));
    expect(out.group[0]).toMatchObject({ kind: 'group-command', frame: { op: 'create', group: 'g1' } });
  });

  it('only ever produces events that validate against their topic schema', () => {
    const frames: InboundEvent['frame'][] = [
      { type: 'message', id: 'c1', to: 'bob', chat: 'direct', body: null },
      { type: 'message', id: 'c2', to: 'g1', chat: 'group', body: [] },
      { type: 'ack', mids: ['x:1'] },
      { type: 'read', to: 'bob', mids: ['bob:1'] },
      { type: 'typing', to: 'bob', chat: 'direct' },
      { type: 'group', id: 'c3', op: 'leave', group: 'g1' },
    ];
    const delivery = compile(TOPICS.delivery.schema);
    const group = compile(TOPICS.group.schema);
    for (const frame of frames) {
      const out = route(inbound(frame));
      for (const e of out.delivery) expect(delivery(e)).toMatchObject({ ok: true });
      for (const e of out.group) expect(group(e)).toMatchObject({ ok: true });
    }
  });
});
