import WebSocket, { WebSocketServer } from 'ws';

/**
 * The baseline: a minimal single-process relay on raw `ws`, the local ceiling for the fleet.
 * It speaks just enough of the Parley protocol for the same benchmark clients: `?token=` names
 * the user (the JWT's `sub`, decoded but NOT verified), each text frame is JSON-parsed, a
 * `message` is re-serialized as a deliverable (`mid`, `from`, `sentAt` added, like the fleet's)
 * and written to every socket of the recipient (or of each member of a group created with a
 * `group`/`create` frame); `ack` frames are parsed and dropped; `ping` is answered. No Kafka, no
 * persistence, no ack tracking, no rate limit, no auth check.
 *
 * Run as a child process: prints `RELAY_READY {"url":...}` and serves until SIGTERM.
 */

interface Frame {
  type?: string;
  id?: string;
  to?: string;
  chat?: string;
  body?: unknown;
  op?: string;
  group?: string;
  members?: string[];
}

export function startRelay(port = 0, host = '127.0.0.1'): Promise<{ url: string; close(): Promise<void> }> {
  const users = new Map<string, Set<WebSocket>>();
  const groups = new Map<string, string[]>();
  const wss = new WebSocketServer({
    port,
    host,
    maxPayload: 64 * 1024,
    perMessageDeflate: false,
    clientTracking: false,
  });

  const userOf = (url: string | undefined): string => {
    const token = new URL(url ?? '/', 'http://relay').searchParams.get('token') ?? '';
    try {
      const payload = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString()) as {
        sub?: string;
      };
      return payload.sub ?? 'anonymous';
    } catch {
      return 'anonymous';
    }
  };
  const sendTo = (user: string, text: string) => {
    const sockets = users.get(user);
    if (sockets) for (const s of sockets) s.send(text);
  };

  wss.on('connection', (ws, request) => {
    const user = userOf(request.url);
    let set = users.get(user);
    if (!set) users.set(user, (set = new Set()));
    set.add(ws);
    ws.on('close', () => {
      set!.delete(ws);
      if (set!.size === 0 && users.get(user) === set) users.delete(user);
    });
    ws.on('error', () => undefined);
    ws.on('message', (data, isBinary) => {
      if (isBinary) return;
      let frame: Frame;
      try {
        frame = JSON.parse(data.toString()) as Frame;
      } catch {
        return void ws.send('{"type":"error","code":"invalid_frame","message":"not JSON"}');
      }
      if (frame.type === 'message' && typeof frame.to === 'string' && typeof frame.id === 'string') {
        const chat = frame.chat === 'group' ? 'group' : 'direct';
        const text = JSON.stringify({
          type: 'message',
          mid: `${user}:${frame.id}`,
          id: frame.id,
          from: user,
          to: frame.to,
          chat,
          body: frame.body,
          sentAt: Date.now(),
        });
        if (chat === 'direct') sendTo(frame.to, text);
        else for (const member of groups.get(frame.to) ?? []) if (member !== user) sendTo(member, text);
      } else if (frame.type === 'group' && frame.op === 'create' && typeof frame.group === 'string') {
        const members = [...new Set([user, ...(frame.members ?? [])])];
        groups.set(frame.group, members);
        const text = JSON.stringify({
          type: 'group',
          mid: `${user}:${frame.id}`,
          op: 'create',
          group: frame.group,
          members,
          by: user,
          at: Date.now(),
        });
        for (const member of members) sendTo(member, text);
      } else if (frame.type === 'ping') {
        ws.send('{"type":"pong"}');
      }
      // `ack` and anything else: parsed, dropped.
    });
    ws.send(JSON.stringify({ type: 'hello', user, connId: 'relay' }));
  });

  return new Promise((resolve, reject) => {
    wss.once('error', reject);
    wss.once('listening', () => {
      const address = wss.address();
      const boundPort = address && typeof address === 'object' ? address.port : port;
      resolve({
        url: `ws://${host}:${boundPort}/v1/ws`,
        close: () =>
          new Promise<void>((done) => {
            for (const set of users.values()) for (const s of set) s.terminate();
            wss.close(() => done());
          }),
      });
    });
  });
}

if (require.main === module) {
  startRelay(Number(process.env.RELAY_PORT ?? 0), process.env.HOST ?? '127.0.0.1').then(
    (relay) => {
      process.stdout.write(`RELAY_READY ${JSON.stringify({ url: relay.url, pid: process.pid })}\n`);
      process.once('SIGTERM', () => void relay.close().then(() => process.exit(0)));
    },
    (err) => {
      process.stderr.write(`relay failed: ${(err as Error).stack}\n`);
      process.exit(1);
    },
  );
}
