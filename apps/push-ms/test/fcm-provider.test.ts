import { generateKeyPairSync, sign, verify } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { Agent } from 'node:https';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { classify, createFcmProvider, fcmOptionsFromServiceAccount } from '../src/fcm-provider';
import { buildNotification, summarize } from '../src/notification';
import { capturedLogger } from './captured-logger';
import { PushProvider } from '../src/provider';
import { FAKE_ACCESS_TOKEN, FAKE_PROJECT, FakeFcm, FcmAnswer, FCM_ERRORS, fakeCredential } from './fake-fcm';

describe('FCM provider against a fake FCM server', () => {
  const fcm = new FakeFcm();
  let provider: PushProvider;
  beforeAll(async () => {
    await fcm.start();
    provider = createFcmProvider({
      credential: fakeCredential,
      projectId: FAKE_PROJECT,
      httpAgent: fcm.agent(),
      legacyHttpTransport: true,
    });
  });
  afterAll(async () => {
    await provider.close();
    await fcm.close();
  });
  beforeEach(() => {
    fcm.requests.length = 0;
    fcm.answer = () => ({ status: 200, body: {} });
  });

  const notification = {
    title: 'alice',
    body: '2 new messages from alice',
    data: { kind: 'parley.messages', count: '2' },
    collapseId: 'alice:2',
  };

  it('sends one FCM v1 request per token with the notification, authorised with the access token', async () => {
    expect(await provider.send(['tok-a', 'tok-b'], notification)).toEqual(['sent', 'sent']);
    expect(fcm.tokensSentTo().sort()).toEqual(['tok-a', 'tok-b']);
    const [request] = fcm.requests;
    expect(request.method).toBe('POST');
    expect(request.path).toBe(`/v1/projects/${FAKE_PROJECT}/messages:send`);
    expect(request.authorization).toBe(`Bearer ${FAKE_ACCESS_TOKEN}`);
    expect(request.message).toMatchObject({
      notification: { title: 'alice', body: '2 new messages from alice' },
      data: { kind: 'parley.messages', count: '2' },
      // The same window pushed again replaces this one on the device instead of stacking beside it.
      android: { priority: 'high', notification: { tag: 'alice:2' } },
      apns: { headers: { 'apns-collapse-id': 'alice:2' } },
    });
  });

  // FCM refuses a message with a reserved `data` key ("from", "message_type", "google…", "gcm…")
  // whole, for every token: the data payload named the senders `from`, and no push was ever sent.
  it('sends what buildNotification makes: its data payload has no key FCM reserves', async () => {
    const frames = ['alice', 'bob'].map((from, i) => ({
      type: 'message' as const,
      mid: `${from}:m${i}`,
      id: `m${i}`,
      from,
      to: 'team',
      chat: 'group' as const,
      body: { text: 'hi' },
      sentAt: 1,
    }));
    const built = buildNotification(frames.map((frame) => summarize(frame, true)));
    expect(await provider.send(['tok-a', 'tok-b'], built)).toEqual(['sent', 'sent']);
    expect(fcm.requests[0].message.data).toEqual({
      kind: 'parley.messages',
      count: '2',
      senders: 'alice,bob',
      mid: 'bob:m1',
    });
    // What FCM answers to such a key: the push fails, and the token, not at fault, is kept.
    const reserved = { ...notification, data: { from: 'alice' } };
    expect(await provider.send(['tok-a'], reserved)).toEqual(['failed']);
  });

  it('reports unregistered and malformed tokens as invalid, server errors as retryable, the rest as failed', async () => {
    const answers: Record<string, (typeof FCM_ERRORS)[keyof typeof FCM_ERRORS]> = {
      gone: FCM_ERRORS.unregistered,
      bad: FCM_ERRORS.invalidToken,
      flaky: FCM_ERRORS.internal,
      other: FCM_ERRORS.senderMismatch,
    };
    fcm.answer = (request) => answers[request.message.token] ?? { status: 200, body: {} };
    expect(await provider.send(['ok', 'gone', 'bad', 'flaky', 'other'], notification)).toEqual([
      'sent',
      'invalid',
      'invalid',
      'retry',
      'failed',
    ]);
  });

  // The alerts on failed sends and on retries send the operator to push-ms's logs, which said only
  // 'push failed for some devices': FCM's reason (a revoked key, a missing APNs key, a payload it
  // refuses) reached no log.
  it("logs FCM's code and message for the sends it did not take, which the outcomes do not carry", async () => {
    const { logger, lines } = capturedLogger();
    const logged = createFcmProvider({
      credential: fakeCredential,
      projectId: FAKE_PROJECT,
      httpAgent: fcm.agent(),
      legacyHttpTransport: true,
      logger,
    });
    try {
      expect(await logged.send(['ok'], notification)).toEqual(['sent']);
      expect(lines).toEqual([]);
      const answers: Record<string, FcmAnswer> = {
        'apns-1': FCM_ERRORS.senderMismatch,
        'apns-2': FCM_ERRORS.senderMismatch,
        flaky: FCM_ERRORS.internal,
        gone: FCM_ERRORS.unregistered,
      };
      fcm.answer = (request) => answers[request.message.token] ?? { status: 200, body: {} };
      const tokens = ['ok', 'apns-1', 'apns-2', 'flaky', 'gone'];
      expect(await logged.send(tokens, notification)).toEqual([
        'sent',
        'failed',
        'failed',
        'retry',
        'invalid',
      ]);
      expect(lines).toEqual([
        expect.objectContaining({
          level: 40,
          msg: 'FCM did not take a push',
          fcm: {
            'messaging/mismatched-credential': {
              devices: 2,
              outcome: 'failed',
              message: 'SenderId mismatch',
            },
            'messaging/internal-error': {
              devices: 1,
              outcome: 'retry',
              message: 'Internal error encountered.',
            },
          },
        }),
      ]);
      expect(JSON.stringify(lines)).not.toMatch(/apns-1|flaky/);
    } finally {
      await logged.close();
    }
  });

  it('reports a 429 as throttled at once, and a 503 as failed after firebase-admin retried it four times itself', async () => {
    fcm.answer = (request) =>
      request.message.token === 'busy' ? FCM_ERRORS.quotaExceeded : FCM_ERRORS.unavailable;
    expect(await provider.send(['busy'], notification)).toEqual(['throttled']);
    expect(fcm.requests).toHaveLength(1); // firebase-admin does not retry a 429
    fcm.requests.length = 0;
    // 503: firebase-admin's own RetryConfig (4 retries, backoff, Retry-After); retrying it again on
    // top would multiply the load on an FCM that is already overloaded.
    expect(await provider.send(['down'], notification)).toEqual(['failed']);
    expect(fcm.requests).toHaveLength(5);
  }, 20_000);

  it('reports every token as retryable when FCM cannot be reached', async () => {
    const unreachable = createFcmProvider({
      credential: fakeCredential,
      projectId: FAKE_PROJECT,
      httpAgent: deadAgent(),
      legacyHttpTransport: true,
    });
    try {
      expect(await unreachable.send(['a', 'b'], notification)).toEqual(['retry', 'retry']);
    } finally {
      await unreachable.close();
    }
  });

  it('takes a failed HTTP/2 session (the default transport) as retryable, as firebase-admin names it', () => {
    // What sendEachForMulticast rejects with when fcm.googleapis.com cannot be reached over HTTP/2
    // (seen with firebase-admin 13 and no DNS); that transport cannot be pointed at the fake server.
    const sessionError = {
      code: 'messaging/app/network-error',
      message: 'Session error while making requests',
    };
    expect(classify(sessionError)).toBe('retry');
    expect(classify({ code: 'messaging/app/network-timeout', message: 'timed out' })).toBe('retry');
    expect(classify({ code: 'messaging/invalid-argument', message: 'bad payload' })).toBe('failed');
  });

  it('reads a valid service account from JSON and from a file path', () => {
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const account = {
      type: 'service_account',
      project_id: 'parley-prod',
      private_key_id: 'key-1',
      private_key: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
      client_email: 'push@parley-prod.iam.gserviceaccount.com',
      client_id: '1234567890',
      token_uri: 'https://oauth2.googleapis.com/token',
    };
    const dir = mkdtempSync(path.join(tmpdir(), 'parley-fcm-'));
    try {
      const file = path.join(dir, 'service-account.json');
      writeFileSync(file, JSON.stringify(account, null, 2));
      for (const value of [JSON.stringify(account), `  ${JSON.stringify(account)}\n`, file]) {
        const options = fcmOptionsFromServiceAccount(value);
        expect(options.projectId).toBe('parley-prod');
        const credential = options.credential as unknown as {
          projectId: string;
          clientEmail: string;
          privateKey: string;
        };
        expect(credential).toMatchObject({ projectId: 'parley-prod', clientEmail: account.client_email });
        // The credential holds the very key of the account: what it signs, the account's public key verifies.
        const signature = sign('sha256', Buffer.from('parley'), credential.privateKey);
        expect(verify('sha256', Buffer.from('parley'), publicKey, signature)).toBe(true);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses a service account without a valid key or project, or a missing file', () => {
    const account = {
      type: 'service_account',
      project_id: 'p1',
      client_email: 'x@p1.iam.gserviceaccount.com',
      private_key: 'not-a-key',
    };
    expect(() => fcmOptionsFromServiceAccount(JSON.stringify(account))).toThrow(/private key/i);
    expect(() => fcmOptionsFromServiceAccount('/nonexistent/service-account.json')).toThrow(/ENOENT/);
    // A key pasted base64-encoded is taken for a path: the error must not carry it to the logs.
    const pasted = Buffer.from(JSON.stringify(account)).toString('base64');
    let error: unknown;
    try {
      fcmOptionsFromServiceAccount(pasted);
    } catch (err) {
      error = err;
    }
    expect((error as Error).message).toMatch(/neither service-account JSON .* nor a readable file/);
    expect(JSON.stringify(error) + (error as Error).message + (error as Error).stack).not.toContain(
      pasted.slice(0, 20),
    );
    expect(() => fcmOptionsFromServiceAccount(JSON.stringify({ ...account, project_id: undefined }))).toThrow(
      /project_id/,
    );
  });

  // push-ms logged a bare `SyntaxError: Unterminated string in JSON at position 46` and exited 1:
  // nothing said which setting, and JSON.parse's message can quote the text around the fault.
  it('names FCM_SERVICE_ACCOUNT, quoting none of it, when its JSON or key is broken', () => {
    const key = 'MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj';
    const dir = mkdtempSync(path.join(tmpdir(), 'parley-fcm-'));
    try {
      const file = path.join(dir, 'service-account.json');
      writeFileSync(file, `{"project_id":"p1","private_key":"-----BEGIN PRIVATE KEY-----\n${key}`);
      for (const value of [
        `{"project_id":"p1","private_key":${key}}`,
        `{"project_id":"p1","private_key":"${key}`,
        file,
        JSON.stringify({ project_id: 'p1' }),
      ]) {
        let error: unknown;
        try {
          fcmOptionsFromServiceAccount(value);
        } catch (err) {
          error = err;
        }
        expect((error as Error).message).toMatch(/^FCM_SERVICE_ACCOUNT: /);
        expect((error as Error).message).not.toContain(key.slice(4, 10));
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/** An agent whose connections are refused at once (nothing listens on port 1). */
function deadAgent(): Agent {
  const agent = new Agent();
  agent.createConnection = () => connect(1, '127.0.0.1');
  return agent;
}
