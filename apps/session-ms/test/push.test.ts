import { Deliverable, GatewayDelivery, MAX_DELIVERY_CONN_IDS, PushedFrame } from '@parley/contracts';
import { callRounds, deliveriesByGateway } from '../src/push';
import type { Connection, Pending } from '../src/store/session-store';

const typing: PushedFrame = { type: 'typing', from: 'alice', to: 'bob', chat: 'direct' };
const delivery = (to: string, n: number): GatewayDelivery => ({ to, connIds: [`${to}-${n}`], frame: typing });
const message = (mid: string): Deliverable => ({
  type: 'message',
  mid,
  id: mid,
  from: 'alice',
  to: 'bob',
  chat: 'direct',
  body: { text: mid },
  sentAt: 1,
});
const pending = (mid: string, attempts: number, stored = false): Pending => ({
  user: 'bob',
  mid,
  frame: message(mid),
  attempts,
  stored,
});
const device = (connId: string, gatewayUrl: string): Connection => ({
  user: 'bob',
  connId,
  gateway: gatewayUrl,
  gatewayUrl,
  at: 1,
});

describe('callRounds', () => {
  it("keeps each user's deliveries in one call, in order, and fills calls up to the max", () => {
    const rounds = callRounds(
      [delivery('a', 1), delivery('b', 1), delivery('a', 2), delivery('c', 1), delivery('c', 2)],
      3,
    );
    expect(rounds).toEqual([
      [
        [delivery('a', 1), delivery('a', 2), delivery('b', 1)],
        [delivery('c', 1), delivery('c', 2)],
      ],
    ]);
  });

  it('spreads a user with more than the max over rounds, a round after another, in order', () => {
    const ofA = [1, 2, 3, 4, 5].map((n) => delivery('a', n));
    expect(callRounds([...ofA, delivery('b', 1)], 2)).toEqual([
      [[ofA[0], ofA[1]], [delivery('b', 1)]],
      [[ofA[2], ofA[3]]],
      [[ofA[4]]],
    ]);
  });

  it('makes no round of no deliveries', () => {
    expect(callRounds([], 10)).toEqual([]);
  });
});

describe('deliveriesByGateway', () => {
  it("makes one delivery per gateway of the user's devices, and marks only those of first pushes of tracked deliverables, each with its message", () => {
    const connections = new Map([
      [
        'bob',
        [device('phone', 'http://gw-1'), device('tablet', 'http://gw-2'), device('laptop', 'http://gw-1')],
      ],
    ]);
    const first = pending('alice:m1', 1);
    const retry = pending('alice:m2', 2);
    const replay = pending('alice:m3', 1, true);
    const { byGateway, firstPushes } = deliveriesByGateway(
      [first, retry, replay, { user: 'bob', frame: typing }, { user: 'carol', frame: typing }],
      connections,
    );
    expect([...byGateway.keys()]).toEqual(['http://gw-1', 'http://gw-2']);
    expect(byGateway.get('http://gw-1')).toEqual(
      [first, retry, replay, { frame: typing }].map(({ frame }) => ({
        to: 'bob',
        connIds: ['phone', 'laptop'],
        frame,
      })),
    );
    expect(byGateway.get('http://gw-2')!.map((d) => d.connIds)).toEqual([
      ['tablet'],
      ['tablet'],
      ['tablet'],
      ['tablet'],
    ]);
    // Both of its gateways' deliveries name the message: timed once, at the first to answer (Delivery's tests).
    expect([...firstPushes]).toEqual([
      [byGateway.get('http://gw-1')![0], first],
      [byGateway.get('http://gw-2')![0], first],
    ]);
  });

  it("splits a user's connections on one gateway past MAX_DELIVERY_CONN_IDS (what /send takes) over deliveries of the same frame", () => {
    const many = Array.from({ length: MAX_DELIVERY_CONN_IDS + 2 }, (_, i) => device(`c${i}`, 'http://gw-1'));
    const first = pending('alice:m1', 1);
    const { byGateway, firstPushes } = deliveriesByGateway([first], new Map([['bob', many]]));
    const connIds = many.map((c) => c.connId);
    expect(byGateway.get('http://gw-1')).toEqual([
      { to: 'bob', connIds: connIds.slice(0, MAX_DELIVERY_CONN_IDS), frame: first.frame },
      { to: 'bob', connIds: connIds.slice(MAX_DELIVERY_CONN_IDS), frame: first.frame },
    ]);
    expect([...firstPushes.values()]).toEqual([first, first]);
  });
});
