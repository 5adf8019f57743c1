import { setTimeout as sleep } from 'node:timers/promises';
/**
 * Sustained overload against a running fleet (`npm start`): open-loop 1:1 traffic in phases
 * (`--phases 12000:150,500:120,0:60` = rate:seconds), a sample every `--sample-s` seconds (fleet
 * RSS/CPU, heaps, event-loop lag, pending publish bytes, session-ms counters, consumer lag per
 * group), then a loss check: every message answered `accepted` must have reached its recipient on
 * the socket or be served by `GET /v1/messages`.
 *
 *   npx tsx tools/bench/src/overload.ts --pid <fleet node pid> --phases 12000:150,500:120,0:60
 */
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { Kafka, logLevel } from 'kafkajs';
import WebSocket from 'ws';
import { devToken, exitUnlessFleetAnswers } from './cli';
import { metricSum, parseProcStat, parseRss, scanFrame, sourceAddress } from './stats';

const USAGE = `Sustained overload against a running fleet (start it first: npm start).

  npx tsx tools/bench/src/overload.ts --pid <fleet node pid> [options]

  --pid N            the fleet's process, for its RSS and CPU (0: not sampled)
  --phases LIST      rate:seconds,... open-loop 1:1 phases (default 12000:150,500:120,0:30)
  --pairs N          socket pairs, each user sends to its partner (default 250)
  --sample-s N       seconds between samples (default 10)
  --drain-s N        longest wait for every accepted message after the phases (default 600)
  --ack-every-ms N   how often each socket acks what it received (default 100)
  --ws URL           the ws-gateway (default ws://127.0.0.1:8080/v1/ws)
  --rest URL         the rest-gateway (default http://127.0.0.1:8081)
  --kafka HOST:PORT  the broker, for consumer lag (default 127.0.0.1:9092)
  --prefix S         user id prefix (default a fresh one)
  --help             this text

Service metrics are read from npm start's default ports (9101-9106, 8081, 9080).
`;

interface Settings {
  ws: string;
  rest: string;
  pid: number;
  pairs: number;
  sampleS: number;
  drainS: number;
  ackEveryMs: number;
  phases: Array<{ rate: number; secs: number }>;
  userPrefix: string;
  kafka: string;
}

/** The command line's settings; undefined for --help. */
function parseSettings(): Settings | undefined {
  const { values } = parseArgs({
    options: {
      pid: { type: 'string', default: '0' },
      phases: { type: 'string', default: '12000:150,500:120,0:30' },
      pairs: { type: 'string', default: '250' },
      'sample-s': { type: 'string', default: '10' },
      'drain-s': { type: 'string', default: '600' },
      'ack-every-ms': { type: 'string', default: '100' },
      ws: { type: 'string', default: 'ws://127.0.0.1:8080/v1/ws' },
      rest: { type: 'string', default: 'http://127.0.0.1:8081' },
      kafka: { type: 'string', default: '127.0.0.1:9092' },
      prefix: { type: 'string', default: `ov${Date.now().toString(36)}` },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) return undefined;
  return {
    ws: values.ws,
    rest: values.rest,
    pid: Number(values.pid),
    pairs: Number(values.pairs),
    sampleS: Number(values['sample-s']),
    drainS: Number(values['drain-s']),
    ackEveryMs: Number(values['ack-every-ms']),
    phases: values.phases.split(',').map((p) => {
      const [rate, secs] = p.split(':').map(Number);
      return { rate: rate!, secs: secs! };
    }),
    userPrefix: values.prefix,
    kafka: values.kafka,
  };
}
const METRIC_PORTS = [9101, 9102, 9103, 9104, 9105, 9106, 8081, 9080];

/** Messages a run can number (`o<seq>`): its arrays are this long. */
const MAX = 4_000_000;

interface Client {
  user: string;
  idx: number;
  partner: number;
  socket: WebSocket;
  pending: string[];
  closed?: number;
}

/** What one sample's window saw. */
const newWindow = () => ({ latencies: [] as number[], accepted: 0, refused: 0, received: 0, sent: 0 });

/** A run's sockets and every message it sent, by sequence number, with what came back for it. */
function newRun(settings: Settings) {
  return {
    settings,
    dueAt: new Float64Array(MAX), // ms, performance.now()
    recvAt: new Float64Array(MAX), // first arrival on the socket
    state: new Uint8Array(MAX), // 0 sent, 1 accepted, 2 refused
    senderOf: new Uint32Array(MAX),
    seq: 0,
    clients: [] as Client[],
    errorCodes: new Map<string, number>(),
    closes: new Map<number, number>(),
    duplicates: 0,
    received: 0,
    window: newWindow(),
    phaseName: '',
  };
}
type Run = ReturnType<typeof newRun>;

const token = (run: Run, user: string) => devToken(run.settings.rest, user);

function seqOf(mid: string): number {
  const at = mid.lastIndexOf(':o');
  return at < 0 ? -1 : Number(mid.slice(at + 2));
}

function onFrame(run: Run, c: Client, text: string) {
  const { state, recvAt, dueAt } = run;
  const f = scanFrame(text);
  if (f.mid !== undefined && f.type !== 'accepted') {
    c.pending.push(f.mid);
    if (c.pending.length >= 500) flush(c);
  }
  if (f.type === 'accepted') {
    const s = seqOf(f.mid!);
    if (s >= 0 && state[s] === 0) {
      state[s] = 1;
      run.window.accepted++;
    }
  } else if (f.type === 'message') {
    const s = seqOf(f.mid!);
    if (s < 0) return;
    if (recvAt[s] !== 0) run.duplicates++;
    else {
      recvAt[s] = performance.now();
      run.received++;
      run.window.received++;
      run.window.latencies.push(recvAt[s] - dueAt[s]);
    }
  } else if (f.type === 'error') {
    const code = /"code":"([^"]+)"/.exec(text)?.[1] ?? '?';
    const key = code === 'rate_limited' || code === 'unavailable' ? code : `${code}: ${text.slice(0, 160)}`;
    run.errorCodes.set(key, (run.errorCodes.get(key) ?? 0) + 1);
    const id = /"id":"o(\d+)"/.exec(text)?.[1];
    if (id !== undefined && state[Number(id)] === 0) {
      state[Number(id)] = 2;
      run.window.refused++;
    }
  }
}

