import { setTimeout as sleep } from 'node:timers/promises';
/**
 * A reconnect storm against a running fleet (`npm start`): `--users` devices, each with `--stored`
 * messages stored offline (sent while it was away, replayed on its connect and left unacked) and
 * `--pending` pushed to its socket and left unacked, lose their sockets at once (a network blip,
 * a gateway pod gone) and come back within `--window-s` seconds, acking everything from then on.
 * Measures what each device gets after the reconnect (frames vs distinct mids), refusals and
 * closes, how long until every message is on its device and until sync (`GET /v1/messages`) is
 * empty for every user, the fleet's event-loop lag and session-ms/persistence-ms counters; then a
 * loss check: every accepted message reached its device or is served by sync.
 *
 *   npx tsx tools/bench/src/storm.ts --pid <fleet pid> --users 2000 --stored 3 --pending 3 --window-s 5
 */
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import WebSocket from 'ws';
import { devToken, DevTokenRefused, exitUnlessFleetAnswers } from './cli';
import { metricSum, parseRss, scanFrame, sourceAddress } from './stats';

const USAGE = `A reconnect storm against a running fleet (npm start, or tools/bench/src/fleet-child.ts).

  npx tsx tools/bench/src/storm.ts --pid <fleet pid> [options]

  --pid N          the fleet's process, for its RSS (0: not sampled)
  --ports JSON     the fleet's ports as fleet-child's FLEET_READY line gives them (default npm start's)
  --users N        users (default 2000)
  --devices N      devices per user, each connected (default 1)
  --stored N       messages stored for each user while away, replayed on its connect (default 3)
  --pending N      messages pushed to each user's socket and left unacked (default 3)
  --window-s N     every device is back within this many seconds (default 5)
  --backoff-ms N   a failed reconnect's backoff base, doubling with jitter (default 500)
  --timeout-s N    the longest wait for every message to reach its device (default 120)
  --prefix S       user id prefix (default a fresh one)
  --help           this text
`;

interface Settings {
  ws: string;
  rest: string;
  /** The fleet's process, for its RSS (0: not sampled). */
  pid: number;
  users: number;
  /** Each connects, each gets every deliverable of its user. */
  devicesPerUser: number;
  stored: number;
  pending: number;
  windowS: number;
  /** Reconnect attempts that fail (503, refused) retry after this backoff base (doubling, jitter). */
  backoffMs: number;
  timeoutS: number;
  prefix: string;
  metricPorts: { main: number; gw: number; sess: number; pers: number };
}

