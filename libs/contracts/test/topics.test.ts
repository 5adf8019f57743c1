import {
  deliveriesIn,
  deliverToMany,
  MAX_CONN_ID_LENGTH,
  MAX_RECIPIENTS_PER_EVENT,
  recipientCount,
  TOPICS,
  dlqTopic,
  compile,
  userMid,
  serverMid,
  receiptMid,
  USER_ID_PATTERN,
  ERROR_CODES,
  statusOf,
} from '@parley/contracts';

describe('topics and keys', () => {
  const message = { type: 'message' as const, id: 'c1', to: 'bob', chat: 'direct' as const, body: {} };

  it('keys inbound frames by sender', () => {
    expect(TOPICS.inbound.key({ v: 1, kind: 'inbound', from: 'alice', sentAt: 1, frame: message })).toBe(
      'alice',
    );
  });

  it('keys delivery traffic by the user who must act on it', () => {
    const deliverable = { ...message, mid: 'alice:c1', from: 'alice', sentAt: 1 };
    expect(TOPICS.delivery.key({ v: 1, kind: 'deliver', to: 'bob', frame: deliverable })).toBe('bob');
    expect(TOPICS.delivery.key({ v: 1, kind: 'ack', user: 'bob', mids: ['alice:c1'], at: 1 })).toBe('bob');
  });

  it("reads an error deliverable whose code a later release added, and refuses one not of a code's form", () => {
    const validate = compile(TOPICS.delivery.schema);
    const error = (code: string) => ({
      v: 1 as const,
      kind: 'deliver' as const,
      to: 'alice',
      frame: {
        type: 'error' as const,
        mid: '~err:alice:c1',
        id: 'c1',
        code: code as 'internal',
        message: 'no',
      },
    });
    expect(validate(error('too_many_groups')).ok).toBe(true);
    expect(validate(error('brand_new_code')).ok).toBe(true);
    for (const malformed of ['', 'Not_A_Code', 'has space', 'x'.repeat(65)])
      expect(validate(error(malformed)).ok).toBe(false);
    expect([
      statusOf('conflict'),
      statusOf('brand_new_code' as 'internal'),
      statusOf('constructor' as 'internal'),
    ]).toEqual([409, 500, 500]);
  });

  it('keys a deliver-many by its first recipient, and accepts 1 to MAX_RECIPIENTS_PER_EVENT of them', () => {
    const frame = { type: 'typing' as const, from: 'alice', to: 'g1', chat: 'group' as const };
    const many = (to: string[]) => ({ v: 1 as const, kind: 'deliver-many' as const, to, frame });
    expect(TOPICS.delivery.key(many(['bob', 'carol']))).toBe('bob');
    const validate = compile(TOPICS.delivery.schema);
    expect(validate(many(['bob'])).ok).toBe(true);
    expect(validate(many([])).ok).toBe(false);
    const users = Array.from({ length: MAX_RECIPIENTS_PER_EVENT + 1 }, (_, i) => `u${i}`);
    expect(validate(many(users.slice(1))).ok).toBe(true);
    expect(validate(many(users)).ok).toBe(false);
  });

  it('keys group traffic by group id', () => {
    const groupMessage = {
      v: 1 as const,
      kind: 'group-message' as const,
      from: 'alice',
      sentAt: 1,
      frame: { ...message, to: 'g1', chat: 'group' as const },
    };
    const op = { type: 'group' as const, id: 'c3', op: 'leave' as const, group: 'g2' };
    expect(TOPICS.group.key(groupMessage)).toBe('g1');
    expect(TOPICS.group.key({ v: 1, kind: 'group-command', from: 'alice', sentAt: 1, frame: op })).toBe('g2');
    expect(
      TOPICS.groupCommands.key({ v: 1, kind: 'group-command', from: 'alice', sentAt: 1, frame: op }),
    ).toBe('g2');
  });

  it('keys offline traffic by recipient', () => {
    expect(TOPICS.offline.key({ v: 1, kind: 'offline-ack', user: 'bob', mids: ['x'], at: 1 })).toBe('bob');
  });

  it('names every topic uniquely, with a DLQ beside it', () => {
    const names = Object.values(TOPICS).map((t) => t.name);
    expect(new Set(names).size).toBe(names.length);
    expect(dlqTopic(TOPICS.inbound.name)).toBe('parley.inbound.v1.dlq');
  });

  it('tells a union apart by its tag: checks the branch it names, and names the tags it knows', () => {
    const validate = compile(TOPICS.delivery.schema);
    const deliver = (frame: object) => validate({ v: 1, kind: 'deliver', to: 'bob', frame });
    expect(deliver({ type: 'typing', from: 'alice', to: 'bob', chat: 'direct' }).ok).toBe(true);
    expect(deliver({ type: 'error', mid: '~err:bob:c1', code: 'not_member', message: 'no' }).ok).toBe(true);
    expect(deliver({ type: 'error', code: 'not_member', message: 'no' })).toEqual({
      ok: false,
      errors: ['frame.mid: is required'], // an error deliverable needs its mid (an intersection's part)
    });
    expect(deliver({ type: 'nope' })).toEqual({
      ok: false,
      errors: ['frame.type: must be one of "message", "receipt", "group", "error", "typing"'],
    });
    expect(validate({ v: 1, kind: 'nope', user: 'bob' })).toEqual({
      ok: false,
      errors: ['kind: must be one of "deliver", "deliver-many", "ack"'],
    });
    expect(validate({ v: 1, user: 'bob' })).toEqual({ ok: false, errors: ['kind: is required'] });
    expect(validate({ v: 1, kind: 7, user: 'bob' })).toEqual({
      ok: false,
      errors: ['kind: must be a string'],
    });
  });

  it('tells apart a union nested under one tag (the group ops of an inbound frame) by its own tag', () => {
    const validate = compile(TOPICS.inbound.schema);
    const inbound = (frame: object) => validate({ v: 1, kind: 'inbound', from: 'alice', sentAt: 1, frame });
    expect(inbound({ type: 'group', id: 'g1', op: 'leave', group: 'crew' }).ok).toBe(true);
    expect(inbound({ type: 'typing', to: 'bob', chat: 'direct' }).ok).toBe(true);
    expect(inbound({ type: 'group', id: 'g1', op: 'explode', group: 'crew' })).toEqual({
      ok: false,
      errors: ['frame.op: must be one of "create", "add", "remove", "leave", "rename"'],
    });
    expect(inbound({ type: 'nope' })).toEqual({
      ok: false,
      errors: ['frame.type: must be one of "message", "ack", "read", "group", "typing"'],
    });
  });

  it('fills no defaults in a union: a deliverable without its chat is refused, not made direct', () => {
    const validate = compile(TOPICS.delivery.schema);
    const frame = {
      type: 'message',
      mid: 'alice:c1',
      id: 'c1',
      from: 'alice',
      to: 'g1',
      body: 'hi',
      sentAt: 1,
    };
    const event = { v: 1, kind: 'deliver', to: 'bob', frame };
    expect(validate(event)).toEqual({ ok: false, errors: ['frame.chat: is required'] });
    expect(frame).not.toHaveProperty('chat');
  });

  it('refuses a connection event whose connId is longer than /send takes one (MAX_CONN_ID_LENGTH)', () => {
    const validate = compile(TOPICS.connections.schema);
    const up = (connId: string) => ({
      v: 1,
      kind: 'connection-up',
      user: 'bob',
      connId,
      gateway: 'gw-1',
      gatewayUrl: 'http://gw-1:9080',
      at: 1,
    });
    expect(validate(up('c'.repeat(MAX_CONN_ID_LENGTH))).ok).toBe(true);
    expect(validate(up('c'.repeat(MAX_CONN_ID_LENGTH + 1)))).toEqual({
      ok: false,
      errors: [`connId: must NOT have more than ${MAX_CONN_ID_LENGTH} characters`],
    });
  });

  it('refuses an event of an unknown version', () => {
    const validate = compile(TOPICS.delivery.schema);
    expect(validate({ v: 1, kind: 'ack', user: 'bob', mids: ['a:1'], at: 1 }).ok).toBe(true);
    expect(validate({ v: 2, kind: 'ack', user: 'bob', mids: ['a:1'], at: 1 }).ok).toBe(false);
  });
});