function flush(c: Client) {
  while (c.pending.length > 0) {
    const mids = c.pending.splice(0, 500);
    if (c.socket.readyState === WebSocket.OPEN)
      c.socket.send(`{"type":"ack","mids":${JSON.stringify(mids)}}`);
  }
}

async function open(run: Run, idx: number, user: string, partner: number): Promise<Client> {
  const socket = new WebSocket(`${run.settings.ws}?token=${await token(run, user)}`, {
    localAddress: sourceAddress(idx),
    perMessageDeflate: false,
    maxPayload: 4 * 1024 * 1024,
  });
  const c: Client = { user, idx, partner, socket, pending: [] };
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.once('message', () => resolve());
  });
  socket.on('message', (d) => onFrame(run, c, d.toString()));
  socket.on('close', (code) => {
    c.closed = code;
    run.closes.set(code, (run.closes.get(code) ?? 0) + 1);
  });
  return c;
}

// ---- sampling ----
async function scrape(): Promise<Map<number, string>> {
  const out = new Map<number, string>();
  await Promise.all(
    METRIC_PORTS.map(async (p) => {
      try {
        const res = await fetch(`http://127.0.0.1:${p}/metrics`, { signal: AbortSignal.timeout(5000) });
        out.set(p, await res.text());
      } catch {
        out.set(p, '');
      }
    }),
  );
  return out;
}
function procStat(pid: number): { rssMiB: number; ticks: number } {
  try {
    return {
      rssMiB: parseRss(readFileSync(`/proc/${pid}/status`, 'utf8')) / 1048576,
      ticks: parseProcStat(readFileSync(`/proc/${pid}/stat`, 'utf8')).ticks,
    };
  } catch {
    return { rssMiB: 0, ticks: 0 };
  }
}

/** What the samples read besides the run: the broker's offsets, the fleet's process. */
function newSampler(settings: Settings) {
  const kafka = new Kafka({
    brokers: [settings.kafka],
    logLevel: logLevel.NOTHING,
    clientId: 'overload-probe',
  });
  return {
    admin: kafka.admin(),
    groupsSeen: new Map<string, Set<string>>(), // group -> topics
    t0: performance.now(),
    lastTicks: 0,
    lastSampleAt: 0,
    samples: [] as unknown[],
  };
}
type Sampler = ReturnType<typeof newSampler>;

