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
  DevTokenResponse,
  ErrorBody,
  GroupList,
  SendRequest,
  SyncQuery,
  PresenceQuery,
  DeviceParams,
  GroupMemberParams,
  GroupParams,
  createAjv,
  describeInputErrors,
  withoutIds,
  InputPart,
  MAX_SEND_BATCH,
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
      [
        SendResponse,
        {
          results: [
            { index: 0, status: 'accepted', id: 'c1', mid: 'alice:c1' },
            { index: 1, status: 'rejected', code: 'invalid_frame', message: 'to: is required' },
          ],
        },
      ],
      [SyncResponse, { messages: [], next: null }],
      [
        Group,
        { id: 'g1', name: 'Team', members: ['alice', 'bob'], admins: ['alice'], createdAt: 1700000000000 },
      ],
      [CreateGroupBody, { name: 'Team', members: ['bob'] }],
      [AddMembersBody, { members: ['carol'] }],
      [RegisterDeviceBody, { token: 'fcm-token', platform: 'android' }],
      [PresenceResponse, { presence: [{ user: 'a', online: true, lastSeen: 1700000000000 }] }],
      [DevTokenBody, { user: 'alice' }],
      [DevTokenResponse, { token: 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln' }],
      [
        GroupList,
        {
          groups: [
            {
              id: 'g1',
              name: 'Team',
              members: ['alice', 'bob'],
              admins: ['alice'],
              createdAt: 1700000000000,
            },
          ],
        },
      ],
      [GroupList, { groups: [] }],
      [ErrorBody, { error: { code: 'not_found', message: 'no such group' } }],
    ];
    for (const [schema, body] of cases) expect(compile(schema)(body)).toMatchObject({ ok: true });
  });

  it('defaults chat to direct', () => {
    const result = parseClientFrame('{"type":"message","id":"c1","to":"bob","body":1}');
    expect(result).toEqual({
      ok: true,
      frame: { type: 'message', id: 'c1', to: 'bob', body: 1, chat: 'direct' },
    });
  });

  it('drops a client-supplied from and sentAt instead of trusting them', () => {
    const result = validateClientFrame({
      type: 'message',
      id: 'c1',
      to: 'bob',
      body: 'x',
      from: 'mallory',
      sentAt: 1,
    });
    expect(result.ok && result.frame).toEqual({
      type: 'message',
      id: 'c1',
      to: 'bob',
      body: 'x',
      chat: 'direct',
    });
  });
});

const long = 'x'.repeat(65);
const deep = (levels: number): unknown => (levels === 0 ? 1 : { a: deep(levels - 1) });

