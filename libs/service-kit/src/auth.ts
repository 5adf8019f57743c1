import { createRemoteJWKSet, errors, jwtVerify, SignJWT, JWTVerifyGetKey } from 'jose';
import { Type, TProperties } from '@sinclair/typebox';
import { ParleyError, USER_ID_PATTERN } from '@parley/contracts';

export const DEV_JWT_SECRET = 'parley-dev-secret-change-me-0123456789';

export const AuthConfig = {
  JWT_SECRET: Type.String({ minLength: 32, default: DEV_JWT_SECRET, description: 'HS256 secret' }),
  JWT_JWKS_URL: Type.Optional(
    Type.String({ format: 'uri', description: 'Verify RS256/ES256 tokens from this JWKS' }),
  ),
  JWT_ISSUER: Type.Optional(
    Type.String({ description: "The tokens' `iss` must be this (checked when set)" }),
  ),
  JWT_AUDIENCE: Type.Optional(
    Type.String({
      description:
        "The tokens' `aud` must hold this; required with JWT_JWKS_URL (an identity provider signs for every application with one key set)",
    }),
  ),
} satisfies TProperties;

export interface AuthSettings {
  JWT_SECRET: string;
  JWT_JWKS_URL?: string;
  JWT_ISSUER?: string;
  JWT_AUDIENCE?: string;
}

export interface Identity {
  user: string;
  expiresAt?: number;
}

export type TokenVerifier = (token: string | undefined) => Promise<Identity>;

const userIdPattern = new RegExp(USER_ID_PATTERN);

/**
 * How far a token's `nbf` may lie ahead of this host's clock: the identity provider that minted it
 * runs on another host, and a token it stamps `nbf` = now is presented at once (a login, a refresh
 * before a reconnect). Without it, a provider's clock a second ahead made every fresh token
 * `unauthorized` for that second, and the app was sent back to its login. `exp` gets no tolerance:
 * a socket is closed at `exp` by this host's clock, and a token accepted past it would be closed at
 * its first frame.
 */
export const JWT_NOT_BEFORE_TOLERANCE_S = 60;

/**
 * Verifies a bearer token: HS256 with the secret, or RS256/ES256 from the JWKS when configured.
 * `alg: none` and any algorithm outside that list are refused by jose.
 */
export function createTokenVerifier(settings: AuthSettings): TokenVerifier {
  if (settings.JWT_JWKS_URL && !settings.JWT_AUDIENCE)
    throw new Error(
      "JWT_JWKS_URL needs JWT_AUDIENCE (the audience your identity provider puts in Parley's tokens): it signs tokens for every application with the same keys, so without it a token minted for another application would log its subject in to Parley",
    );
  const jwks: JWTVerifyGetKey | undefined = settings.JWT_JWKS_URL
    ? createRemoteJWKSet(new URL(settings.JWT_JWKS_URL))
    : undefined;
  const secret = new TextEncoder().encode(settings.JWT_SECRET);
  const options = {
    algorithms: jwks ? ['RS256', 'ES256'] : ['HS256'],
    issuer: settings.JWT_ISSUER,
    audience: settings.JWT_AUDIENCE,
    // A token without an expiry would be a password that never changes: stolen once, good for good.
    requiredClaims: ['exp'],
    // jose applies one tolerance to `nbf` and `exp` alike: `exp` is checked again below, without it.
    clockTolerance: JWT_NOT_BEFORE_TOLERANCE_S,
  };
  return async (token) => {
    if (!token) throw new ParleyError('unauthorized', 'missing bearer token');
    let payload;
    try {
      ({ payload } = jwks ? await jwtVerify(token, jwks, options) : await jwtVerify(token, secret, options));
    } catch (err) {
      // A JWKS that cannot be fetched says nothing about the token: 401 would send apps to log in again.
      if (jwks && isJwksUnreachable(err))
        throw new ParleyError('unavailable', `the token's keys could not be fetched: ${jwksFault(err)}`);
      if (err instanceof errors.JWTExpired && typeof err.payload.exp === 'number')
        throw expired(err.payload.exp);
      throw new ParleyError('unauthorized', `invalid token: ${(err as Error).message}`);
    }
    if (payload.exp !== undefined && payload.exp * 1000 <= Date.now()) throw expired(payload.exp);
    if (typeof payload.sub !== 'string' || !userIdPattern.test(payload.sub)) {
      throw new ParleyError('unauthorized', `invalid token: sub must match ${USER_ID_PATTERN}`);
    }
    return { user: payload.sub, expiresAt: payload.exp ? payload.exp * 1000 : undefined };
  };
}

/**
 * An expired token, told apart from an invalid one: an app refreshes it and reconnects, where a
 * token wrongly signed or malformed sends its user back to sign in.
 */
function expired(exp: number): ParleyError {
  return new ParleyError(
    'unauthorized',
    `token expired at ${new Date(exp * 1000).toISOString()}: get a new one`,
  );
}

/**
 * jose's faults of the JWKS endpoint (a timeout, an answer other than 200 or not a key set) and
 * the network's (fetch's own errors), as opposed to the token's faults, which all have codes of
 * their own (JWT_*, JWS_*, an algorithm not allowed, no key with the token's kid).
 */
function isJwksUnreachable(err: unknown): boolean {
  if (!(err instanceof errors.JOSEError)) return true;
  return (
    err.code === 'ERR_JWKS_TIMEOUT' || err.code === 'ERR_JWKS_INVALID' || err.code === 'ERR_JOSE_GENERIC'
  );
}

/**
 * Why the JWKS could not be fetched, as a client may read it: jose's own words, or the network
 * error's code alone. Its message names the address it failed on (`connect ECONNREFUSED
 * 10.0.3.7:8443`, `getaddrinfo ENOTFOUND keycloak.auth.svc`), which anyone presenting a token with
 * a new `kid` was shown.
 */
function jwksFault(err: unknown): string {
  if (err instanceof errors.JOSEError) return err.message;
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : 'the request failed';
}

/** A token for `POST /v1/dev/token` (dev mode only) and for tests. */
export async function issueToken(
  secret: string,
  user: string,
  ttlSeconds = 24 * 3600,
  claims: DevTokenClaims = {},
): Promise<string> {
  const jwt = new SignJWT({})
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject(user)
    .setIssuedAt()
    .setExpirationTime(Math.floor(Date.now() / 1000) + ttlSeconds);
  if (claims.issuer) jwt.setIssuer(claims.issuer);
  if (claims.audience) jwt.setAudience(claims.audience);
  return jwt.sign(new TextEncoder().encode(secret));
}

/** The `iss` and `aud` a dev token carries: those the verifier checks (JWT_ISSUER, JWT_AUDIENCE). */
export interface DevTokenClaims {
  issuer?: string;
  audience?: string;
}

/** `Authorization: Bearer <jwt>`, or `?token=<jwt>` where headers cannot be set (browsers' WebSocket). */
export function bearerToken(
  authorization: string | undefined,
  queryToken?: string | null,
): string | undefined {
  const match = authorization ? /^Bearer\s+(.+)$/i.exec(authorization) : null;
  return match?.[1] ?? queryToken ?? undefined;
}
