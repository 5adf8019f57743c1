import {
  compile,
  Deliverable,
  ErrorFrame,
  HelloFrame,
  AcceptedFrame,
  PongFrame,
  TypingNotice,
  parseClientFrame,
  validateClientFrame,
  validateSendableFrame,
  SendResponse,
  SyncResponse,
  Group,
  CreateGroupBody,
  RegisterDeviceBody,
  PresenceResponse,
  AddMembersBody,
  DevTokenBody,
  ErrorBody,
} from '@parley/contracts';

/** Every example of PROTOCOL.md, verbatim. */
const clientExamples = [
  '{"type":"message","id":"c1","to":"bob","chat":"direct","body":{"text":"hi"}}',
  '{"type":"message","id":"c2","to":"g1","chat":"group","body":{"text":"hi all"}}',
  '{"type":"ack","mids":["alice:c1"]}',
  '{"type":"read","to":"alice","mids":["alice:c1"]}',
  '{"type":"group","id":"c3","op":"create","group":"g1","name":"Team","members":["bob"]}',
  '{"type":"typing","to":"bob","chat":"direct"}',
  '{"type":"ping"}',
];

const serverExamples: Array<[string, Parameters<typeof compile>[0], string]> = [
  ['hello', HelloFrame, '{"type":"hello","user":"alice","connId":"c-1"}'],
  ['accepted', AcceptedFrame, '{"type":"accepted","id":"c1","mid":"alice:c1"}'],
  ['error', ErrorFrame, '{"type":"error","id":"c1","code":"rate_limited","message":"slow down"}'],
  ['pong', PongFrame, '{"type":"pong"}'],
  [
    'message',
    Deliverable,
    '{"type":"message","mid":"alice:c1","id":"c1","from":"alice","to":"bob","chat":"direct","body":{},"sentAt":1700000000000}',
  ],
  [
    'receipt',
    Deliverable,
    '{"type":"receipt","mid":"~dlv:bob:x","status":"delivered","mids":["alice:c1"],"by":"bob","at":1700000000000}',
  ],
  [
    'group',
    Deliverable,
    '{"type":"group","mid":"~g:alice:c3","op":"create","group":"g1","name":"Team","members":["alice","bob"],"by":"alice","at":1700000000000}',
  ],
  ['typing', TypingNotice, '{"type":"typing","from":"alice","to":"bob","chat":"direct"}'],
];

describe('PROTOCOL.md examples', () => {
  it.each(clientExamples)('client frame %s validates', (raw) => {
    const result = parseClientFrame(raw);
    expect(result).toMatchObject({ ok: true });
  });

  it.each(serverExamples)('server %s frame validates', (_name, schema, raw) => {
    expect(compile(schema)(JSON.parse(raw))).toEqual({ ok: true, value: JSON.parse(raw) });
  });

  it('REST bodies of the protocol validate', () => {
    const cases: Array<[Parameters<typeof compile>[0], unknown]> = [
      [SendResponse, { results: [{ index: 0, status: 'accepted', id: 'c1', mid: 'alice:c1' }, { index: 1, status: 'rejected', code: 'invalid_frame', message: 'to: is required' }] }],
      [SyncResponse, { messages: [], next: null }],
      [Group, { id: 'g1', name: 'Team', members: ['alice', 'bob'], admins: ['alice'], createdAt: 1700000000000 }],
      [CreateGroupBody, { name: 'Team', members: ['bob'] }],
      [AddMembersBody, { members: ['carol'] }],
      [RegisterDeviceBody, { token: 'fcm-token', platform: 'android' }],
      [PresenceResponse, { presence: [{ user: 'a', online: true, lastSeen: 1700000000000 }] }],
      [DevTokenBody, { user: 'alice' }],
      [ErrorBody, { error: { code: 'not_found', message: 'no such group' } }],
    ];
    for (const [schema, body] of cases) expect(compile(schema)(body)).toMatchObject({ ok: true });
  });

  it('defaults chat to direct', () => {
    const result = parseClientFrame('{"type":"message","id":"c1","to":"bob","body":1}');
    expect(result).toEqual({ ok: true, frame: { type: 'message', id: 'c1', to: 'bob', body: 1, chat: 'direct' } });
  });

  it('drops a client-supplied from and sentAt instead of trusting them', () => {
    const result = validateClientFrame({ type: 'message', id: 'c1', to: 'bob', body: 'x', from: 'mallory', sentAt: 1 });
    expect(result.ok && result.frame).toEqual({ type: 'message', id: 'c1', to: 'bob', body: 'x', chat: 'direct' });
  });
});

const long = 'x'.repeat(65);
const deep = (levels: number): unknown => (levels === 0 ? 1 : { a: deep(levels - 1) });