/** [description, frame, expected code, text the message must contain] */
const malformed: Array<[string, unknown, string, string]> = [
  ['not an object', 42, 'invalid_frame', 'frame: must be a JSON object'],
  ['an array', [], 'invalid_frame', 'frame: must be a JSON object'],
  ['null', null, 'invalid_frame', 'frame: must be a JSON object'],
  ['no type', { id: 'c1' }, 'invalid_frame', 'type: is required and must be one of message, ack'],
  ['unknown type', { type: 'shout' }, 'invalid_frame', 'type: must be one of'],
  ['numeric type', { type: 1 }, 'invalid_frame', 'type: must be one of'],
  [
    'a group op every object inherits',
    { type: 'group', id: 'c1', op: 'constructor' },
    'invalid_frame',
    'op: must be one of',
  ],
  [
    'a group op naming the prototype',
    { type: 'group', id: 'c1', op: '__proto__', ok: true, value: { type: 'group' } },
    'invalid_frame',
    'op: must be one of',
  ],
  ['message without id', { type: 'message', to: 'bob', body: 1 }, 'invalid_frame', 'id: is required'],
  ['message without to', { type: 'message', id: 'c1', body: 1 }, 'invalid_frame', 'to: is required'],
  ['message without body', { type: 'message', id: 'c1', to: 'bob' }, 'invalid_frame', 'body: is required'],
  [
    'message to a bad user id',
    { type: 'message', id: 'c1', to: 'bo b', body: 1 },
    'invalid_frame',
    'to: must match ^[A-Za-z0-9_.-]{1,64}$',
  ],
  [
    'message to a too long user id',
    { type: 'message', id: 'c1', to: long, body: 1 },
    'invalid_frame',
    'to: must match',
  ],
  [
    'message id with a colon',
    { type: 'message', id: 'c:1', to: 'bob', body: 1 },
    'invalid_frame',
    'id: must match ^[A-Za-z0-9_-]{1,64}$',
  ],
  ['empty message id', { type: 'message', id: '', to: 'bob', body: 1 }, 'invalid_frame', 'id: must match'],
  [
    'numeric message id',
    { type: 'message', id: 7, to: 'bob', body: 1 },
    'invalid_frame',
    'id: must be string',
  ],
  [
    'unknown chat kind',
    { type: 'message', id: 'c1', to: 'bob', chat: 'channel', body: 1 },
    'invalid_frame',
    'chat: must be one of "direct", "group"',
  ],
  [
    'body nested too deep',
    { type: 'message', id: 'c1', to: 'bob', body: deep(40) },
    'invalid_frame',
    'body: must not be nested deeper than 32 levels',
  ],
  [
    'a field no schema names nested too deep (it would overflow serializing the event)',
    { type: 'ack', mids: ['alice:c1'], meta: deep(40) },
    'invalid_frame',
    'meta: must not be nested deeper than 32 levels',
  ],
  ['ack without mids', { type: 'ack' }, 'invalid_frame', 'mids: is required'],
  [
    'ack with empty mids',
    { type: 'ack', mids: [] },
    'invalid_frame',
    'mids: must NOT have fewer than 1 items',
  ],
  [
    'ack with a non-string mid',
    { type: 'ack', mids: ['a:1', 5] },
    'invalid_frame',
    'mids[1]: must be string',
  ],
  ['ack with mids as a string', { type: 'ack', mids: 'a:1' }, 'invalid_frame', 'mids: must be array'],
  ['read without to', { type: 'read', mids: ['a:1'] }, 'invalid_frame', 'to: is required'],
  ['read without mids', { type: 'read', to: 'alice' }, 'invalid_frame', 'mids: is required'],
  [
    'group without op',
    { type: 'group', id: 'c3', group: 'g1' },
    'invalid_frame',
    'op: must be one of create, add, remove, leave, rename',
  ],
  [
    'group with unknown op',
    { type: 'group', id: 'c3', op: 'delete', group: 'g1' },
    'invalid_frame',
    'op: must be one of',
  ],
  [
    'group create without name',
    { type: 'group', id: 'c3', op: 'create', group: 'g1', members: [] },
    'invalid_frame',
    'name: is required',
  ],
  [
    'group create with empty name',
    { type: 'group', id: 'c3', op: 'create', group: 'g1', name: '' },
    'invalid_frame',
    'name: must NOT have fewer than 1 characters',
  ],
  [
    'group create with a bad member',
    { type: 'group', id: 'c3', op: 'create', group: 'g1', name: 'T', members: ['ok', 'b d'] },
    'invalid_frame',
    'members[1]: must match',
  ],
  [
    'group add without members',
    { type: 'group', id: 'c3', op: 'add', group: 'g1' },
    'invalid_frame',
    'members: is required',
  ],
  [
    'group remove with empty members',
    { type: 'group', id: 'c3', op: 'remove', group: 'g1', members: [] },
    'invalid_frame',
    'members: must NOT have fewer than 1 items',
  ],
  [
    'group rename to a name with a line break',
    { type: 'group', id: 'c3', op: 'rename', group: 'g1', name: 'two\nlines' },
    'invalid_frame',
    'name: must match',
  ],
  [
    'group rename without name',
    { type: 'group', id: 'c3', op: 'rename', group: 'g1' },
    'invalid_frame',
    'name: is required',
  ],
  ['group op without group', { type: 'group', id: 'c3', op: 'leave' }, 'invalid_frame', 'group: is required'],
  [
    'group op with a bad group id',
    { type: 'group', id: 'c3', op: 'leave', group: 'g/1' },
    'invalid_frame',
    'group: must match',
  ],
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
    expect(validateClientFrame({ type: 'message', id: 'c9', to: '??', body: 1 })).toMatchObject({
      ok: false,
      id: 'c9',
    });
  });

  it('refuses text that is not JSON', () => {
    expect(parseClientFrame('{"type":')).toMatchObject({
      ok: false,
      code: 'invalid_frame',
      message: expect.stringContaining('frame: is not valid JSON'),
    });
  });

  it('refuses a frame over the size limit before parsing it', () => {
    const raw = JSON.stringify({ type: 'message', id: 'c1', to: 'bob', body: 'x'.repeat(100) });
    expect(parseClientFrame(raw, { maxBytes: 50 })).toMatchObject({
      ok: false,
      code: 'too_large',
      message: expect.stringContaining('at most 50 bytes'),
    });
  });

  it('measures a frame as the server writes it, as POST /v1/send does: numbers such as 1e20 are written out in full', () => {
    const numbers = `{"type":"message","id":"n1","to":"bob","body":[${Array(1000).fill('1e20').join(',')}]}`;
    expect(Buffer.byteLength(numbers)).toBeLessThan(5100); // 22 KB as the server writes it
    expect(parseClientFrame(numbers, { maxBytes: 8192 })).toEqual({
      ok: false,
      code: 'too_large',
      message: 'frame: must be at most 8192 bytes (got 22048) as the server writes it',
      id: 'n1',
    });
    // Text the server writes shorter (spaces, escapes) is measured as it came.
    const spaced = JSON.stringify({ type: 'message', id: 'n2', to: 'bob', body: 'é'.repeat(2000) }, null, 2);
    expect(parseClientFrame(spaced, { maxBytes: 8192 })).toMatchObject({ ok: true });
  });

  it('the REST edge refuses typing and ping', () => {
    expect(validateSendableFrame({ type: 'typing', to: 'bob' })).toMatchObject({
      ok: false,
      message: 'type: must be one of message, ack, read, group',
    });
    expect(validateSendableFrame({ type: 'ping' })).toMatchObject({ ok: false });
    expect(validateSendableFrame({ type: 'ack', mids: ['a:1'] })).toMatchObject({ ok: true });
  });
});

