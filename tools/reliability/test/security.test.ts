import { SignJWT, UnsecuredJWT } from 'jose';
import { INTERNAL_SECRET_HEADER, INTERNAL_USER_HEADER } from '@parley/contracts';
import { issueToken } from '@parley/service-kit';
import { waitFor, WsTestClient } from '@parley/test-kit';
import { fleetSuite } from '../../../apps/launcher/test/helpers';

/** Nobody gets in as someone else, and bad input is answered, never fatal. */
describe('security', () => {
  const { clients, fleet } = fleetSuite({ logLevel: 'error' });
  const key = () => new TextEncoder().encode(fleet().jwtSecret);

  const badTokens = async (): Promise<Array<[string, string]>> => [
    ['a wrong key', await issueToken('a-different-secret-that-is-long-enough', 'alice')],
    [
      'an expired token',
      await new SignJWT({})
        .setProtectedHeader({ alg: 'HS256' })
        .setSubject('alice')
        .setExpirationTime(Math.floor(Date.now() / 1000) - 10)
        .sign(key()),
    ],
    ['alg none', new UnsecuredJWT({ sub: 'alice' }).setExpirationTime('1h').encode()],
    [
      'no sub',
      await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('1h').sign(key()),
    ],
  ];

  it('refuses bad tokens on both edges', async () => {
    for (const [what, token] of await badTokens()) {
      const ws = await WsTestClient.refusal(`${fleet().urls.ws}?token=${token}`);
      expect({ what, status: ws.status }).toEqual({ what, status: 401 });
      const rest = await fetch(`${fleet().urls.rest}/v1/messages`, {
        headers: { authorization: `Bearer ${token}` },
      });
      expect({ what, status: rest.status }).toEqual({ what, status: 401 });
    }
  });

  it("never lets a user read or ack another user's deliverables", async () => {
    const syncOf = async (user: string) =>
      (await clients.rest(user, 'GET', '/v1/messages')).body.messages.map((m: { mid: string }) => m.mid);
    const alice = await clients.connect('sec-alice', { autoAck: true });
    alice.send({ type: 'message', id: 's1', to: 'sec-bob', body: 'for bob only' });
    await waitFor(async () => (await syncOf('sec-bob')).length === 1, 10_000, 'stored for bob');
    // Mallory has a stored message of her own: her ack names it beside bob's, and once it is gone from
    // her sync the ack has gone all the way through (session-ms, then persistence-ms).
    alice.send({ type: 'message', id: 's2', to: 'sec-mallory', body: 'for mallory' });
    await waitFor(async () => (await syncOf('sec-mallory')).length === 1, 10_000, 'stored for mallory');
    expect(await syncOf('sec-mallory')).toEqual(['sec-alice:s2']);
    await clients.rest('sec-mallory', 'POST', '/v1/send', {
      type: 'ack',
      mids: ['sec-alice:s1', 'sec-alice:s2'],
    });
    await waitFor(async () => (await syncOf('sec-mallory')).length === 0, 10_000, "mallory's ack handled");
    expect(await syncOf('sec-bob')).toEqual(['sec-alice:s1']);
  });

  it("keeps non-members out of a group's messages and details", async () => {
    await clients.rest('sec-owner', 'POST', '/v1/groups', {
      id: 'sec-group',
      name: 'Private',
      members: ['sec-friend'],
    });
    expect((await clients.rest('sec-outsider', 'GET', '/v1/groups/sec-group')).status).toBe(404);
    expect(
      (
        await clients.rest('sec-outsider', 'POST', '/v1/groups/sec-group/members', {
          members: ['sec-outsider'],
        })
      ).status,
    ).toBe(404);
    const outsider = await clients.connect('sec-outsider', { autoAck: true });
    outsider.send({ type: 'message', id: 'x1', to: 'sec-group', chat: 'group', body: 'hi' });
    expect(await outsider.next((f) => f.type === 'error' && f.id === 'x1', 10_000)).toMatchObject({
      code: 'not_member',
    });
  });

  it('refuses internal endpoints without the internal secret', async () => {
    const { ports } = fleet();
    const calls: Array<[string, string, unknown?]> = [
      [
        `http://127.0.0.1:${ports.wsGatewayInternal}/send`,
        'POST',
        { deliveries: [{ to: 'x', frame: { type: 'typing', from: 'a', to: 'x', chat: 'direct' } }] },
      ],
      [`http://127.0.0.1:${ports.persistenceMs}/internal/messages`, 'GET'],
      [`http://127.0.0.1:${ports.groupMs}/internal/groups`, 'GET'],
      [`http://127.0.0.1:${ports.pushMs}/internal/devices/d1`, 'DELETE'],
      [`http://127.0.0.1:${ports.sessionMs}/internal/presence?users=a`, 'GET'],
      // The router decodes paths: an encoded letter must not walk around the check.
      [`http://127.0.0.1:${ports.groupMs}/%69nternal/groups`, 'GET'],
      [
        `http://127.0.0.1:${ports.wsGatewayInternal}/%73end`,
        'POST',
        { deliveries: [{ to: 'x', frame: { type: 'typing', from: 'a', to: 'x', chat: 'direct' } }] },
      ],
    ];
    for (const [url, method, body] of calls) {
      for (const secret of [undefined, 'wrong-secret-of-same-kind-xx']) {
        const headers: Record<string, string> = { [INTERNAL_USER_HEADER]: 'victim' };
        if (secret) headers[INTERNAL_SECRET_HEADER] = secret;
        if (body) headers['content-type'] = 'application/json';
        const res = await fetch(url, { method, headers, body: body ? JSON.stringify(body) : undefined });
        expect({ url, secret, status: res.status }).toEqual({ url, secret, status: 403 });
      }
    }
  });

  it('answers oversized, malformed and deeply nested input with clear errors', async () => {
    const headers = {
      authorization: `Bearer ${await clients.token('sec-carol')}`,
      'content-type': 'application/json',
    };
    const post = (body: string) => fetch(`${fleet().urls.rest}/v1/send`, { method: 'POST', headers, body });
    expect((await post('x'.repeat(1_100_000))).status).toBe(413);
    const malformed = await post('{"type":"message",');
    expect(malformed.status).toBe(400);
    expect(((await malformed.json()) as { error: { message: string } }).error.message).toContain(
      'not valid JSON',
    );
    const deep = await post(
      JSON.stringify({
        type: 'message',
        id: 'deep',
        to: 'bob',
        body: JSON.parse('['.repeat(100) + ']'.repeat(100)),
      }),
    );
    expect(((await deep.json()) as { results: unknown[] }).results[0]).toMatchObject({
      status: 'rejected',
      code: 'invalid_frame',
      message: expect.stringContaining('nested deeper'),
    });
    const deeper = await post(
      '{"type":"message","id":"deeper","to":"bob","body":' + '['.repeat(200_000) + ']'.repeat(200_000) + '}',
    );
    expect(deeper.status).toBe(200); // not a stack overflow answered with 500
    expect(((await deeper.json()) as { results: unknown[] }).results[0]).toMatchObject({
      status: 'rejected',
      code: 'invalid_frame',
      message: expect.stringContaining('nested deeper'),
    });

    const carol = await clients.connect('sec-carol');
    carol.send('{"type":"message",' + '['.repeat(5000));
    carol.send(
      JSON.stringify({
        type: 'message',
        id: 'deep2',
        to: 'bob',
        body: JSON.parse('{"a":'.repeat(60) + '1' + '}'.repeat(60)),
      }),
    );
    await carol.until(() => carol.ofType('error').length === 2);
    expect(carol.ofType('error').map((e) => e.code)).toEqual(['invalid_frame', 'invalid_frame']);
  });

  it('survives 10,000 fuzzed frames, answering every bad one, and stays up', async () => {
    // Bad frames spend rate tokens too: 25 sockets each send 400, the gateway's burst.
    const fuzzers = await Promise.all(
      Array.from({ length: 25 }, (_, k) => clients.connect(`sec-fuzzer-${k}`)),
    );
    const random = seeded(42);
    const pieces = [
      '{',
      '}',
      '[',
      ']',
      '"type"',
      ':',
      '"message"',
      '"ack"',
      '"group"',
      ',',
      '"to"',
      '"id"',
      '"mids"',
      'null',
      '1e999',
      '"\\u0000"',
      'true',
      '"op"',
      '"create"',
      '"x"',
    ];
    for (let i = 0; i < 10_000; i++) {
      const length = 1 + Math.floor(random() * 12);
      const text = Array.from({ length }, () => pieces[Math.floor(random() * pieces.length)]).join('');
      fuzzers[i % fuzzers.length]!.send(text);
      if (i % 500 === 499) await new Promise((r) => setTimeout(r, 5));
    }
    for (const fuzzer of fuzzers) {
      await fuzzer.until(() => fuzzer.frames.length >= 400 + 1, 30_000); // hello + one answer per frame
      const answers = fuzzer.frames.slice(1);
      expect(answers.filter((f) => f.type !== 'error' && f.type !== 'accepted')).toEqual([]);
      expect(answers.filter((f) => f.code === 'rate_limited')).toEqual([]);
    }
    const probe = await clients.connect('sec-probe');
    probe.send({ type: 'ping' });
    expect(await probe.next((f) => f.type === 'pong')).toEqual({ type: 'pong' });
  }, 60_000);
});

function seeded(seed: number): () => number {
  let state = seed;
  return () => (state = (state * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
}