/** [description, frame, expected code, text the message must contain] */
const malformed: Array<[string, unknown, string, string]> = [
  ['not an object', 42, 'invalid_frame', 'frame: must be a JSON object'],
  ['an array', [], 'invalid_frame', 'frame: must be a JSON object'],
  ['null', null, 'invalid_frame', 'frame: must be a JSON object'],
  ['no type', { id: 'c1' }, 'invalid_frame', 'type: must be one of'],
  ['unknown type', { type: 'shout' }, 'invalid_frame', 'type: must be one of'],
  ['numeric type', { type: 1 }, 'invalid_frame', 'type: must be one of'],
  ['message without id', { type: 'message', to: 'bob', body: 1 }, 'invalid_frame', 'id: is required'],
  ['message without to', { type: 'message', id: 'c1', body: 1 }, 'invalid_frame', 'to: is required'],
  ['message without body', { type: 'message', id: 'c1', to: 'bob' }, 'invalid_frame', 'body: is required'],
  ['message to a bad user id', { type: 'message', id: 'c1', to: 'bo b', body: 1 }, 'invalid_frame', 'to: must match ^[A-Za-z0-9_.-]{1,64}$'],
  ['message to a too long user id', { type: 'message', id: 'c1', to: long, body: 1 }, 'invalid_frame', 'to: must match'],
  ['message id with a colon', { type: 'message', id: 'c:1', to: 'bob', body: 1 }, 'invalid_frame', 'id: must match ^[A-Za-z0-9_-]{1,64}$'],
  ['empty message id', { type: 'message', id: '', to: 'bob', body: 1 }, 'invalid_frame', 'id: must match'],
  ['numeric message id', { type: 'message', id: 7, to: 'bob', body: 1 }, 'invalid_frame', 'id: must be string'],
  ['unknown chat kind', { type: 'message', id: 'c1', to: 'bob', chat: 'channel', body: 1 }, 'invalid_frame', 'chat:'],
  ['body nested too deep', { type: 'message', id: 'c1', to: 'bob', body: deep(40) }, 'invalid_frame', 'body: must not be nested deeper than 32 levels'],
  ['ack without mids', { type: 'ack' }, 'invalid_frame', 'mids: is required'],
  ['ack with empty mids', { type: 'ack', mids: [] }, 'invalid_frame', 'mids: must NOT have fewer than 1 items'],
  ['ack with a non-string mid', { type: 'ack', mids: ['a:1', 5] }, 'invalid_frame', 'mids[1]: must be string'],
  ['ack with mids as a string', { type: 'ack', mids: 'a:1' }, 'invalid_frame', 'mids: must be array'],
  ['read without to', { type: 'read', mids: ['a:1'] }, 'invalid_frame', 'to: is required'],
  ['read without mids', { type: 'read', to: 'alice' }, 'invalid_frame', 'mids: is required'],
  ['group without op', { type: 'group', id: 'c3', group: 'g1' }, 'invalid_frame', 'op: must be one of create, add, remove, leave, rename'],
  ['group with unknown op', { type: 'group', id: 'c3', op: 'delete', group: 'g1' }, 'invalid_frame', 'op: must be one of'],
  ['group create without name', { type: 'group', id: 'c3', op: 'create', group: 'g1', members: [] }, 'invalid_frame', 'name: is required'],
  ['group create with empty name', { type: 'group', id: 'c3', op: 'create', group: 'g1', name: '' }, 'invalid_frame', 'name: must NOT have fewer than 1 characters'],
  ['group create with a bad member', { type: 'group', id: 'c3', op: 'create', group: 'g1', name: 'T', members: ['ok', 'b d'] }, 'invalid_frame', 'members[1]: must match'],
  ['group add without members', { type: 'group', id: 'c3', op: 'add', group: 'g1' }, 'invalid_frame', 'members: is required'],
  ['group remove with empty members', { type: 'group', id: 'c3', op: 'remove', group: 'g1', members: [] }, 'invalid_frame', 'members: must NOT have fewer than 1 items'],
  ['group rename without name', { type: 'group', id: 'c3', op: 'rename', group: 'g1' }, 'invalid_frame', 'name: is required'],
  ['group op without group', { type: 'group', id: 'c3', op: 'leave' }, 'invalid_frame', 'group: is required'],
  ['group op with a bad group id', { type: 'group', id: 'c3', op: 'leave', group: 'g/1' }, 'invalid_frame', 'group: must match'],
  ['group op without id', { type: 'group', op: 'leave', group: 'g1' }, 'invalid_frame', 'id: is required'],
  ['typing without to', { type: 'typing' }, 'invalid_frame', 'to: is required'],
];

describe('malformed frames', () => {
  it('has a table of at least 30 cases', () => expect(malformed.length).toBeGreaterThanOrEqual(30));

  it.each(malformed)('refuses %s', (_name, frame, code, text) => {
    const result = validateClientFrame(frame);
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.code).toBe(code);
    expect(result.message).toContain(text);
    expect(result.message).not.toMatch(/instancePath|schemaPath|#\//);
  });

  it('echoes the frame id in a refusal so the client can match it', () => {
    expect(validateClientFrame({ type: 'message', id: 'c9', to: '??', body: 1 })).toMatchObject({ ok: false, id: 'c9' });
  });

  it('refuses text that is not JSON', () => {
    expect(parseClientFrame('{"type":')).toMatchObject({ ok: false, code: 'invalid_frame', message: expect.stringContaining('frame: is not valid JSON') });
  });

  it('refuses a frame over the size limit before parsing it', () => {
    const raw = JSON.stringify({ type: 'message', id: 'c1', to: 'bob', body: 'x'.repeat(100) });
    expect(parseClientFrame(raw, { maxBytes: 50 })).toMatchObject({ ok: false, code: 'too_large', message: expect.stringContaining('at most 50 bytes') });
  });

  it('the REST edge refuses typing and ping', () => {
    expect(validateSendableFrame({ type: 'typing', to: 'bob' })).toMatchObject({ ok: false, message: 'type: must be one of message, ack, read, group' });
    expect(validateSendableFrame({ type: 'ping' })).toMatchObject({ ok: false });
    expect(validateSendableFrame({ type: 'ack', mids: ['a:1'] })).toMatchObject({ ok: true });
  });
});
