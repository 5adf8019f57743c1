import { readFileSync } from 'node:fs';
import type { Agent } from 'node:http';
import { randomUUID } from 'node:crypto';
import { App, cert, Credential, deleteApp, initializeApp, ServiceAccount } from 'firebase-admin/app';
import { getMessaging, Messaging, MulticastMessage } from 'firebase-admin/messaging';
import type { Logger } from 'pino';
import type { PushNotification, PushProvider, TokenOutcome } from './provider';

export interface FcmProviderOptions {
  credential: Credential;
  projectId: string;
  /** Routes FCM's HTTP requests (tests point it at a fake server on loopback). */
  httpAgent?: Agent;
  /** HTTP/1.1 for the batch sends; without it they use HTTP/2 and ignore `httpAgent`. */
  legacyHttpTransport?: boolean;
  /** Where FCM's reasons for the sends it refused or failed go (the outcomes carry none). */
  logger?: Logger;
}

/** FCM's limit of tokens per multicast. */
const MAX_TOKENS = 500;

/** Tokens FCM says will never work again. */
const INVALID_TOKEN_CODES = new Set([
  'messaging/registration-token-not-registered',
  'messaging/invalid-registration-token',
]);
/** Failures worth retrying later. */
// Not 'messaging/server-unavailable': that is FCM's 503, which firebase-admin has already retried
// four times (with backoff, honouring Retry-After) before it reports it.
const TRANSIENT_CODES = new Set([
  'messaging/internal-error',
  'messaging/unknown-error',
  'app/network-error',
  'app/network-timeout',
  // The HTTP/2 transport (the default) rejects the whole multicast with these when its session fails.
  'messaging/app/network-error',
  'messaging/app/network-timeout',
]);

/** FCM through firebase-admin: one multicast per notification to every token of the user. */
export function createFcmProvider(options: FcmProviderOptions): PushProvider {
  const app: App = initializeApp(
    { credential: options.credential, projectId: options.projectId, httpAgent: options.httpAgent },
    `push-ms-${randomUUID()}`,
  );
  const messaging = getMessaging(app);
  if (options.legacyHttpTransport) messaging.enableLegacyHttpTransport();
  return {
    name: 'fcm',
    async send(tokens, notification) {
      const outcomes: TokenOutcome[] = [];
      for (let i = 0; i < tokens.length; i += MAX_TOKENS) {
        const chunk = tokens.slice(i, i + MAX_TOKENS);
        outcomes.push(...(await sendChunk(messaging, chunk, notification, options.logger)));
      }
      return outcomes;
    },
    close: () => deleteApp(app),
  };
}

async function sendChunk(
  messaging: Messaging,
  tokens: string[],
  notification: PushNotification,
  logger?: Logger,
): Promise<TokenOutcome[]> {
  const message: MulticastMessage = {
    tokens,
    notification: { title: notification.title, body: notification.body },
    data: notification.data,
    android: { priority: 'high', notification: { tag: notification.collapseId } },
    apns: { headers: { 'apns-collapse-id': notification.collapseId } },
  };
  try {
    const response = await messaging.sendEachForMulticast(message);
    const errors = response.responses.flatMap((r) => (r.success ? [] : [r.error]));
    logFailures(logger, errors);
    return response.responses.map((r) => (r.success ? 'sent' : classify(r.error)));
  } catch (err) {
    logFailures(logger, new Array<unknown>(tokens.length).fill(err));
    const outcome = classify(err);
    return tokens.map(() => (outcome === 'invalid' ? 'failed' : outcome));
  }
}

/** FCM's answer text, cut: a non-JSON answer (a proxy's HTML page) is quoted whole by firebase-admin. */
const MAX_REASON_CHARS = 300;

/**
 * One line per push FCM did not take for every device, with FCM's code and message per failure:
 * what the alerts on failed sends and retries send the operator to (a revoked key, a missing APNs
 * key, a payload FCM refuses). Tokens FCM reports invalid are left to the dispatcher's own line.
 */
function logFailures(logger: Logger | undefined, errors: unknown[]): void {
  const reasons: Record<string, { devices: number; outcome: TokenOutcome; message: string }> = {};
  for (const err of errors) {
    const outcome = classify(err);
    if (outcome === 'invalid') continue;
    const { code = 'none', message = String(err) } = (err ?? {}) as { code?: string; message?: string };
    const reason = (reasons[code] ??= { devices: 0, outcome, message: message.slice(0, MAX_REASON_CHARS) });
    reason.devices++;
  }
  if (logger && Object.keys(reasons).length > 0) logger.warn({ fcm: reasons }, 'FCM did not take a push');
}

export function classify(err: unknown): TokenOutcome {
  const { code, message } = (err ?? {}) as { code?: string; message?: string };
  if (!code) return 'retry'; // no FCM answer at all (a socket error): worth another try
  if (INVALID_TOKEN_CODES.has(code)) return 'invalid';
  // FCM's 429 (QUOTA_EXCEEDED, RESOURCE_EXHAUSTED): firebase-admin drops its Retry-After header.
  if (code === 'messaging/message-rate-exceeded' || code === 'messaging/device-message-rate-exceeded')
    return 'throttled';
  // INVALID_ARGUMENT is also FCM's answer for a malformed token; only then is the token at fault.
  if (code === 'messaging/invalid-argument' && /registration token/i.test(message ?? '')) return 'invalid';
  return TRANSIENT_CODES.has(code) ? 'retry' : 'failed';
}

/** `FCM_SERVICE_ACCOUNT`: the service-account JSON itself, or the path of a file holding it. */
export function fcmOptionsFromServiceAccount(value: string): FcmProviderOptions {
  const text = value.trim().startsWith('{') ? value : readServiceAccountFile(value);
  let account: ServiceAccount & { project_id?: string };
  try {
    account = JSON.parse(text);
  } catch (err) {
    // Only where: JSON.parse's own message may quote the text around the fault, a key's included.
    const at = /at position \d+/.exec((err as Error).message)?.[0] ?? 'somewhere';
    throw new Error(`FCM_SERVICE_ACCOUNT: not valid JSON (${at})`);
  }
  const projectId = account.projectId ?? account.project_id;
  if (!projectId) throw new Error('FCM_SERVICE_ACCOUNT: project_id is required');
  try {
    return { credential: cert(account), projectId };
  } catch (err) {
    throw new Error(`FCM_SERVICE_ACCOUNT: ${(err as Error).message}`);
  }
}

/** The file's text. Its error never quotes `value`: a key pasted in another form (base64) would reach the logs. */
function readServiceAccountFile(value: string): string {
  try {
    return readFileSync(value, 'utf8');
  } catch (err) {
    throw new Error(
      `FCM_SERVICE_ACCOUNT: neither service-account JSON (it must start with "{") nor a readable file (${(err as NodeJS.ErrnoException).code ?? 'unreadable'})`,
    );
  }
}
