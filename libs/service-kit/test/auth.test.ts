import { SignJWT, UnsecuredJWT, generateKeyPair, exportJWK, KeyLike } from 'jose';
import { createServer, Server } from 'node:http';
import { AddressInfo } from 'node:net';
import { bearerToken, createTokenVerifier, DEV_JWT_SECRET, issueToken } from '@parley/service-kit';

const secret = DEV_JWT_SECRET;
const verify = createTokenVerifier({ JWT_SECRET: secret });
const key = (s: string) => new TextEncoder().encode(s);

describe('token verification (HS256)', () => {
  it('accepts a valid token and returns its subject', async () => {
    await expect(verify(await issueToken(secret, 'alice'))).resolves.toMatchObject({ user: 'alice' });
  });

  it("accepts a fresh token whose nbf is a few seconds ahead of this host's clock (the identity provider's clock runs ahead), and none minutes ahead", async () => {
    const now = Math.floor(Date.now() / 1000);
    const notBefore = (seconds: number) =>
      new SignJWT({})
        .setProtectedHeader({ alg: 'HS256' })
        .setSubject('alice')
        .setIssuedAt(now + seconds)
        .setNotBefore(now + seconds)
        .setExpirationTime(now + seconds + 3600)
        .sign(key(secret));
    await expect(verify(await notBefore(5))).resolves.toMatchObject({ user: 'alice' });
    await expect(verify(await notBefore(600))).rejects.toThrow('invalid token');
  });

  it("refuses a token past its exp by this host's clock, with no tolerance (the socket would be closed at its first frame)", async () => {
    const expired = await new SignJWT({})
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject('alice')
      .setExpirationTime(Math.floor(Date.now() / 1000) - 2)
      .sign(key(secret));
    await expect(verify(expired)).rejects.toThrow(/^token expired at /);
  });

  const exp60sAgo = Math.floor(Date.now() / 1000) - 60;
  it.each([
    ['missing', async () => undefined, 'missing bearer token'],
    [
      'signed with another key',
      async () => issueToken('another-secret-that-is-long-enough!!', 'alice'),
      'invalid token',
    ],
    [
      'expired',
      async () =>
        new SignJWT({})
          .setProtectedHeader({ alg: 'HS256' })
          .setSubject('alice')
          .setExpirationTime(exp60sAgo)
          .sign(key(secret)),
      // Told apart from an invalid token: an app refreshes it rather than signing its user out.
      `token expired at ${new Date(exp60sAgo * 1000).toISOString()}: get a new one`,
    ],
    ['alg none', async () => new UnsecuredJWT({ sub: 'alice' }).encode(), 'invalid token'],
    [
      'without sub',
      async () =>
        new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('1h').sign(key(secret)),
      'sub must match',
    ],
    ['with an invalid sub', async () => issueToken(secret, 'a b'), 'sub must match'],
    [
      'without an expiry (stolen once, it would be good for good)',
      async () => new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject('alice').sign(key(secret)),
      'missing required "exp" claim',
    ],
    ['garbage', async () => 'not.a.jwt', 'invalid token'],
  ])('refuses a token %s', async (_name, make, message) => {
    await expect(verify(await make())).rejects.toMatchObject({
      code: 'unauthorized',
      message: expect.stringContaining(message),
    });
  });
});

describe('token verification (JWKS)', () => {
  let server: Server;
  let url: string;
  let privateKey: KeyLike;

  beforeAll(async () => {
    const pair = await generateKeyPair('ES256');
    privateKey = pair.privateKey as KeyLike;
    const jwk = { ...(await exportJWK(pair.publicKey)), kid: 'k1', alg: 'ES256' };
    server = createServer((_req, res) =>
      res.setHeader('content-type', 'application/json').end(JSON.stringify({ keys: [jwk] })),
    );
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks.json`;
  });
  afterAll(() => new Promise((resolve) => server.close(resolve)));

  it('accepts an ES256 token signed by a key in the JWKS and refuses an HS256 one', async () => {
    const verifyJwks = createTokenVerifier({ JWT_SECRET: secret, JWT_JWKS_URL: url, JWT_AUDIENCE: 'parley' });
    const token = await new SignJWT({})
      .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
      .setSubject('bob')
      .setAudience('parley')
      .setExpirationTime('1h')
      .sign(privateKey);
    await expect(verifyJwks(token)).resolves.toMatchObject({ user: 'bob' });
    await expect(verifyJwks(await issueToken(secret, 'bob'))).rejects.toMatchObject({ code: 'unauthorized' });
    await expect(verifyJwks('not.a.jwt')).rejects.toMatchObject({ code: 'unauthorized' });
  });

  // A JWKS is usually an identity provider's, shared by every application it signs for: without an
  // audience, a token the provider minted for any other application (same key set) is a Parley login.
  it('takes no token minted by the JWKS for another application: a JWKS without JWT_AUDIENCE is refused', async () => {
    expect(() => createTokenVerifier({ JWT_SECRET: secret, JWT_JWKS_URL: url })).toThrow(
      /JWT_JWKS_URL needs JWT_AUDIENCE/,
    );
    const tokenFor = (audience: string) =>
      new SignJWT({})
        .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
        .setSubject('bob')
        .setAudience(audience)
        .setExpirationTime('1h')
        .sign(privateKey);
    const verifyJwks = createTokenVerifier({ JWT_SECRET: secret, JWT_JWKS_URL: url, JWT_AUDIENCE: 'parley' });
    await expect(verifyJwks(await tokenFor('some-other-app'))).rejects.toMatchObject({
      code: 'unauthorized',
      message: expect.stringMatching(/aud/),
    });
    await expect(verifyJwks(await tokenFor('parley'))).resolves.toMatchObject({ user: 'bob' });
  });

  it('answers unavailable, not unauthorized, when the JWKS cannot be fetched or is not a key set, naming no address', async () => {
    const token = await new SignJWT({})
      .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
      .setSubject('bob')
      .setExpirationTime('1h')
      .sign(privateKey);
    const broken = createServer((_req, res) => res.writeHead(502).end('bad gateway'));
    await new Promise<void>((resolve) => broken.listen(0, '127.0.0.1', resolve));
    const closedPort = (broken.address() as AddressInfo).port + 1; // most likely nothing listens there
    try {
      for (const jwksUrl of [
        `http://127.0.0.1:${(broken.address() as AddressInfo).port}/jwks.json`,
        `http://127.0.0.1:${closedPort}/jwks.json`,
      ]) {
        const verifyJwks = createTokenVerifier({
          JWT_SECRET: secret,
          JWT_JWKS_URL: jwksUrl,
          JWT_AUDIENCE: 'parley',
        });
        await expect(verifyJwks(token)).rejects.toMatchObject({ code: 'unavailable' });
      }
      // The address it failed on stays inside: whoever presented the token reads the message.
      const unreachable = createTokenVerifier({
        JWT_SECRET: secret,
        JWT_JWKS_URL: `http://127.0.0.1:${closedPort}/jwks.json`,
        JWT_AUDIENCE: 'parley',
      });
      await expect(unreachable(token)).rejects.toMatchObject({
        message: "the token's keys could not be fetched: ECONNREFUSED",
      });
    } finally {
      await new Promise((resolve) => broken.close(resolve));
    }
  });
});

describe('bearerToken', () => {
  it('reads the Authorization header, then the query token', () => {
    expect(bearerToken('Bearer abc')).toBe('abc');
    expect(bearerToken(undefined, 'q')).toBe('q');
    expect(bearerToken('Basic x', null)).toBeUndefined();
  });
});
