import { createServer, IncomingMessage, Server } from 'node:http';
import { Agent } from 'node:https';
import { connect, AddressInfo, Socket } from 'node:net';
import type { Credential } from 'firebase-admin/app';

/** What the fake FCM server received for one message. */
export interface FcmRequest {
  method: string;
  path: string;
  authorization?: string;
  message: {
    token: string;
    notification?: { title?: string; body?: string };
    data?: Record<string, string>;
    android?: unknown;
  };
}

export interface FcmAnswer {
  status: number;
  body: unknown;
  /** Answer this much later (a slow FCM). */
  delayMs?: number;
  /** Extra response headers (a Retry-After). */
  headers?: Record<string, string>;
}

const fcmError = (status: number, grpcStatus: string, message: string, errorCode?: string): FcmAnswer => ({
  status,
  body: {
    error: {
      code: status,
      message,
      status: grpcStatus,
      details: errorCode
        ? [{ '@type': 'type.googleapis.com/google.firebase.fcm.v1.FcmError', errorCode }]
        : [],
    },
  },
});

/** FCM v1 error answers as Google sends them. */
export const FCM_ERRORS = {
  unregistered: fcmError(404, 'NOT_FOUND', 'Requested entity was not found.', 'UNREGISTERED'),
  invalidToken: fcmError(
    400,
    'INVALID_ARGUMENT',
    'The registration token is not a valid FCM registration token',
    'INVALID_ARGUMENT',
  ),
  internal: fcmError(500, 'INTERNAL', 'Internal error encountered.', 'INTERNAL'),
  senderMismatch: fcmError(403, 'PERMISSION_DENIED', 'SenderId mismatch', 'SENDER_ID_MISMATCH'),
  /** The project is over its quota: FCM asks for a pause (its Retry-After), a minute at least. */
  quotaExceeded: {
    ...fcmError(429, 'RESOURCE_EXHAUSTED', 'Quota exceeded for quota metric', 'QUOTA_EXCEEDED'),
    headers: { 'retry-after': '60' },
  },
  /** FCM overloaded; its Retry-After is short here to keep firebase-admin's own retries quick. */
  unavailable: {
    ...fcmError(503, 'UNAVAILABLE', 'The service is currently unavailable.', 'UNAVAILABLE'),
    headers: { 'retry-after': '1' },
  },
};

/**
 * FCM v1's `Message.data`: "The key should not be a reserved word ("from", "message_type", or any
 * word starting with "google" or "gcm")". FCM refuses such a message (`Invalid data payload key`).
 */
function reservedDataKey(data: Record<string, string> = {}): string | undefined {
  return Object.keys(data).find(
    (key) => key === 'from' || key === 'message_type' || /^(google|gcm)/.test(key),
  );
}

const reservedDataKeyError = (key: string) =>
  fcmError(400, 'INVALID_ARGUMENT', `Invalid data payload key: ${key}`, 'INVALID_ARGUMENT');

export const FAKE_PROJECT = 'parley-test';
export const FAKE_ACCESS_TOKEN = 'fake-access-token';

/** A credential that never leaves the process. */
export const fakeCredential: Credential = {
  getAccessToken: async () => ({ access_token: FAKE_ACCESS_TOKEN, expires_in: 3600 }),
};

/**
 * An FCM HTTP v1 endpoint on loopback. firebase-admin really talks to it: its `httpAgent` is an
 * https agent whose connections go, in plain HTTP, to this server instead of fcm.googleapis.com.
 * It refuses what FCM refuses whatever `answer` says: a reserved `data` key.
 */
export class FakeFcm {
  readonly requests: FcmRequest[] = [];
  /** Decides each answer; success by default. `n` counts the requests for this token so far (0-based). */
  answer: (request: FcmRequest, n: number) => FcmAnswer = () => ({ status: 200, body: {} });
  private server?: Server;
  private readonly sockets = new Set<Socket>();

  async start(): Promise<void> {
    this.server = createServer((req, res) => {
      void this.read(req).then((request) => {
        const n = this.requests.filter((r) => r.message.token === request.message.token).length;
        this.requests.push(request);
        const reserved = reservedDataKey(request.message.data);
        let answer = reserved ? reservedDataKeyError(reserved) : this.answer(request, n);
        if (answer.status === 200)
          answer = {
            status: 200,
            body: { name: `projects/${FAKE_PROJECT}/messages/${this.requests.length}` },
          };
        const reply = () => {
          res.writeHead(answer.status, { 'content-type': 'application/json', ...answer.headers });
          res.end(JSON.stringify(answer.body));
        };
        if (answer.delayMs) setTimeout(reply, answer.delayMs);
        else reply();
      });
    });
    this.server.on('connection', (socket) => {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
  }

  /** An agent for `initializeApp({ httpAgent })`: every connection goes to this server. */
  agent(): Agent {
    const { port } = this.server!.address() as AddressInfo;
    const agent = new Agent({ keepAlive: false });
    agent.createConnection = () => connect(port, '127.0.0.1');
    return agent;
  }

  tokensSentTo(): string[] {
    return this.requests.map((r) => r.message.token);
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server?.close(() => resolve()) ?? resolve());
  }

  private async read(req: IncomingMessage): Promise<FcmRequest> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    return {
      method: req.method ?? '',
      path: req.url ?? '',
      authorization: req.headers.authorization,
      message: body.message,
    };
  }
}