/** The command line's settings; undefined for --help. */
function parseSettings(): Settings | undefined {
  const { values } = parseArgs({
    options: {
      pid: { type: 'string', default: '0' },
      ports: { type: 'string', default: '{}' },
      users: { type: 'string', default: '2000' },
      devices: { type: 'string', default: '1' },
      stored: { type: 'string', default: '3' },
      pending: { type: 'string', default: '3' },
      'window-s': { type: 'string', default: '5' },
      'backoff-ms': { type: 'string', default: '500' },
      'timeout-s': { type: 'string', default: '120' },
      prefix: { type: 'string', default: `st${Date.now().toString(36)}` },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) return undefined;
  /** `--ports '<FLEET_READY ports JSON>'` (tools/bench/src/fleet-child.ts): a fleet on other ports. */
  const ports = {
    wsGateway: 8080,
    restGateway: 8081,
    wsGatewayInternal: 9080,
    messageRouter: 9101,
    sessionMs: 9103,
    persistenceMs: 9105,
    ...(JSON.parse(values.ports) as Record<string, number>),
  };
  return {
    ws: `ws://127.0.0.1:${ports.wsGateway}/v1/ws`,
    rest: `http://127.0.0.1:${ports.restGateway}`,
    pid: Number(values.pid),
    users: Number(values.users),
    devicesPerUser: Number(values.devices),
    stored: Number(values.stored),
    pending: Number(values.pending),
    windowS: Number(values['window-s']),
    backoffMs: Number(values['backoff-ms']),
    timeoutS: Number(values['timeout-s']),
    prefix: values.prefix,
    metricPorts: {
      main: ports.messageRouter,
      gw: ports.wsGatewayInternal,
      sess: ports.sessionMs,
      pers: ports.persistenceMs,
    },
  };
}
const SENDER_BATCH = 100;

const now = () => performance.now();

interface Device {
  idx: number;
  userIdx: number;
  user: string;
  token: string;
  socket?: WebSocket;
  /** Phase: 'before' (frames not acked) or 'after' (the storm: ack everything). */
  acking: boolean;
  expected: Set<string>;
  got: Set<string>;
  framesAfter: number;
  midFramesAfter: number;
  distinctAfter: Set<string>;
  completeAt?: number;
  reconnectAt?: number;
  openAt?: number;
  connectTries: number;
  ackBuf: string[];
}

/** The run's devices and what went wrong for them. */
function newStorm(settings: Settings) {
  return {
    settings,
    devices: [] as Device[],
    errorCodes: new Map<string, number>(),
    closes: new Map<number, number>(),
    connectFailures: new Map<string, number>(),
  };
}
type Storm = ReturnType<typeof newStorm>;

/** Asked again while refused (5,000 users at once pass the dev fleet's rate limit). */
async function token(storm: Storm, user: string): Promise<string> {
  for (;;) {
    try {
      return await devToken(storm.settings.rest, user);
    } catch (err) {
      if (!(err instanceof DevTokenRefused)) throw err;
      await sleep(200);
    }
  }
}

function onFrame(storm: Storm, d: Device, text: string) {
  const f = scanFrame(text);
  if (f.type === 'error') {
    const code = /"code":"([^"]+)"/.exec(text)?.[1] ?? '?';
    storm.errorCodes.set(code, (storm.errorCodes.get(code) ?? 0) + 1);
  }
  if (d.acking) d.framesAfter++;
  if (f.mid === undefined || f.type === 'accepted') return;
  d.got.add(f.mid);
  if (d.acking) {
    d.midFramesAfter++;
    d.distinctAfter.add(f.mid);
    d.ackBuf.push(f.mid);
    // Ack semantics are per user: a device gets what no other device of its user acked first.
    const perUser = storm.settings.devicesPerUser;
    if (d.completeAt === undefined && [...d.expected].every((m) => d.got.has(m)))
      for (let k = 0; k < perUser; k++) storm.devices[d.userIdx * perUser + k]!.completeAt ??= now();
  }
}

function flushAcks(d: Device) {
  while (d.ackBuf.length > 0 && d.socket?.readyState === WebSocket.OPEN)
    d.socket.send(JSON.stringify({ type: 'ack', mids: d.ackBuf.splice(0, 500) }));
}

function open(storm: Storm, d: Device): Promise<void> {
  const { connectFailures } = storm;
  return new Promise<void>((resolve, reject) => {
    d.connectTries++;
    const socket = new WebSocket(`${storm.settings.ws}?token=${d.token}&deviceId=d${d.idx}`, {
      localAddress: sourceAddress(d.idx),
      perMessageDeflate: false,
    });
    socket.once('unexpected-response', (_req, res) => {
      const key = `http_${res.statusCode}`;
      connectFailures.set(key, (connectFailures.get(key) ?? 0) + 1);
      socket.terminate();
      reject(new Error(key));
    });
    socket.once('error', (err) => {
      connectFailures.set(err.message.slice(0, 40), (connectFailures.get(err.message.slice(0, 40)) ?? 0) + 1);
      reject(err);
    });
    socket.once('message', () => {
      d.socket = socket;
      d.openAt = now();
      socket.on('message', (data) => onFrame(storm, d, data.toString()));
      resolve();
    });
    socket.on('close', (code) => {
      if (d.acking && d.socket === socket) {
        storm.closes.set(code, (storm.closes.get(code) ?? 0) + 1);
        d.socket = undefined;
        void reconnect(storm, d, 0);
      }
    });
  });
}

