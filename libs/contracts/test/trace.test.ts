import { deliveredReceipts, deliverToMany, errorDeliverable, tracePointsOf } from '../src';

const message = {
  type: 'message',
  mid: 'alice:c1',
  from: 'alice',
  to: 'bob',
  body: 'hi',
  sentAt: 1,
} as const;

describe('trace points of events', () => {
  it("name a message's sender and recipient, and its mid, on every topic it crosses", () => {
    const origin = { v: 1, from: 'alice', sentAt: 1 };
    expect(
      tracePointsOf({
        ...origin,
        kind: 'inbound',
        frame: { type: 'message', id: 'c1', to: 'bob', body: 'hi' },
      }),
    ).toEqual({ users: ['alice', 'bob'], mids: ['alice:c1'] });
    expect(tracePointsOf({ v: 1, kind: 'deliver', to: 'bob', frame: message })).toEqual({
      users: ['bob', 'alice', 'alice'],
      mids: ['alice:c1'],
    });
    expect(tracePointsOf({ v: 1, kind: 'offline', to: 'bob', frame: message, at: 1 })?.mids).toEqual([
      'alice:c1',
    ]);
  });

  it('name the senders of what an ack or a receipt acknowledges', () => {
    expect(tracePointsOf({ v: 1, kind: 'ack', user: 'bob', mids: ['alice:c1', '~dlv:x:y'], at: 1 })).toEqual({
      users: ['bob', 'alice'],
      mids: ['alice:c1', '~dlv:x:y'],
    });
    const [receipt] = deliveredReceipts('bob', ['alice:c1'], 1);
    const points = tracePointsOf(receipt);
    expect(points?.users).toEqual(expect.arrayContaining(['alice', 'bob']));
    expect(points?.mids).toEqual([(receipt!.frame as { mid: string }).mid, 'alice:c1']);
  });

  it("name every recipient of a group's fan-out, and the sender of an error", () => {
    const [many] = deliverToMany(['m1', 'm2'], { ...message, to: 'g1', chat: 'group' } as never, () => 0);
    expect(tracePointsOf(many)?.users).toEqual(expect.arrayContaining(['m1', 'm2', 'alice']));
    const error = errorDeliverable('alice', { code: 'not_found', message: 'no such group', id: 'g1' });
    expect(tracePointsOf(error)).toEqual({ users: ['alice'], mids: ['~err:alice:g1'] });
  });

  it('has none for events that carry no message of a user', () => {
    expect(tracePointsOf({ v: 1, kind: 'gateway-heartbeat', gateway: 'g' })).toBeUndefined();
    expect(tracePointsOf({ v: 1, kind: 'group-changed', group: 'g', at: 1 })).toBeUndefined();
    expect(tracePointsOf('not an event')).toBeUndefined();
  });
});