describe('deliverToMany and deliveriesIn', () => {
  const frame = { type: 'typing' as const, from: 'alice', to: 'g1', chat: 'group' as const };
  const users = Array.from({ length: 10 }, (_, i) => `u${i}`);
  const partitionOf = (user: string) => Number(user.slice(1)) % 3;

  it('puts each recipient once, in the event of its partition, keyed on that partition', () => {
    const events = deliverToMany(users, frame, partitionOf);
    expect(events.map((e) => e.to)).toEqual([
      ['u0', 'u3', 'u6', 'u9'],
      ['u1', 'u4', 'u7'],
      ['u2', 'u5', 'u8'],
    ]);
    for (const event of events) {
      expect(event.to.every((to) => partitionOf(to) === partitionOf(TOPICS.delivery.key(event)))).toBe(true);
      expect(event.frame).toBe(frame);
      expect(event).not.toHaveProperty('ephemeral');
    }
  });

  it('gives each recipient an event of its own where the partitions are not known', () => {
    const events = deliverToMany(['u1', 'u2', 'u3'], frame, undefined, { maxPerEvent: 500 });
    expect(events.map((e) => [TOPICS.delivery.key(e), e.to])).toEqual([
      ['u1', ['u1']],
      ['u2', ['u2']],
      ['u3', ['u3']],
    ]);
  });

  it('splits a partition past maxPerEvent, and marks ephemeral ones', () => {
    const events = deliverToMany(users, frame, () => 0, { maxPerEvent: 4, ephemeral: true });
    expect(events.map((e) => e.to.length)).toEqual([4, 4, 2]);
    expect(events.every((e) => e.ephemeral === true)).toBe(true);
  });

  it('expands a deliver-many into one deliver per recipient, sharing the frame; an ack into none', () => {
    const [event] = deliverToMany(['bob', 'carol'], frame, () => 0, { ephemeral: true });
    expect(deliveriesIn(event)).toEqual([
      { v: 1, kind: 'deliver', to: 'bob', frame, ephemeral: true },
      { v: 1, kind: 'deliver', to: 'carol', frame, ephemeral: true },
    ]);
    const single = { v: 1 as const, kind: 'deliver' as const, to: 'bob', frame };
    expect(deliveriesIn(single)).toEqual([single]);
    expect(deliveriesIn({ v: 1, kind: 'ack', user: 'bob', mids: ['a:1'], at: 1 })).toEqual([]);
    expect([event, single].map(recipientCount)).toEqual([2, 1]);
    expect(recipientCount({ v: 1, kind: 'ack', user: 'bob', mids: ['a:1'], at: 1 })).toBe(0);
  });
});

describe('message ids', () => {
  it('derives a user mid deterministically', () => expect(userMid('alice', 'c1')).toBe('alice:c1'));

  it('derives a receipt mid from its mids, the same in every release (a replayed ack is one receipt)', () => {
    expect(receiptMid('delivered', 'bob', ['alice:c1', 'alice:c2'])).toBe('~dlv:bob:dOz0PiSL9jquHt_1Dd7leb');
    expect(receiptMid('read', 'bob', ['alice:c1'])).toMatch(/^~read:bob:[\w-]{22}$/);
  });

  it('server mids can never look like <user>:<id>', () => {
    const mid = serverMid('dlv', 'bob', 'alice:c1');
    expect(mid.split(':')[0]).not.toMatch(new RegExp(USER_ID_PATTERN));
  });
});

describe('error codes', () => {
  it('maps every code to an HTTP status', () => {
    for (const code of Object.keys(ERROR_CODES) as Array<keyof typeof ERROR_CODES>) {
      expect(statusOf(code)).toBeGreaterThanOrEqual(400);
    }
    expect(statusOf('rate_limited')).toBe(429);
    expect(statusOf('unavailable')).toBe(503);
  });
});