/** As docs/protocol.md asks: backoff doubling from --backoff-ms to 30 s, with jitter. */
async function reconnect(storm: Storm, d: Device, delayMs: number): Promise<void> {
  let backoff = storm.settings.backoffMs;
  await sleep(delayMs);
  for (;;) {
    try {
      await open(storm, d);
      return;
    } catch {
      await sleep(backoff * (0.5 + Math.random()));
      backoff = Math.min(30_000, backoff * 2);
    }
  }
}

async function send(
  rest: string,
  sender: { user: string; token: string },
  frames: object[],
): Promise<string[]> {
  const mids: string[] = [];
  let todo = frames;
  while (todo.length > 0) {
    const res = await fetch(`${rest}/v1/send`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${sender.token}` },
      body: JSON.stringify(todo),
    });
    if (res.status !== 200) {
      await sleep(1000);
      continue;
    }
    const body = (await res.json()) as {
      results: Array<{ status: string; mid?: string; code?: string; retryAfterMs?: number }>;
    };
    const again: object[] = [];
    let wait = 0;
    body.results.forEach((r, i) => {
      if (r.status === 'accepted') mids.push(r.mid!);
      else {
        again.push(todo[i]!);
        wait = Math.max(wait, r.retryAfterMs ?? 1000);
      }
    });
    todo = again;
    if (todo.length > 0) await sleep(wait);
  }
  return mids;
}

/** Sends `perUser` messages to every device, from senders of 200 messages each (their burst). */
async function sendToAll(storm: Storm, perUser: number, tag: string): Promise<number> {
  const { devices, settings } = storm;
  const frames = devices
    .filter((d) => d.idx % settings.devicesPerUser === 0)
    .flatMap((d) =>
      Array.from({ length: perUser }, (_, k) => ({ to: d.user, id: `${tag}${d.userIdx}x${k}` })),
    );
  const senders = Math.ceil(frames.length / 200);
  let accepted = 0;
  const work = Array.from({ length: senders }, (_, s) => frames.slice(s * 200, s * 200 + 200));
  for (let i = 0; i < work.length; i += 20)
    await Promise.all(
      work.slice(i, i + 20).map(async (part, k) => {
        const user = `${settings.prefix}s${tag}${i + k}`;
        const sender = { user, token: await token(storm, user) };
        for (let j = 0; j < part.length; j += SENDER_BATCH) {
          const batch = part.slice(j, j + SENDER_BATCH).map((f) => ({
            type: 'message',
            id: f.id,
            to: f.to,
            body: { text: 'x'.repeat(40) },
          }));
          const mids = await send(settings.rest, sender, batch);
          accepted += mids.length;
          for (const mid of mids) {
            const userIdx = Number(/(\d+)x/.exec(mid.split(':')[1]!)![1]);
            devices[userIdx * settings.devicesPerUser]!.expected.add(mid);
          }
        }
      }),
    );
  return accepted;
}

// ---- fleet sampling ----
async function scrape(port: number): Promise<string> {
  try {
    return await (
      await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(5000) })
    ).text();
  } catch {
    return '';
  }
}
async function counters(metricPorts: Settings['metricPorts']) {
  const [sess, pers, main, gw] = await Promise.all([
    scrape(metricPorts.sess),
    scrape(metricPorts.pers),
    scrape(metricPorts.main),
    scrape(metricPorts.gw),
  ]);
  return {
    pushed: metricSum(sess, 'parley_session_pushed_total'),
    reconnectPushes: metricSum(sess, 'parley_session_reconnect_pushes_total'),
    offline: metricSum(sess, 'parley_session_offline_total'),
    acked: metricSum(sess, 'parley_session_acked_total'),
    duplicates: metricSum(sess, 'parley_session_duplicates_total'),
    pushFailures: metricSum(sess, 'parley_session_push_failures_total'),
    replayed: metricSum(pers, 'parley_persistence_replayed_total'),
    elMainMs: Math.round(metricSum(main, 'parley_nodejs_eventloop_lag_p99_seconds') * 1000),
    elMainMaxMs: Math.round(metricSum(main, 'parley_nodejs_eventloop_lag_max_seconds') * 1000),
    elGwMs: Math.round(metricSum(gw, 'parley_nodejs_eventloop_lag_p99_seconds') * 1000),
    heapMainMiB: Math.round(metricSum(main, 'parley_nodejs_heap_size_used_bytes') / 2 ** 20),
  };
}
function rssMiB(pid: number): number {
  try {
    return Math.round(parseRss(readFileSync(`/proc/${pid}/status`, 'utf8')) / 1048576);
  } catch {
    return 0;
  }
}
function diff(a: Record<string, number>, b: Record<string, number>) {
  return Object.fromEntries(
    Object.keys(a).map((k) => [k, k.startsWith('el') || k.startsWith('heap') ? b[k] : b[k]! - a[k]!]),
  );
}

async function syncLeft(rest: string, d: Device): Promise<string[]> {
  const mids: string[] = [];
  let after: string | null = null;
  for (;;) {
    const url = `${rest}/v1/messages?limit=500${after ? `&after=${encodeURIComponent(after)}` : ''}`;
    const res = await fetch(url, { headers: { authorization: `Bearer ${d.token}` } });
    if (res.status !== 200) {
      await sleep(500);
      continue;
    }
    const body = (await res.json()) as { messages: Array<{ mid: string }>; next: string | null };
    mids.push(...body.messages.map((m) => m.mid));
    if (!body.next || body.messages.length === 0) return mids;
    after = body.next;
  }
}

async function inBatches<T>(items: T[], size: number, fn: (item: T) => Promise<void>) {
  for (let i = 0; i < items.length; i += size) await Promise.all(items.slice(i, i + size).map(fn));
}

async function main() {
  const settings = parseSettings();
  if (!settings) {
    console.log(USAGE);
    process.exit(0);
  }
  const storm = newStorm(settings);
  const { devices, errorCodes, closes, connectFailures } = storm;
  await exitUnlessFleetAnswers(settings.rest, USAGE);
  for (let i = 0; i < settings.users * settings.devicesPerUser; i++)
    devices.push({
      idx: i,
      userIdx: Math.floor(i / settings.devicesPerUser),
      user: `${settings.prefix}u${Math.floor(i / settings.devicesPerUser)}`,
      token: '',
      acking: false,
      expected:
        i % settings.devicesPerUser === 0 ? new Set() : devices[i - (i % settings.devicesPerUser)]!.expected,
      // What any device of the user got (after the storm): the user's devices share it.
      got: i % settings.devicesPerUser === 0 ? new Set() : devices[i - (i % settings.devicesPerUser)]!.got,
      framesAfter: 0,
      midFramesAfter: 0,
      distinctAfter: new Set(),
      connectTries: 0,
      ackBuf: [],
    });
  await inBatches(devices, 50, async (d) => {
    d.token = await token(storm, d.user);
  });
  // 1. Stored: sent while nobody is connected.
  const stored = await sendToAll(storm, settings.stored, 'S');
  console.log(`# ${stored} stored messages accepted for ${settings.users} users (offline)`);
  await sleep(3000);
  // 2. Everyone connects (the replay arrives, unacked), then gets --pending more pushed, unacked.
  await inBatches(devices, 100, (d) => open(storm, d));
  console.log(`# ${devices.length} sockets open`);
  const pending = await sendToAll(storm, settings.pending, 'P');
  const waitUntil = now() + 20_000;
  while (now() < waitUntil && devices.some((d) => d.got.size < d.expected.size)) await sleep(200);
  const short = devices.filter((d) => d.got.size < d.expected.size).length;
  console.log(
    `# ${pending} pending messages accepted; devices still missing some before the storm: ${short}`,
  );
  const before = await counters(settings.metricPorts);
  // 3. The storm: every socket drops at once; each device is back within --window-s, acking from then on.
  const ackTimer = setInterval(() => devices.forEach(flushAcks), 100);
  const t0 = now();
  for (const d of devices) {
    d.acking = true;
    d.got.clear();
    const s = d.socket;
    d.socket = undefined;
    s?.terminate();
  }
  await Promise.all(
    devices.map((d) => {
      const delay = Math.random() * settings.windowS * 1000;
      d.reconnectAt = t0 + delay;
      return reconnect(storm, d, delay);
    }),
  );
  const allOpen = now();
  console.log(`# all ${settings.users} reconnected after ${Math.round(allOpen - t0)} ms`);
  const sampler = setInterval(() => {
    void counters(settings.metricPorts).then((c) => {
      const done = devices.filter((d) => d.completeAt !== undefined).length;
      console.log(
        JSON.stringify({
          t: Math.round((now() - t0) / 1000),
          complete: done,
          rss: rssMiB(settings.pid),
          ...c,
        }),
      );
    });
  }, 2000);
  while (now() - t0 < settings.timeoutS * 1000 && devices.some((d) => d.completeAt === undefined))
    await sleep(200);
  const lastComplete = Math.max(...devices.map((d) => d.completeAt ?? now()));
  // Acks settle, retries finish.
  await sleep(20_000);
  clearInterval(sampler);
  clearInterval(ackTimer);
  devices.forEach(flushAcks);
  await sleep(2000);
  const after = await counters(settings.metricPorts);
  // 4. What each device got after the reconnect, and the loss check through sync.
  const incomplete = devices.filter(
    (d) => d.completeAt === undefined && d.idx % settings.devicesPerUser === 0,
  );
  const missingMids = incomplete.flatMap((d) =>
    [...d.expected].filter((m) => !d.got.has(m)).map((m) => ({ d, m })),
  );
  const syncLeftover: string[] = [];
  // Sync is per user: ask once, through the user's first device.
  let lost = 0;
  await inBatches(devices, 20, async (d) => {
    if (d.idx % settings.devicesPerUser !== 0) return;
    const left = await syncLeft(settings.rest, d);
    syncLeftover.push(...left);
    const inSync = new Set(left);
    for (const m of d.expected) if (!d.got.has(m) && !inSync.has(m)) lost++;
  });
  const perDevice = devices.map((d) => d.midFramesAfter / Math.max(1, d.distinctAfter.size));
  perDevice.sort((a, b) => a - b);
  const completion = devices
    .filter((d) => d.completeAt !== undefined)
    .map((d) => d.completeAt! - d.openAt!)
    .sort((a, b) => a - b);
  const pct = (xs: number[], q: number) =>
    xs.length ? Math.round(xs[Math.min(xs.length - 1, Math.floor(q * xs.length))]! * 100) / 100 : 0;
  console.log(
    JSON.stringify(
      {
        users: settings.users,
        devicesPerUser: settings.devicesPerUser,
        storedPerUser: settings.stored,
        pendingPerUser: settings.pending,
        windowS: settings.windowS,
        reconnectedAllAfterMs: Math.round(allOpen - t0),
        connectTries: devices.reduce((s, d) => s + d.connectTries, 0),
        connectFailures: Object.fromEntries(connectFailures),
        closesDuringStorm: Object.fromEntries(closes),
        errorFrames: Object.fromEntries(errorCodes),
        usersComplete: settings.users - incomplete.length,
        lastCompleteAfterMs: Math.round(lastComplete - t0),
        openToCompleteMs: { p50: pct(completion, 0.5), p99: pct(completion, 0.99), max: pct(completion, 1) },
        missingOnSocket: missingMids.length,
        missingSample: missingMids.slice(0, 5).map(({ d, m }) => `${d.user} ${m}`),
        midFramesAfter: devices.reduce((s, d) => s + d.midFramesAfter, 0),
        distinctMidsAfter: devices.reduce((s, d) => s + d.distinctAfter.size, 0),
        framesPerDistinctMid: { p50: pct(perDevice, 0.5), p99: pct(perDevice, 0.99), max: pct(perDevice, 1) },
        syncLeftAfterAcks: syncLeftover.length,
        lost,
        fleet: diff(before, after),
        rssMiB: rssMiB(settings.pid),
      },
      null,
      1,
    ),
  );
  for (const d of devices) d.socket?.terminate();
  process.exit(0);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