const ack = { type: 'ack', mids: ['a:1'] };
const batch = (n: number) => Array.from({ length: n }, () => ack);
const users = (n: number) =>
  Array.from({ length: n }, (_, i) => `user-${String(i).padStart(59, '0')}`).join(',');

/** [description, schema, where the input came from, input, text the message must contain] */
const malformedRest: Array<[string, Parameters<typeof compile>[0], InputPart, unknown, string]> = [
  [
    'POST /v1/send: a batch over 100 frames',
    SendRequest,
    'body',
    batch(MAX_SEND_BATCH + 1),
    'body: must NOT have more than 100 items',
  ],
  ['POST /v1/send: an empty batch', SendRequest, 'body', [], 'body: must NOT have fewer than 1 items'],
  ['POST /v1/send: a string', SendRequest, 'body', 'hello', 'body: must be object or array'],
  ['POST /v1/groups: no name', CreateGroupBody, 'body', { members: [] }, 'name: is required'],
  [
    'POST /v1/groups: an empty name',
    CreateGroupBody,
    'body',
    { name: '', members: [] },
    'name: must NOT have fewer than 1 characters',
  ],
  [
    'POST /v1/groups: a name with a NUL character (Postgres refuses it)',
    CreateGroupBody,
    'body',
    { name: 'a\u0000b', members: [] },
    'name: must match ^[^\\u0000-\\u001F\\u007F-\\u009F\\uD800-\\uDFFF]+$',
  ],
  [
    'POST /v1/groups: a name with a C1 line break (U+0085: a name is one line)',
    CreateGroupBody,
    'body',
    { name: 'line1\u0085line2', members: [] },
    'name: must match ^[^\\u0000-\\u001F\\u007F-\\u009F\\uD800-\\uDFFF]+$',
  ],
  [
    'POST /v1/groups: a name with half of a surrogate pair (no UTF-8 store can hold it)',
    CreateGroupBody,
    'body',
    { name: 'Team \ud83d', members: [] },
    'name: must match',
  ],
  [
    'POST /v1/groups: a name over 200 characters',
    CreateGroupBody,
    'body',
    { name: 'n'.repeat(201), members: [] },
    'name: must NOT have more than 200 characters',
  ],
  [
    'POST /v1/groups: a numeric name',
    CreateGroupBody,
    'body',
    { name: 7, members: [] },
    'name: must be string',
  ],
  [
    'POST /v1/groups: members as a string',
    CreateGroupBody,
    'body',
    { name: 'Team', members: 'bob' },
    'members: must be array',
  ],
  [
    'POST /v1/groups: a bad member id',
    CreateGroupBody,
    'body',
    { name: 'Team', members: ['bob', 'b b'] },
    'members[1]: must match ^[A-Za-z0-9_.-]{1,64}$',
  ],
  [
    'POST /v1/groups: over 1024 members',
    CreateGroupBody,
    'body',
    { name: 'Team', members: Array.from({ length: 1025 }, (_, i) => `u${i}`) },
    'members: must NOT have more than 1024 items',
  ],
  [
    'POST /v1/groups: a bad group id',
    CreateGroupBody,
    'body',
    { id: 'g/1', name: 'Team', members: [] },
    'id: must match',
  ],
  [
    'POST /v1/groups/:id/members: empty members',
    AddMembersBody,
    'body',
    { members: [] },
    'members: must NOT have fewer than 1 items',
  ],
  [
    'POST /v1/groups/:id/members: a numeric member',
    AddMembersBody,
    'body',
    { members: [42] },
    'members[0]: must be string',
  ],
  ['GET /v1/groups/:id: a bad group id', GroupParams, 'params', { id: '../admin' }, 'params id: must match'],
  [
    'DELETE /v1/groups/:id/members/:user: a bad user',
    GroupMemberParams,
    'params',
    { id: 'g1', user: 'a b' },
    'params user: must match',
  ],
  [
    'PUT /v1/devices/:deviceId: a bad device id',
    DeviceParams,
    'params',
    { deviceId: 'phone#1' },
    'params deviceId: must match',
  ],
  ['PUT /v1/devices: no token', RegisterDeviceBody, 'body', { platform: 'ios' }, 'token: is required'],
  [
    'PUT /v1/devices: an empty token',
    RegisterDeviceBody,
    'body',
    { token: '', platform: 'ios' },
    'token: must NOT have fewer than 1 characters',
  ],
  [
    'PUT /v1/devices: a token over 4096 characters',
    RegisterDeviceBody,
    'body',
    { token: 't'.repeat(4097), platform: 'ios' },
    'token: must NOT have more than 4096 characters',
  ],
  [
    'PUT /v1/devices: an unknown platform',
    RegisterDeviceBody,
    'body',
    { token: 't', platform: 'symbian' },
    'platform: must be one of "android", "ios", "web"',
  ],
  ['PUT /v1/devices: no platform', RegisterDeviceBody, 'body', { token: 't' }, 'platform: is required'],
  [
    'PUT /v1/devices: a token with a space or a NUL character',
    RegisterDeviceBody,
    'body',
    { token: 'a b\u0000', platform: 'web' },
    'token: must match ^[!-~]+$',
  ],
  ['GET /v1/messages: limit 0', SyncQuery, 'querystring', { limit: 0 }, 'query limit: must be >= 1'],
  [
    'GET /v1/messages: limit over 500',
    SyncQuery,
    'querystring',
    { limit: 501 },
    'query limit: must be <= 500',
  ],
  [
    'GET /v1/messages: a fractional limit',
    SyncQuery,
    'querystring',
    { limit: 1.5 },
    'query limit: must be integer',
  ],
  [
    'GET /v1/messages: a cursor over 200 characters',
    SyncQuery,
    'querystring',
    { after: 'c'.repeat(201) },
    'query after: must NOT have more than 200 characters',
  ],
  ['GET /v1/presence: no users', PresenceQuery, 'querystring', {}, 'query users: is required'],
  [
    'GET /v1/presence: empty users',
    PresenceQuery,
    'querystring',
    { users: '' },
    'query users: must NOT have fewer than 1 characters',
  ],
  [
    'GET /v1/presence: too many users',
    PresenceQuery,
    'querystring',
    { users: users(201) },
    'query users: must NOT have more than 13000 characters',
  ],
  ['POST /v1/dev/token: a bad user', DevTokenBody, 'body', { user: 'a b' }, 'user: must match'],
];

