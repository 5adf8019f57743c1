import { InboundEvent, compile, TOPICS } from '@parley/contracts';
import { DecodeError, TopicCodec } from '@parley/kafka';
import { checkInbound, INBOUND_RECORDS, InboundRecord, route } from '../src/route';

const origin = {
  v: 1,
  kind: 'inbound',
  from: 'alice',
  deviceId: 'phone',
  connId: 'c-1',
  gateway: 'gw-1',
  sentAt: 1000,
} satisfies Omit<InboundRecord, 'frame'>;
const inbound = (frame: InboundEvent['frame']): InboundEvent => ({ ...origin, frame });
/** A record as a gateway may write it: its frame need not be one this router knows. */
const record = (frame: unknown, sentAt = origin.sentAt): InboundRecord => ({ ...origin, sentAt, frame });
const refusalOf = (frame: unknown, sentAt?: number) => {
  const checked = checkInbound(record(frame, sentAt));
  if (checked.ok) throw new Error(`routable: ${JSON.stringify(frame)}`);
  return checked.refusal;
};

describe('route', () => {
  it('sends a 1:1 message to the recipient with mid <from>:<id>', () => {
    const out = route(
      inbound({ type: 'message', id: 'c1', to: 'bob', chat: 'direct', body: { text: 'hi' } }),
    );
    expect(out.group).toEqual([]);
    expect(out.delivery).toEqual([
      {
        v: 1,
        kind: 'deliver',
        to: 'bob',
        frame: {
          type: 'message',
          mid: 'alice:c1',
          id: 'c1',
          from: 'alice',
          to: 'bob',
          chat: 'direct',
          body: { text: 'hi' },
          sentAt: 1000,
        },
      },
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
    expect(out.delivery).toEqual([
      { v: 1, kind: 'ack', user: 'alice', mids: ['bob:m1'], deviceId: 'phone', at: 1000 },
    ]);
  });

  it('turns a read frame into a read receipt for the original sender with a deterministic mid', () => {
    const a = route(inbound({ type: 'read', to: 'bob', mids: ['bob:m1', 'bob:m2'] }));
    const b = route(inbound({ type: 'read', to: 'bob', mids: ['bob:m1', 'bob:m2'] }));
    expect(a).toEqual(b);
    expect(a.delivery[0]).toMatchObject({
      kind: 'deliver',
      to: 'bob',
      frame: { type: 'receipt', status: 'read', by: 'alice', mids: ['bob:m1', 'bob:m2'] },
    });
    expect(a.delivery[0]).toMatchObject({ frame: { mid: expect.stringMatching(/^~read:alice:/) } });
  });

  it("forwards of a read only the mids `to` sent: a read addressed to a group id, or naming another's mids, tells nobody else", () => {
    const mixed = route(
      inbound({ type: 'read', to: 'bob', mids: ['bob:m1', 'carol:m2', '~err:bob:x', 'bob:m3'] }),
    );
    expect(mixed.delivery).toEqual([
      expect.objectContaining({ to: 'bob', frame: expect.objectContaining({ mids: ['bob:m1', 'bob:m3'] }) }),
    ]);
    // Addressed to the group, not to the sender of its message: the user named like the group hears nothing.
    expect(route(inbound({ type: 'read', to: 'team', mids: ['bob:g1'] }))).toEqual({
      delivery: [],
      group: [],
    });
  });

  it('marks direct typing ephemeral and sends group typing to the group topic', () => {
    expect(route(inbound({ type: 'typing', to: 'bob', chat: 'direct' })).delivery[0]).toMatchObject({
      ephemeral: true,
      frame: { type: 'typing', from: 'alice', to: 'bob' },
    });
    expect(route(inbound({ type: 'typing', to: 'g1', chat: 'group' })).group[0]).toMatchObject({
      kind: 'group-typing',
    });
  });

  it('forwards group operations as group commands', () => {
    const out = route(
      inbound({ type: 'group', id: 'c3', op: 'create', group: 'g1', name: 'Team', members: ['bob'] }),
    );
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
      // Each frame routes to one event: a frame routed to nothing would leave the checks below empty.
      expect([out.delivery.length, out.group.length].sort()).toEqual([0, 1]);
      for (const e of out.delivery) expect(delivery(e)).toMatchObject({ ok: true });
      for (const e of out.group) expect(group(e)).toMatchObject({ ok: true });
    }
  });
});

describe('checkInbound', () => {
  it('passes a frame it can route on to route, with its documented defaults filled in', () => {
    const checked = checkInbound(record({ type: 'message', id: 'c1', to: 'bob', body: 'hi' }));
    expect(checked).toEqual({
      ok: true,
      inbound: inbound({ type: 'message', id: 'c1', to: 'bob', chat: 'direct', body: 'hi' }),
    });
  });

  it('sends a frame type it does not know back to the sender as an error deliverable naming the type', () => {
    const refusal = refusalOf({ type: 'reaction', id: 'r1', to: 'bob', emoji: '+1' });
    expect(refusal).toEqual({
      v: 1,
      kind: 'deliver',
      to: 'alice',
      frame: {
        type: 'error',
        mid: '~err:alice:r1',
        id: 'r1',
        code: 'invalid_frame',
        message: 'cannot route this frame: type: must be one of message, ack, read, group, typing',
      },
    });
    expect(TOPICS.delivery.key(refusal)).toBe('alice');
  });

  it('refuses a group op, a chat kind or a frame shape it cannot handle, naming the field', () => {
    expect(refusalOf({ type: 'group', id: 'c4', op: 'archive', group: 'g1' }).frame).toMatchObject({
      id: 'c4',
      code: 'invalid_frame',
      message: 'cannot route this frame: op: must be one of create, add, remove, leave, rename',
    });
    expect(refusalOf({ type: 'message', id: 'c5', to: 'g1', chat: 'channel', body: 1 }).frame).toMatchObject({
      id: 'c5',
      message: expect.stringMatching(/^cannot route this frame: chat: must be/),
    });
    expect(refusalOf({ type: 'ping' }).frame).toMatchObject({
      message: expect.stringContaining('type: must be one of'),
    });
    expect(refusalOf('hello').frame).toMatchObject({
      message: 'cannot route this frame: frame: must be a JSON object',
    });
  });

  it('refuses a read that names no mid of its `to` (a read sent to a group id), naming the field', () => {
    expect(refusalOf({ type: 'read', id: 'r9', to: 'team', mids: ['bob:g1'] })).toEqual({
      v: 1,
      kind: 'deliver',
      to: 'alice',
      frame: {
        type: 'error',
        mid: '~err:alice:r9',
        id: 'r9',
        code: 'invalid_frame',
        message:
          'cannot route this frame: mids: none is a mid of "team" (<to>:<id>): send a read to the sender of the messages read',
      },
    });
    expect(checkInbound(record({ type: 'read', to: 'bob', mids: ['carol:1', 'bob:2'] })).ok).toBe(true);
  });

  it('gives a refusal without a usable id a mid that is deterministic in the frame and its time', () => {
    const emptyAck = { type: 'ack', mids: [] };
    const refusal = refusalOf(emptyAck);
    expect(refusal.frame).not.toHaveProperty('id');
    expect(refusal.frame).toMatchObject({
      mid: expect.stringMatching(/^~err:alice:1000:/),
      message: expect.stringContaining('mids:'),
    });
    expect(refusalOf(emptyAck).frame.mid).toBe(refusal.frame.mid);
    expect(refusalOf(emptyAck, 1001).frame.mid).not.toBe(refusal.frame.mid);
    expect(refusalOf({ type: 'ack', mids: [1] }).frame.mid).not.toBe(refusal.frame.mid);
    expect(refusalOf({ type: 'poke', id: 'no:colons here' }).frame).toMatchObject({
      id: 'no:colons here',
      mid: expect.stringMatching(/^~err:alice:1000:/),
    });
  });

  it('refuses a frame nested thousands deep without an id, instead of overflowing the stack on its mid', () => {
    // JSON.parse reads any depth, JSON.stringify overflows a few thousand levels down: such a record
    // (not one a Parley gateway writes, it refuses the frame) made every attempt throw, and the Kafka
    // bus serializes the event again to park it on the DLQ, so the record stalled its partition.
    let deep: unknown = 'x';
    for (let i = 0; i < 100_000; i++) deep = [deep];
    const frame = { type: 'ack', mids: deep };
    const refusal = refusalOf(frame);
    expect(refusal.frame).toMatchObject({
      mid: expect.stringMatching(/^~err:alice:1000:/),
      message: 'cannot route this frame: mids: must not be nested deeper than 32 levels',
    });
    expect(refusalOf(frame).frame.mid).toBe(refusal.frame.mid);
    expect(refusalOf({ ...frame, id: 'not an id' }).frame).toMatchObject({ id: 'not an id' });
    expect(refusalOf({ ...frame, note: 1 }).frame.mid).not.toBe(refusal.frame.mid);
  });

  it('only ever produces refusals that validate against the delivery topic schema', () => {
    const delivery = compile(TOPICS.delivery.schema);
    const frames = [
      { type: 'reaction', id: 'r1' },
      { type: 'group', id: 'c4', op: 'archive' },
      { type: 'ack', mids: [] },
      { type: 'x', id: 'i'.repeat(500) },
      null,
      [],
    ];
    for (const frame of frames) expect(delivery(refusalOf(frame))).toMatchObject({ ok: true });
  });

  it('leaves a record with no readable sender, or a version it does not know, undecodable: the bus parks it on the DLQ', () => {
    const codec = new TopicCodec(INBOUND_RECORDS);
    const decode = (value: unknown) => () => codec.decode(Buffer.from(JSON.stringify(value)));
    expect(decode(record({ type: 'reaction' }))).not.toThrow();
    expect(decode({ ...record({ type: 'reaction' }), from: undefined })).toThrow(DecodeError);
    expect(decode({ ...record({ type: 'message' }), v: 2 })).toThrow(DecodeError);
    expect(decode({ v: 1, kind: 'inbound', from: 'alice', sentAt: 1000 })).toThrow(DecodeError);
  });
});