async function consumerLag(
  { admin, groupsSeen }: Sampler,
  pages: Map<number, string>,
): Promise<Record<string, number>> {
  for (const text of pages.values())
    for (const m of text.matchAll(/parley_kafka_consumed_total\{topic="([^"]+)",group="([^"]+)"/g)) {
      const set = groupsSeen.get(m[2]!) ?? new Set<string>();
      set.add(m[1]!);
      groupsSeen.set(m[2]!, set);
    }
  const out: Record<string, number> = {};
  const ends = new Map<string, Map<number, number>>();
  for (const [group, topics] of groupsSeen) {
    try {
      const committed = await admin.fetchOffsets({ groupId: group, topics: [...topics] });
      for (const t of committed) {
        let end = ends.get(t.topic);
        if (!end) {
          end = new Map((await admin.fetchTopicOffsets(t.topic)).map((p) => [p.partition, Number(p.high)]));
          ends.set(t.topic, end);
        }
        let lag = 0;
        for (const p of t.partitions) {
          const c = Number(p.offset);
          lag += (end.get(p.partition) ?? 0) - (c < 0 ? 0 : c);
        }
        if (lag > 0 || /inbound|delivery|offline/.test(t.topic))
          out[`${group}@${t.topic.replace(/^parley\.|\.v1$/g, '')}`] = lag;
      }
    } catch (err) {
      out[`${group}!`] = -1;
      void err;
    }
  }
  return out;
}

async function sample(run: Run, sampler: Sampler) {
  const w = run.window;
  run.window = newWindow();
  const pages = await scrape();
  const proc = procStat(run.settings.pid);
  const now = performance.now();
  const cpu = sampler.lastSampleAt
    ? (proc.ticks - sampler.lastTicks) / 100 / ((now - sampler.lastSampleAt) / 1000)
    : 0;
  sampler.lastTicks = proc.ticks;
  sampler.lastSampleAt = now;
  const lat = w.latencies.sort((a, b) => a - b);
  const pct = (q: number) =>
    lat.length ? Math.round(lat[Math.min(lat.length - 1, Math.floor(q * lat.length))]!) : 0;
  const main = pages.get(9101) ?? '';
  const gw = pages.get(9080) ?? '';
  const sess = pages.get(9103) ?? '';
  const lag = await consumerLag(sampler, pages).catch(() => ({}));
  const s = {
    t: Math.round((now - sampler.t0) / 1000),
    phase: run.phaseName,
    sent: w.sent,
    acc: w.accepted,
    ref: w.refused,
    recv: w.received,
    p50: pct(0.5),
    p99: pct(0.99),
    rss: Math.round(proc.rssMiB),
    cpu: Math.round(cpu * 100) / 100,
    heapMain: Math.round(metricSum(main, 'parley_nodejs_heap_size_used_bytes') / 2 ** 20),
    heapGw: Math.round(metricSum(gw, 'parley_nodejs_heap_size_used_bytes') / 2 ** 20),
    extMain: Math.round(metricSum(main, 'parley_nodejs_external_memory_bytes') / 2 ** 20),
    elMain: Math.round(metricSum(main, 'parley_nodejs_eventloop_lag_p99_seconds') * 1000),
    elGw: Math.round(metricSum(gw, 'parley_nodejs_eventloop_lag_p99_seconds') * 1000),
    pendPub: Math.round(metricSum(gw, 'parley_ws_pending_publish_bytes') / 1024),
    pushed: metricSum(sess, 'parley_session_pushed_total'),
    acked: metricSum(sess, 'parley_session_acked_total'),
    offline: metricSum(sess, 'parley_session_offline_total'),
    ackLag: metricSum(sess, 'parley_session_ack_read_lag_seconds'),
    wsDelivered: metricSum(gw, 'parley_ws_delivered_total'),
    lag,
  };
  sampler.samples.push(s);
  console.log(JSON.stringify(s));
}

async function runPhase(run: Run, rate: number, secs: number) {
  run.phaseName = `${rate}/s`;
  const { clients } = run;
  const senders = clients.filter((c) => c.closed === undefined);
  const start = performance.now();
  let sent = 0;
  let rr = 0;
  let maxLag = 0;
  await new Promise<void>((resolve) => {
    const timer = setInterval(() => {
      const now = performance.now();
      const elapsed = Math.min(now - start, secs * 1000);
      const due = Math.floor((elapsed * rate) / 1000) - sent;
      if (due > 0) maxLag = Math.max(maxLag, now - (start + (sent * 1000) / rate));
      for (let k = 0; k < due; k++) {
        const c = senders[rr++ % senders.length]!;
        if (c.socket.readyState !== WebSocket.OPEN) continue;
        const s = run.seq++;
        run.dueAt[s] = start + ((sent + k) * 1000) / rate;
        run.senderOf[s] = c.idx;
        c.socket.send(
          `{"type":"message","id":"o${s}","to":"${clients[c.partner]!.user}","body":{"t":0,"s":0,"p":"${'x'.repeat(64)}"}}`,
        );
        run.window.sent++;
      }
      if (due > 0) sent += due;
      if (now - start >= secs * 1000) {
        clearInterval(timer);
        resolve();
      }
    }, 2);
  });
  console.log(`# phase ${rate}/s × ${secs}s: sent ${sent}, generator max lag ${Math.round(maxLag)} ms`);
}

async function main() {
  const settings = parseSettings();
  if (!settings) {
    console.log(USAGE);
    process.exit(0);
  }
  const run = newRun(settings);
  const sampler = newSampler(settings);
  const { clients, state, recvAt } = run;
  await exitUnlessFleetAnswers(settings.rest, USAGE);
  await sampler.admin.connect();
  const users = Array.from({ length: settings.pairs * 2 }, (_, i) => `${settings.userPrefix}u${i}`);
  for (let i = 0; i < users.length; i += 50)
    clients.push(
      ...(await Promise.all(users.slice(i, i + 50).map((u, k) => open(run, i + k, u, (i + k) ^ 1)))),
    );
  console.log(`# ${clients.length} sockets open, users ${settings.userPrefix}u*`);
  setInterval(() => clients.forEach((c) => c.pending.length && flush(c)), settings.ackEveryMs);
  const sampling = setInterval(() => void sample(run, sampler), settings.sampleS * 1000);
  await sample(run, sampler);
  for (const p of settings.phases) await runPhase(run, p.rate, p.secs);
  // drain: wait until every accepted message arrived, or --drain-s
  run.phaseName = 'drain';
  const drainStart = performance.now();
  const missing = () => {
    let n = 0;
    for (let s = 0; s < run.seq; s++) if (state[s] === 1 && recvAt[s] === 0) n++;
    return n;
  };
  let m = missing();
  while (m > 0 && performance.now() - drainStart < settings.drainS * 1000) {
    await sleep(2000);
    m = missing();
  }
  console.log(
    `# drain: ${m} accepted not yet on a socket after ${Math.round((performance.now() - drainStart) / 1000)} s`,
  );
  clearInterval(sampling);
  await sample(run, sampler);
  // recovery: first window after the overload where p99 came back under 100 ms
  await lossCheck(run);
  await sampler.admin.disconnect();
  for (const c of clients) c.socket.terminate();
  process.exit(0);
}

/** Every message answered `accepted` that no socket got must be served by sync: prints the tally. */
async function lossCheck(run: Run) {
  const { clients, state, recvAt, senderOf } = run;
  const want = new Map<number, number[]>(); // recipient idx -> seqs
  let accepted = 0;
  let refused = 0;
  let unanswered = 0;
  for (let s = 0; s < run.seq; s++) {
    if (state[s] === 1) accepted++;
    else if (state[s] === 2) refused++;
    else unanswered++;
    if ((state[s] === 1 || state[s] === 0) && recvAt[s] === 0) {
      const r = clients[senderOf[s]!]!.partner;
      const list = want.get(r) ?? [];
      list.push(s);
      want.set(r, list);
    }
  }
  let bySync = 0;
  let lost = 0;
  let unansweredDelivered = 0;
  const lostSamples: string[] = [];
  for (const [r, list] of want) {
    const tok = await token(run, clients[r]!.user);
    const found = new Set<number>();
    let after: string | null = null;
    for (;;) {
      const url = `${run.settings.rest}/v1/messages?limit=500${after ? `&after=${encodeURIComponent(after)}` : ''}`;
      const res = await fetch(url, { headers: { authorization: `Bearer ${tok}` } });
      const body = (await res.json()) as { messages: Array<{ mid: string }>; next: string | null };
      for (const msg of body.messages) found.add(seqOf(msg.mid));
      if (!body.next || body.messages.length === 0) break;
      after = body.next;
    }
    for (const s of list) {
      if (found.has(s)) {
        if (state[s] === 1) bySync++;
        else unansweredDelivered++;
      } else if (state[s] === 1) {
        lost++;
        if (lostSamples.length < 10) lostSamples.push(`${clients[senderOf[s]!]!.user}:o${s}`);
      }
    }
  }
  console.log(
    JSON.stringify({
      sent: run.seq,
      accepted,
      refused,
      unanswered,
      receivedOnSocket: run.received,
      duplicates: run.duplicates,
      acceptedFoundBySync: bySync,
      unansweredFoundBySync: unansweredDelivered,
      acceptedLost: lost,
      lostSamples,
      errorCodes: Object.fromEntries(run.errorCodes),
      closes: Object.fromEntries(run.closes),
    }),
  );
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
