import { Type } from '@sinclair/typebox';
import {
  AuthConfig,
  CommonConfig,
  ConfigError,
  InternalConfig,
  loadConfig,
  productionProblems,
  publicDevSecretsIn,
  readableFile,
} from '@parley/service-kit';

const schema = Type.Object({
  ...CommonConfig,
  PORT: Type.Integer({ minimum: 1, maximum: 65535, default: 8080 }),
  REDIS_URL: Type.String({ pattern: '^redis://' }),
  RETRIES: Type.Integer({ minimum: 0, default: 3 }),
  DEV_MODE: Type.Boolean({ default: false }),
});

describe('loadConfig', () => {
  it('coerces values and fills defaults', () => {
    const config = loadConfig('svc', schema, { PORT: '9000', REDIS_URL: 'redis://x', DEV_MODE: 'true' });
    expect(config).toMatchObject({
      PORT: 9000,
      REDIS_URL: 'redis://x',
      RETRIES: 3,
      DEV_MODE: true,
      LOG_LEVEL: 'info',
    });
  });

  it('reports every problem at once, naming each variable and what it got', () => {
    let error: unknown;
    try {
      loadConfig('svc', schema, { PORT: 'eighty', RETRIES: '-1', LOG_LEVEL: 'loud' });
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const { problems, message } = error as ConfigError;
    expect(problems).toEqual(
      expect.arrayContaining([
        'REDIS_URL: is required',
        expect.stringMatching(/^PORT: must be integer \(got "eighty"\)$/),
        expect.stringMatching(/^RETRIES: must be >= 0/),
        'LOG_LEVEL: must be one of "fatal", "error", "warn", "info", "debug", "trace", "silent" (got "loud")',
      ]),
    );
    expect(problems).toHaveLength(4); // one line per variable
    expect(message).toContain('svc: invalid configuration');
  });

  it('treats an empty variable as unset', () => {
    expect(loadConfig('svc', schema, { REDIS_URL: 'redis://x', PORT: '' }).PORT).toBe(8080);
  });

  it('refuses a secret set but empty, which would fall back to a public development secret', () => {
    const secrets = Type.Object({ ...AuthConfig, ...InternalConfig });
    let error: unknown;
    try {
      loadConfig('t', secrets, { JWT_SECRET: '', INTERNAL_SECRET: '' }); // from unset shell variables
    } catch (err) {
      error = err;
    }
    expect((error as ConfigError).problems).toEqual([
      'JWT_SECRET: is set but empty; give it a value, or unset it for the development default',
      'INTERNAL_SECRET: is set but empty; give it a value, or unset it for the development default',
    ]);
    expect(loadConfig('t', secrets, { JWT_JWKS_URL: '' }).JWT_JWKS_URL).toBeUndefined(); // "off" stays allowed
  });

  // operations.md: an invalid configuration stops the app at start, exit 2, every problem listed. A
  // JWKS without an audience was refused only when main.ts built the token verifier, after Kafka
  // connected: exit 1 ("failed to start"), after the other problems had been reported alone.
  it('refuses JWT_JWKS_URL without JWT_AUDIENCE among the configuration problems', () => {
    const auth = Type.Object({ ...AuthConfig, PORT: Type.Integer({ minimum: 1 }) });
    let error: unknown;
    try {
      loadConfig('gw', auth, { JWT_JWKS_URL: 'https://idp.example/jwks', PORT: 'x' });
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).problems).toEqual([
      expect.stringMatching(/^PORT: must be integer/),
      expect.stringMatching(/^JWT_AUDIENCE: is required with JWT_JWKS_URL/),
    ]);
    const withAudience = { JWT_JWKS_URL: 'https://idp.example/jwks', JWT_AUDIENCE: 'parley', PORT: '1' };
    expect(loadConfig('gw', auth, withAudience).JWT_AUDIENCE).toBe('parley');
  });

  it('refuses a file setting naming a file it cannot read, with the other problems, at start', () => {
    const files = Type.Object({ REDIS_TLS_CA_FILE: Type.Optional(readableFile({})) });
    expect(() => loadConfig('s', files, { REDIS_TLS_CA_FILE: '/nonexistent/ca.pem' })).toThrow(
      expect.objectContaining({
        problems: ['REDIS_TLS_CA_FILE: must match format "readable-file" (got "/nonexistent/ca.pem")'],
      }),
    );
    expect(() => loadConfig('s', files, { REDIS_TLS_CA_FILE: __dirname })).toThrow(ConfigError); // a directory
    expect(loadConfig('s', files, { REDIS_TLS_CA_FILE: __filename }).REDIS_TLS_CA_FILE).toBe(__filename);
  });

  it('refuses KAFKA_SASL_MECHANISM without the user and password to log in with', () => {
    const kafka = Type.Object({
      KAFKA_SASL_MECHANISM: Type.Optional(Type.Literal('plain')),
      KAFKA_SASL_USERNAME: Type.Optional(Type.String()),
      KAFKA_SASL_PASSWORD: Type.Optional(Type.String()),
    });
    expect(() => loadConfig('mr', kafka, { KAFKA_SASL_MECHANISM: 'plain' })).toThrow(
      expect.objectContaining({
        problems: [
          expect.stringMatching(/^KAFKA_SASL_USERNAME: is required with KAFKA_SASL_MECHANISM/),
          expect.stringMatching(/^KAFKA_SASL_PASSWORD: is required with KAFKA_SASL_MECHANISM/),
        ],
      }),
    );
    const credentials = {
      KAFKA_SASL_MECHANISM: 'plain',
      KAFKA_SASL_USERNAME: 'parley',
      KAFKA_SASL_PASSWORD: 'pw',
    };
    expect(loadConfig('mr', kafka, credentials).KAFKA_SASL_USERNAME).toBe('parley');
    expect(loadConfig('mr', kafka, {}).KAFKA_SASL_MECHANISM).toBeUndefined();
  });

  it('never echoes a secret in an error, where it would reach the logs', () => {
    const secrets = Type.Object({
      ...InternalConfig,
      DATABASE_URL: Type.String({ pattern: '^postgres(ql)?://' }),
    });
    let error: unknown;
    try {
      loadConfig('t', secrets, {
        INTERNAL_SECRET: 'hunter2-short',
        DATABASE_URL: 'postgresql+psycopg://app:S3cretPw@db/parley',
      });
    } catch (err) {
      error = err;
    }
    const { message, problems } = error as ConfigError;
    expect(problems).toEqual([
      expect.stringMatching(
        /^INTERNAL_SECRET: must NOT have fewer than 16 characters \(got \(value withheld: a secret\)\)$/,
      ),
      expect.stringMatching(/^DATABASE_URL: must match .* \(got \(value withheld: a secret\)\)$/),
    ]);
    expect(message).not.toMatch(/hunter2|S3cretPw/);
  });

  it('names the secrets left on their public development values', () => {
    const secrets = Type.Object({ ...AuthConfig, ...InternalConfig });
    expect(publicDevSecretsIn(loadConfig('t', secrets, {}))).toEqual(['JWT_SECRET', 'INTERNAL_SECRET']);
    const jwks = {
      JWT_JWKS_URL: 'https://idp.example/jwks.json',
      JWT_AUDIENCE: 'parley',
      INTERNAL_SECRET: 'a-real-internal-secret',
    };
    expect(publicDevSecretsIn(loadConfig('t', secrets, jwks))).toEqual([]);
    const own = { JWT_SECRET: 'x'.repeat(40) };
    expect(publicDevSecretsIn(loadConfig('t', secrets, own))).toEqual(['INTERNAL_SECRET']);
  });

  it('makes the public development secrets configuration problems with PARLEY_ENV=production only', () => {
    const service = Type.Object({ ...CommonConfig, ...AuthConfig, ...InternalConfig });
    expect(productionProblems(loadConfig('t', service, {}))).toEqual([]); // development by default
    expect(productionProblems(loadConfig('t', service, { PARLEY_ENV: 'production' }))).toEqual([
      expect.stringMatching(
        /^JWT_SECRET: holds the public development value, refused with PARLEY_ENV=production/,
      ),
      expect.stringMatching(/^INTERNAL_SECRET: holds the public development value/),
    ]);
    const own = { PARLEY_ENV: 'production', JWT_SECRET: 'x'.repeat(40), INTERNAL_SECRET: 'y'.repeat(20) };
    expect(productionProblems(loadConfig('t', service, own))).toEqual([]);
  });

  it("refuses rest-gateway's DEV_MODE with PARLEY_ENV=production: POST /v1/dev/token hands anyone a token for any user", () => {
    const gateway = Type.Object({
      ...CommonConfig,
      ...AuthConfig,
      ...InternalConfig,
      DEV_MODE: Type.Boolean({ default: false }),
    });
    const own = { JWT_SECRET: 'x'.repeat(40), INTERNAL_SECRET: 'y'.repeat(20) };
    expect(productionProblems(loadConfig('t', gateway, { ...own, DEV_MODE: 'true' }))).toEqual([]);
    const production = { ...own, PARLEY_ENV: 'production' };
    expect(productionProblems(loadConfig('t', gateway, production))).toEqual([]);
    expect(productionProblems(loadConfig('t', gateway, { ...production, DEV_MODE: 'true' }))).toEqual([
      expect.stringMatching(/^DEV_MODE: is true, refused with PARLEY_ENV=production/),
    ]);
  });
});