/** Validates a REST input as the rest-gateway does, with the message it answers. */
function refusal(schema: Parameters<typeof compile>[0], part: InputPart, input: unknown): string | undefined {
  const check = createAjv().compile(withoutIds(schema));
  return check(input) ? undefined : describeInputErrors(check.errors ?? [], part);
}

describe('malformed REST bodies, queries and params', () => {
  it('has a table of at least 30 cases covering every schema a REST call takes', () => {
    expect(malformedRest.length).toBeGreaterThanOrEqual(30);
    const inputs = [
      SendRequest,
      CreateGroupBody,
      AddMembersBody,
      GroupParams,
      GroupMemberParams,
      DeviceParams,
      RegisterDeviceBody,
      SyncQuery,
      PresenceQuery,
      DevTokenBody,
    ];
    expect(inputs.filter((schema) => !malformedRest.some(([, tested]) => tested === schema))).toEqual([]);
  });

  it.each(malformedRest)('refuses %s', (_name, schema, part, input, text) => {
    const message = refusal(schema, part, input);
    expect(message).toContain(text);
    expect(message).not.toMatch(/instancePath|schemaPath|#\/|\(root\)|anyOf/);
  });

  it('takes a group name of any printable text, emoji included, over REST and WebSocket alike', () => {
    expect(refusal(CreateGroupBody, 'body', { name: 'Team 😀 ünïcode', members: [] })).toBeUndefined();
    const create = { type: 'group', id: 'c1', op: 'create', group: 'g1', members: [] };
    expect(validateClientFrame({ ...create, name: 'Team 😀' })).toMatchObject({ ok: true });
    expect(validateClientFrame({ ...create, name: '\udfff' })).toMatchObject({
      ok: false,
      code: 'invalid_frame',
      message: expect.stringMatching(/^name: must match/),
    });
  });

  it('accepts the largest batch and the most users the limits allow', () => {
    expect(refusal(SendRequest, 'body', batch(MAX_SEND_BATCH))).toBeUndefined();
    expect(refusal(PresenceQuery, 'querystring', { users: users(200) })).toBeUndefined();
  });
});
