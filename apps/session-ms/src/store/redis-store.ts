import { randomUUID } from 'node:crypto';
import Redis from 'ioredis';
import {
  Completed,
  Connection,
  ERASED_CONNECTIONS_MS,
  FORGET_GATEWAY_AFTER_MS,
  RESTART_CLOCK_MARGIN_MS,
  Pending,
  ReplicaAnswer,
  SessionStore,
  startedSinceState,
  TrackOutcome,
  userKey,
} from './session-store';

/*
 * Keys (all under the client's keyPrefix):
 *   conn:<user>   hash connId -> Connection JSON      seen:<user>  last seen (ms)
 *   erased:<user>  set of the connIds an account erasure forgot (TTL ERASED_CONNECTIONS_MS)
 *   gw:<gateway>  alive marker with a TTL              due          zset "<user>\n<mid>" -> due time
 *   gwseen:<gateway>  beat within FORGET_GATEWAY_AFTER_MS (a marker with that TTL)
 *   gwlast        hash gateway -> its last beat (ms), until it is forgotten: when the users of
 *                 sockets that died with it were last seen
 *   gwconns:<gateway>  set "<user>\n<connId>" of its connections   gateways  set of gateway ids
 *   gwowe:<gateway>  to be asked to announce its connections (TTL FORGET_GATEWAY_AFTER_MS)
 *   gwstart:<gateway>  its process's start, as its heartbeats say (TTL FORGET_GATEWAY_AFTER_MS)
 *   gwbeat        a heartbeat was processed lately (TTL)  gwsince  when the first one was (ms)
 *   gwflow        "<since> <ttl>": heartbeats processed without a gap since then (TTL)
 *   pend:<user>   hash mid -> {seq, frame, stored} JSON  att:<user>   hash mid -> attempts
 *   trackseq      counter that orders a user's pendings (seq)
 *   ack:<user>:<mid>  acked marker with a TTL
 *   stored:<user>:<mid>  in storage though untracked (markStored), with a TTL
 *   readers       set of session-ms replicas           read:<replica>  its read position (ms), with a TTL
 *   epoch         written once (the time), no TTL: since when Redis holds its state (gatewayAlive);
 *                 a new one later means Redis lost its data (lostAt)
 *   waitmark:<id>  a token a process writes before each WAIT (awaitReplicas), with a TTL
 * The scripts build pend/att keys from the zset member, so this layout needs a single Redis
 * (or one hash slot), not a cluster.
 */

// ARGV[2] is a JSON object: the order in which it was tracked goes in front of its other keys. A
// replay (ARGV[6]) of a pending one marks it stored (its JSON ends with the "stored" key) and starts
// its attempts and due time again (SessionStore.track).
const TRACK = `
if redis.call('EXISTS', KEYS[3]) == 1 then return 2 end
local held = redis.call('HGET', KEYS[1], ARGV[1])
if held then
  if ARGV[6] == '1' then
    if string.sub(held, -15) == '"stored":false}' then
      redis.call('HSET', KEYS[1], ARGV[1], string.sub(held, 1, -16) .. '"stored":true}')
    end
    redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
    redis.call('ZADD', KEYS[4], ARGV[4], ARGV[5])
  end
  return 0
end
local seq = redis.call('INCR', KEYS[5])
redis.call('HSET', KEYS[1], ARGV[1], '{"seq":' .. seq .. ',' .. string.sub(ARGV[2], 2))
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[5])
return 1`;

// The ack marker holds what the ack completed: p(ushed) or s(tored); a mid completed before answers
// that again; 1: it completed nothing, and a copy that comes later is a duplicate. An ack of one's
// own mid that completed nothing leaves no marker (SessionStore.complete). The pending JSON ends
// with its "stored" key (TRACK keeps it last).
// KEYS: pend, att, due, then each mid's ack marker, then each mid's stored mark (markStored).
const COMPLETE = `
local n = (#KEYS - 3) / 2
local out = {}
for j = 1, n do
  local mid = ARGV[j + 3]
  local marker = KEYS[3 + j]
  local raw = redis.call('HGET', KEYS[1], mid)
  local markedStored = redis.call('DEL', KEYS[3 + n + j]) == 1
  local completed
  if raw then
    completed = (markedStored or string.sub(raw, -14) == '"stored":true}') and 's' or 'p'
    redis.call('HDEL', KEYS[1], mid)
    redis.call('HDEL', KEYS[2], mid)
    redis.call('ZREM', KEYS[3], ARGV[2] .. '\\n' .. mid)
  else
    completed = redis.call('GET', marker)
    if completed ~= 'p' and completed ~= 's' then
      completed = markedStored and 's' or '1'
    end
  end
  if completed ~= '1' or (ARGV[3] == '1' and string.sub(mid, 1, #ARGV[2] + 1) ~= ARGV[2] .. ':') then
    redis.call('SET', marker, completed, 'PX', ARGV[1])
  end
  out[#out + 1] = completed
end
return out`;

const CLAIM = `
local members = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local leasedUntil = tonumber(ARGV[5]) + tonumber(ARGV[2])
local out = {}
for _, member in ipairs(members) do
  local sep = string.find(member, '\\n', 1, true)
  local user = string.sub(member, 1, sep - 1)
  local mid = string.sub(member, sep + 1)
  local raw = redis.call('HGET', ARGV[4] .. 'pend:' .. user, mid)
  if raw then
    local attempts = redis.call('HINCRBY', ARGV[4] .. 'att:' .. user, mid, 1)
    redis.call('ZADD', KEYS[1], leasedUntil, member)
    out[#out + 1] = user
    out[#out + 1] = mid
    out[#out + 1] = raw
    out[#out + 1] = tostring(attempts)
  else
    redis.call('ZREM', KEYS[1], member)
  end
end
return out`;

const READ_UP_TO = `
local earliest = false
for _, replica in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local at = redis.call('GET', ARGV[1] .. 'read:' .. replica)
  if not at then
    redis.call('SREM', KEYS[1], replica)
  elseif not earliest or tonumber(at) < tonumber(earliest) then
    earliest = at
  end
end
return earliest`;

// Last seen only moves forward: a late connection-down from another gateway names an older time.
const SEEN_AT = `
local seen = redis.call('GET', KEYS[1])
if not seen or tonumber(seen) < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end`;

// Adds a connection, unless it was registered before its gateway's noted start (gwstart) less
// ARGV[3]: one of an earlier process read after the restart was noted, a socket gone.
// KEYS: seen:<user>, conn:<user>, gwconns:<gateway>, gateways, gwstart:<gateway>.
// ARGV: at, connId, margin, Connection JSON, "<user>\n<connId>", gateway.
const ADD_CONNECTION = `${SEEN_AT}
local started = redis.call('GET', KEYS[5])
if started and tonumber(ARGV[1]) < tonumber(started) - tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[4])
redis.call('SADD', KEYS[3], ARGV[5])
redis.call('SADD', KEYS[4], ARGV[6])
return 1`;

// Drops each pending deliverable whose attempts and stored flag are still those read for its
// hand-off (a replay on a connect that started it again since keeps it: SessionStore.drop).
// KEYS: pend:<user>, att:<user>, due. ARGV: per mid, the mid, "<user>\n<mid>", attempts, stored (1/0).
const DROP_UNCHANGED = `
for i = 1, #ARGV, 4 do
  local held = redis.call('HGET', KEYS[1], ARGV[i])
  if held then
    local attempts = tonumber(redis.call('HGET', KEYS[2], ARGV[i]) or '0')
    local stored = string.sub(held, -14) == '"stored":true}'
    if attempts == tonumber(ARGV[i + 2]) and stored == (ARGV[i + 3] == '1') then
      redis.call('HDEL', KEYS[1], ARGV[i])
      redis.call('HDEL', KEYS[2], ARGV[i])
      redis.call('ZREM', KEYS[3], ARGV[i + 1])
    end
  end
end`;

// Removes a connection from its user's hash and from its gateway's set (the gateway is in its JSON),
// and notes last seen, also of one it does not hold (its connect lost with Redis's data), except
// of one an erasure forgot (erased:<user>, kept: a connection-down read again notes nothing either).
// KEYS: seen:<user>, conn:<user>, erased:<user>. ARGV: at, connId, key prefix, "<user>\n<connId>".
const REMOVE_CONNECTION = `
local raw = redis.call('HGET', KEYS[2], ARGV[2])
if raw then
  redis.call('HDEL', KEYS[2], ARGV[2])
  redis.call('SREM', ARGV[3] .. 'gwconns:' .. cjson.decode(raw).gateway, ARGV[4])
elseif redis.call('SISMEMBER', KEYS[3], ARGV[2]) == 1 then
  return
end
${SEEN_AT}`;

// A connection forgotten without its connection-down died with its gateway: its user was last seen
// at the gateway's last beat (gwlast), at most ARGV[2] (a restart's start). Defines seenUntil(user).
const SEEN_UNTIL_LAST_BEAT = `
local lastBeat = redis.call('HGET', ARGV[3] .. 'gwlast', ARGV[1])
local function seenUntil(user)
  if not lastBeat then return end
  local at = math.min(tonumber(lastBeat), tonumber(ARGV[2]))
  local key = ARGV[3] .. 'seen:' .. user
  local seen = redis.call('GET', key)
  if not seen or tonumber(seen) < at then redis.call('SET', key, string.format('%d', at)) end
end`;

// The user ARGV[4] of a connection forgotten here was last seen at its gateway's last beat.
// ARGV: gateway, a time past any beat, key prefix, user.
const FORGET_SEEN = `${SEEN_UNTIL_LAST_BEAT}
seenUntil(ARGV[4])`;

// Forgets up to ARGV[4] connections of a gateway unseen past the horizon (re-checked here, so a
// gateway that beats again meanwhile keeps the rest): 0 once none are left and the gateway is
// forgotten, -1 when it is seen again. KEYS: gw, gwseen, gwconns of the gateway, gateways.
// ARGV: gateway, a time past any beat, key prefix, count.
const FORGET_GATEWAY = `${SEEN_UNTIL_LAST_BEAT}
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
local members = redis.call('SPOP', KEYS[3], tonumber(ARGV[4]))
for _, member in ipairs(members) do
  local sep = string.find(member, '\\n', 1, true)
  local user = string.sub(member, 1, sep - 1)
  if redis.call('HDEL', ARGV[3] .. 'conn:' .. user, string.sub(member, sep + 1)) == 1 then seenUntil(user) end
end
if #members == 0 then
  redis.call('SREM', KEYS[4], ARGV[1])
  redis.call('HDEL', ARGV[3] .. 'gwlast', ARGV[1])
end
return #members`;

// Forgets, of the gwconns members in ARGV[4..], the connections of gateway ARGV[1] registered
// before ARGV[2]; members whose connection is gone leave the set too.
const FORGET_STARTED_BEFORE = `${SEEN_UNTIL_LAST_BEAT}
local n = 0
for i = 4, #ARGV do
  local member = ARGV[i]
  local sep = string.find(member, '\\n', 1, true)
  local key = ARGV[3] .. 'conn:' .. string.sub(member, 1, sep - 1)
  local connId = string.sub(member, sep + 1)
  local raw = redis.call('HGET', key, connId)
  local c = raw and cjson.decode(raw)
  if not c or (c.gateway == ARGV[1] and tonumber(c.at) < tonumber(ARGV[2])) then
    if c then
      redis.call('HDEL', key, connId)
      seenUntil(c.user)
      n = n + 1
    end
    redis.call('SREM', KEYS[1], member)
  end
end
return n`;

// Marks mids stored (markStored), except one an ack completed before: that ack, or the drop after
// it, told storage, and a mark left behind would take the ack of a later copy for one of the stored
// copy. KEYS: each mid's ack marker, then its stored mark. ARGV: ttl.
const MARK_STORED = `
local n = #KEYS / 2
for j = 1, n do
  local completed = redis.call('GET', KEYS[j])
  if completed ~= 'p' and completed ~= 's' then redis.call('SET', KEYS[n + j], '1', 'PX', ARGV[1]) end
end`;

/**
 * A command unanswered this long (no byte from Redis while one is awaited) gives up on the
 * connection: a Redis host gone without a reset (a lost node, a partition) would otherwise hold
 * every command until TCP gives up, about 15 minutes. The connection is dropped and made again (to
 * whatever the name now points at, after a failover) and what was awaiting an answer is sent again,
 * which the scripts take (a resent one finds its own work done). Well above a stall of Redis's own
 * (a fork for a snapshot, a slow disk under appendfsync), which is waited out.
 */
export const REDIS_SOCKET_TIMEOUT_MS = 5000;

/** READONLY met again within this after the last: the name still points at a replica. */
const READONLY_STREAK_MS = 5000;
/** How long to wait before connecting again while the name still points at a replica. */
const READONLY_RECONNECT_MS = 1000;

type ScriptArg = string | number;

/** What `awaitReplicas` waits for: Redis's `WAIT replicas timeoutMs`. */
export interface ReplicaWaitSettings {
  replicas: number;
  /** Below REDIS_SOCKET_TIMEOUT_MS: a longer WAIT would be taken for a silent server. */
  timeoutMs: number;
}

/**
 * How long a process's wait mark lives unwritten. A mark found gone after half of it (no commit to
 * vouch for meanwhile) is taken for expired, not lost.
 */
const WAIT_MARK_TTL_MS = 24 * 3_600_000;

/**
 * The scripts as ioredis commands: each goes as EVAL the first time on a connection, then as
 * EVALSHA (its 40-character hash instead of its text, which Redis would otherwise hash again on
 * every call), and as EVAL again after a NOSCRIPT (a restarted or flushed Redis). Each takes the
 * number of keys, the keys and the arguments, as EVAL does. The scripts inside a MULTI stay EVALs:
 * a NOSCRIPT there would fail the script alone while the transaction's other commands ran.
 */
function defineScripts(redis: Redis) {
  const define = (name: string, lua: string) => {
    redis.defineCommand(name, { lua });
    const commands = redis as unknown as Record<string, (...args: ScriptArg[]) => Promise<unknown>>;
    return (numberOfKeys: number, ...keysAndArgs: ScriptArg[]) =>
      commands[name](numberOfKeys, ...keysAndArgs);
  };
  return {
    addConnection: define('parleyAddConnection', ADD_CONNECTION),
    removeConnection: define('parleyRemoveConnection', REMOVE_CONNECTION),
    forgetGateway: define('parleyForgetGateway', FORGET_GATEWAY),
    forgetStartedBefore: define('parleyForgetStartedBefore', FORGET_STARTED_BEFORE),
    track: define('parleyTrack', TRACK),
    complete: define('parleyComplete', COMPLETE),
    markStored: define('parleyMarkStored', MARK_STORED),
    claim: define('parleyClaim', CLAIM),
    readUpTo: define('parleyReadUpTo', READ_UP_TO),
  };
}

const TRACK_OUTCOMES = ['pending', 'tracked', 'acked'] as const;
const COMPLETED: Record<string, Completed | undefined> = { p: 'pushed', s: 'stored' };

/** The JSON of a pending one: `stored` stays its last key (TRACK rewrites it in place). */
interface StoredPending {
  /** Absent in what an earlier version tracked. */
  seq?: number;
  frame: Pending['frame'];
  stored: boolean;
}

export class RedisSessionStore implements SessionStore {
  readonly outlivesProcess = true;
  private readonly prefix: string;
  /** The `epoch` marker as this client last read it. */
  private knownEpoch: string | undefined;
  /** Why the connection last failed, for readiness while it is down. */
  private lastError: Error | undefined;
  /** Connections made so far (ready events): tells a READONLY after a reconnect from one before it. */
  private connections = 0;
  /** The READONLY answers met lately: on which connection the first came, when the last did. */
  private readOnly: { connection: number; last: number } | undefined;
  /** The Lua scripts run outside a transaction, sent by their hash once a connection has them. */
  private readonly scripts: ReturnType<typeof defineScripts>;
  /** A connection of its own for WAIT, which blocks it: the other commands do not queue behind. */
  private readonly waitConnection: Redis | undefined;
  private readonly waitMarkKey = `waitmark:${randomUUID()}`;
  /**
   * The wait mark as this process last wrote it, the server process (run_id) it wrote it to, and
   * tokens it may have written since (a write that failed).
   */
  private waitMark: { token: string; at: number; maybe: string[]; server: string | undefined } | undefined;

  constructor(
    private readonly redis: Redis,
    private readonly forgetGatewayAfterMs = FORGET_GATEWAY_AFTER_MS,
    /** Told of each connection error, once until it changes or the connection is ready again. */
    private readonly onError?: (err: Error) => void,
    /** Told when the connection is ready again after an error onError was told of. */
    private readonly onRecovered?: (lastError: Error) => void,
    /** What awaitReplicas waits for; it waits for nothing without. */
    private readonly replicaWait?: ReplicaWaitSettings,
  ) {
    this.prefix = (redis.options.keyPrefix as string | undefined) ?? '';
    this.scripts = defineScripts(redis);
    if (replicaWait && replicaWait.replicas > 0) {
      // READONLY (the name still points at the demoted primary): reconnect, without sending again;
      // the caller asks again. Its errors are the main connection's, reported there.
      this.waitConnection = redis.duplicate({
        reconnectOnError: (err) => err.message.startsWith('READONLY'),
        retryStrategy: (times) => Math.min(times * 50, 2000),
      });
      this.waitConnection.on('error', () => undefined);
    }
    // Without a listener ioredis prints "[ioredis] Unhandled error event" to stderr on every retry.
    redis.on('error', (err: Error) => this.reportError(err));
    redis.on('ready', () => {
      if (this.lastError) this.onRecovered?.(this.lastError);
      this.lastError = undefined;
      this.connections++;
    });
  }

  static connect(
    url: string,
    keyPrefix = 'parley:session:',
    options: {
      tlsCa?: Buffer;
      onError?: (err: Error) => void;
      onRecovered?: (lastError: Error) => void;
      replicaWait?: ReplicaWaitSettings;
    } = {},
  ): RedisSessionStore {
    // eslint-disable-next-line prefer-const -- the client's callbacks need the store made from it
    let store: RedisSessionStore;
    const redis = new Redis(url, {
      keyPrefix,
      maxRetriesPerRequest: 3,
      enableAutoPipelining: true,
      socketTimeout: REDIS_SOCKET_TIMEOUT_MS,
      reconnectOnError: (err) => store.onReplyError(err),
      retryStrategy: (times) => store.reconnectDelay(times),
      ...(options.tlsCa && { tls: { ca: options.tlsCa } }),
    });
    store = new RedisSessionStore(
      redis,
      FORGET_GATEWAY_AFTER_MS,
      options.onError,
      options.onRecovered,
      options.replicaWait,
    );
    return store;
  }

  private reportError(err: Error): void {
    if (err.message !== this.lastError?.message) this.onError?.(err);
    this.lastError = err;
  }

  /**
   * ioredis's reconnectOnError. After a failover the old primary answers READONLY: reconnect (the
   * name now points at the new primary) and send again what it refused, instead of failing every
   * write for good. A READONLY again after that reconnect means the name still points at a replica
   * (REDIS_URL names one, or the failover has not moved the name yet): the command then fails
   * (READONLY is transient: its caller tries again), and so does readiness, rather than every write
   * waiting without end behind reconnects many times a second.
   */
  private onReplyError(err: Error): false | 1 | 2 {
    if (!err.message.startsWith('READONLY')) return false;
    const now = Date.now();
    if (!this.readOnly || now - this.readOnly.last > READONLY_STREAK_MS) {
      this.readOnly = { connection: this.connections, last: now };
      this.reportError(err);
      return 2;
    }
    this.readOnly.last = now;
    return this.readOnly.connection === this.connections ? 2 : 1;
  }

  /** Whether READONLY came lately also after a reconnect: the name points at a replica. */
  private onReplica(): boolean {
    const r = this.readOnly;
    return r !== undefined && r.connection !== this.connections && Date.now() - r.last <= READONLY_STREAK_MS;
  }

  /** ioredis's retryStrategy: its default, but about once a second while the name points at a replica. */
  private reconnectDelay(times: number): number {
    return this.onReplica() ? READONLY_RECONNECT_MS : Math.min(times * 50, 2000);
  }

  async addConnection(c: Connection): Promise<void> {
    await this.scripts.addConnection(
      5,
      `seen:${c.user}`,
      `conn:${c.user}`,
      `gwconns:${c.gateway}`,
      'gateways',
      `gwstart:${c.gateway}`,
      String(c.at),
      c.connId,
      String(RESTART_CLOCK_MARGIN_MS),
      JSON.stringify(c),
      userKey(c.user, c.connId),
      c.gateway,
    );
  }

  async removeConnection(user: string, connId: string, at: number): Promise<void> {
    await this.scripts.removeConnection(
      3,
      `seen:${user}`,
      `conn:${user}`,
      `erased:${user}`,
      String(at),
      connId,
      this.prefix,
      userKey(user, connId),
    );
  }

  async gatewayAlive(gateway: string, ttlMs: number, startedAt?: number): Promise<boolean> {
    const now = Date.now();
    const replies = await this.redis
      .multi()
      .exists(`gwseen:${gateway}`)
      .exists(`gwowe:${gateway}`)
      // Where Redis lost its data, what is written from now on is its state (lostAt tells the loss).
      .set('epoch', String(now), 'NX')
      .get('epoch')
      .sadd('gateways', gateway)
      .set(`gw:${gateway}`, '1', 'PX', ttlMs)
      .set(`gwseen:${gateway}`, '1', 'PX', this.forgetGatewayAfterMs)
      .set('gwbeat', '1', 'PX', ttlMs)
      .set('gwsince', String(now), 'NX')
      // Since when heartbeats have come without a gap of a ttl: a new flow after such a gap.
      .set('gwflow', `${now} ${ttlMs}`, 'PX', ttlMs, 'NX')
      .pexpire('gwflow', ttlMs)
      .hset('gwlast', gateway, String(now))
      .exec();
    const [seen, owed, , epoch] = (replies ?? []).map(([, reply]) => reply);
    if (owed === 1) return true;
    if (seen === 1) return false;
    return !startedSinceState(startedAt, Number(epoch), now, this.forgetGatewayAfterMs);
  }

  async oweAnnouncement(gateway: string): Promise<void> {
    await this.redis.set(`gwowe:${gateway}`, '1', 'PX', this.forgetGatewayAfterMs);
  }

  async announced(gateway: string): Promise<void> {
    await this.redis.del(`gwowe:${gateway}`);
  }

  async forgetGoneGateways(): Promise<number> {
    const [beat, since] = await this.redis.mget('gwbeat', 'gwsince');
    if (!this.mayForget(beat, since)) return 0;
    let forgotten = 0;
    for (const gateway of await this.redis.smembers('gateways')) {
      for (;;) {
        const keys = [`gw:${gateway}`, `gwseen:${gateway}`, `gwconns:${gateway}`, 'gateways'];
        const n = (await this.scripts.forgetGateway(
          4,
          ...keys,
          gateway,
          Number.MAX_SAFE_INTEGER,
          this.prefix,
          1000,
        )) as number;
        if (n <= 0) break;
        forgotten += n;
      }
    }
    return forgotten;
  }

  async gatewayStarted(gateway: string, startedAt: number): Promise<number> {
    const started = String(startedAt);
    const [[, previous]] = (await this.redis
      .multi()
      .get(`gwstart:${gateway}`)
      .pexpire(`gwstart:${gateway}`, this.forgetGatewayAfterMs)
      .exec())!;
    if (previous === started) return 0;
    const before = String(startedAt - RESTART_CLOCK_MARGIN_MS);
    let forgotten = 0;
    let cursor = '0';
    do {
      const [next, members] = await this.redis.sscan(`gwconns:${gateway}`, cursor, 'COUNT', 1000);
      cursor = next;
      if (members.length > 0)
        forgotten += (await this.scripts.forgetStartedBefore(
          1,
          `gwconns:${gateway}`,
          gateway,
          before,
          this.prefix,
          ...members,
        )) as number;
    } while (cursor !== '0');
    // Noted once they are forgotten: a failure part way leaves the start new to the batch retried.
    await this.redis.set(`gwstart:${gateway}`, started, 'PX', this.forgetGatewayAfterMs);
    return forgotten;
  }

  /** Whether a silent gateway can be told from a stalled heartbeat pipeline (FORGET_GATEWAY_AFTER_MS). */
  private mayForget(beat: string | null, since: string | null): boolean {
    return beat !== null && since !== null && Date.now() - Number(since) > this.forgetGatewayAfterMs;
  }

  async connectionsOf(users: string[]): Promise<Map<string, Connection[]>> {
    const result = new Map<string, Connection[]>();
    if (users.length === 0) return result;
    const all = (await this.heldConnections(users)).flat();
    const gateways = [...new Set(all.map((c) => c.gateway))];
    if (gateways.length === 0) return result;
    const marks = await this.redis.mget(
      ...gateways.flatMap((g) => [`gw:${g}`, `gwseen:${g}`]),
      'gwbeat',
      'gwsince',
      'gwflow',
    );
    const [beat, since, flow] = marks.slice(-3);
    // A gateway's silence says it is gone only once heartbeats have been read for a whole ttl: while
    // none are (Kafka away, this consumer stalled) every gateway had the same chance to beat.
    const [flowingSince, flowTtl] = (flow ?? '').split(' ').map(Number);
    const judging = flow !== null && Date.now() - flowingSince >= flowTtl;
    const live = new Set(
      gateways.filter((_, i) => marks[2 * i] !== null || (!judging && marks[2 * i + 1] !== null)),
    );
    const mayForget = this.mayForget(beat, since);
    // Neither mark: the gateway has not beaten for forgetGatewayAfterMs (or ever), so it is gone.
    const gone = new Set(
      gateways.filter((_, i) => mayForget && marks[2 * i] === null && marks[2 * i + 1] === null),
    );
    const stale = all.filter((c) => gone.has(c.gateway));
    if (stale.length > 0) {
      const removing = this.redis.multi();
      for (const c of stale)
        removing
          .hdel(`conn:${c.user}`, c.connId)
          .srem(`gwconns:${c.gateway}`, userKey(c.user, c.connId))
          .eval(FORGET_SEEN, 0, c.gateway, Number.MAX_SAFE_INTEGER, this.prefix, c.user);
      await removing.exec();
    }
    for (const c of all) {
      if (!live.has(c.gateway)) continue;
      const list = result.get(c.user) ?? [];
      list.push(c);
      result.set(c.user, list);
    }
    return result;
  }

  async forgetLastSeen(user: string) {
    const [held] = await this.heldConnections([user]);
    const forgetting = this.redis.multi();
    for (const c of held)
      forgetting
        .hdel(`conn:${user}`, c.connId)
        .srem(`gwconns:${c.gateway}`, userKey(user, c.connId))
        // Its close, a socket still open, notes no last seen (removeConnection).
        .sadd(`erased:${user}`, c.connId)
        .pexpire(`erased:${user}`, ERASED_CONNECTIONS_MS);
    await forgetting.del(`seen:${user}`).exec();
  }

  /** Every connection the store holds for each user, live or not. */
  private async heldConnections(users: string[]): Promise<Connection[][]> {
    const hashes = await Promise.all(users.map((u) => this.redis.hgetall(`conn:${u}`)));
    return hashes.map((h) => Object.values(h).map((raw) => JSON.parse(raw) as Connection));
  }

  async presence(users: string[]) {
    if (users.length === 0) return [];
    const [live, seen] = await Promise.all([
      this.connectionsOf(users),
      this.redis.mget(users.map((u) => `seen:${u}`)),
    ]);
    const lastSeen = users.map((_, i) => (seen[i] === null ? null : Number(seen[i])));
    // Connections still held on a gateway that stopped beating (not yet forgotten) died with it:
    // their user was online until its last beat.
    const offline = users.flatMap((user, i) => (live.has(user) ? [] : [i]));
    const held = offline.length === 0 ? [] : await this.heldConnections(offline.map((i) => users[i]));
    const gateways = [...new Set(held.flat().map((c) => c.gateway))];
    if (gateways.length > 0) {
      const beats = await this.redis.hmget('gwlast', ...gateways);
      const beatOf = new Map(gateways.map((g, i) => [g, beats[i] === null ? 0 : Number(beats[i])]));
      offline.forEach((i, j) => {
        for (const c of held[j]) {
          const beat = beatOf.get(c.gateway)!;
          if (beat > (lastSeen[i] ?? 0)) lastSeen[i] = beat;
        }
      });
    }
    return users.map((user, i) => ({ user, online: live.has(user), lastSeen: lastSeen[i] }));
  }

  async track(p: Pending, dueAt: number): Promise<TrackOutcome> {
    const stored: StoredPending = { frame: p.frame, stored: p.stored };
    const outcome = await this.scripts.track(
      5,
      `pend:${p.user}`,
      `att:${p.user}`,
      `ack:${p.user}:${p.mid}`,
      'due',
      'trackseq',
      p.mid,
      JSON.stringify(stored),
      String(p.attempts),
      String(dueAt),
      userKey(p.user, p.mid),
      p.stored ? '1' : '0',
    );
    return TRACK_OUTCOMES[outcome as 0 | 1 | 2];
  }

  async complete(
    user: string,
    mids: string[],
    rememberMs: number,
    rememberNothing = true,
  ): Promise<Array<Completed | undefined>> {
    if (mids.length === 0) return [];
    const keys = [
      `pend:${user}`,
      `att:${user}`,
      'due',
      ...mids.map((mid) => `ack:${user}:${mid}`),
      ...mids.map((mid) => `stored:${user}:${mid}`),
    ];
    const out = (await this.scripts.complete(
      keys.length,
      ...keys,
      String(rememberMs),
      user,
      rememberNothing ? '1' : '0',
      ...mids,
    )) as string[];
    return out.map((completed) => COMPLETED[completed]);
  }

  async markStored(user: string, mids: string[], ttlMs: number): Promise<void> {
    if (mids.length === 0) return;
    const keys = [...mids.map((mid) => `ack:${user}:${mid}`), ...mids.map((mid) => `stored:${user}:${mid}`)];
    await this.scripts.markStored(keys.length, ...keys, String(ttlMs));
  }

  async drop(
    user: string,
    mids: string[],
    asRead?: Array<Pick<Pending, 'attempts' | 'stored'>>,
  ): Promise<string[]> {
    if (mids.length === 0) return [];
    const dropping = this.redis.multi();
    if (asRead)
      dropping.eval(
        DROP_UNCHANGED,
        3,
        `pend:${user}`,
        `att:${user}`,
        'due',
        ...mids.flatMap((mid, i) => [mid, userKey(user, mid), asRead[i].attempts, asRead[i].stored ? 1 : 0]),
      );
    else
      dropping
        .hdel(`pend:${user}`, ...mids)
        .hdel(`att:${user}`, ...mids)
        .zrem('due', ...mids.map((mid) => userKey(user, mid)));
    const first = asRead ? 1 : 3;
    for (const mid of mids) dropping.get(`ack:${user}:${mid}`);
    const replies = (await dropping.exec()) ?? [];
    return mids.filter((_, i) => replies[first + i]?.[1] === 'p');
  }

  async pendingOf(users: string[]): Promise<Map<string, Pending[]>> {
    const held = await Promise.all(
      users.map((user) =>
        Promise.all([this.redis.hgetall(`pend:${user}`), this.redis.hgetall(`att:${user}`)]),
      ),
    );
    const result = new Map<string, Pending[]>();
    users.forEach((user, i) => {
      const [raws, attempts] = held[i];
      const ordered = Object.entries(raws)
        .map(([mid, raw]) => ({ mid, held: JSON.parse(raw) as StoredPending }))
        .sort((a, b) => (a.held.seq ?? 0) - (b.held.seq ?? 0));
      if (ordered.length > 0)
        result.set(
          user,
          ordered.map(({ mid, held }) => pendingFrom(user, mid, held, attempts[mid] ?? '0')),
        );
    });
    return result;
  }

  async claimDue(dueBy: number, now: number, leaseMs: number, limit: number): Promise<Pending[]> {
    const out = (await this.scripts.claim(
      1,
      'due',
      String(dueBy),
      String(leaseMs),
      String(limit),
      this.prefix,
      String(now),
    )) as string[];
    const claimed: Array<{ seq: number; pending: Pending }> = [];
    for (let i = 0; i < out.length; i += 4) {
      const held = JSON.parse(out[i + 2]) as StoredPending;
      claimed.push({ seq: held.seq ?? 0, pending: pendingFrom(out[i], out[i + 1], held, out[i + 3]) });
    }
    // The script returns ties of due time by member (user, then mid): back in the order tracked.
    return claimed.sort((a, b) => a.seq - b.seq).map(({ pending }) => pending);
  }

  async reportReadUpTo(replica: string, at: number, ttlMs: number): Promise<void> {
    await this.redis.multi().set(`read:${replica}`, String(at), 'PX', ttlMs).sadd('readers', replica).exec();
  }

  async forgetReadUpTo(replica: string): Promise<void> {
    await this.redis.multi().del(`read:${replica}`).srem('readers', replica).exec();
  }

  async readUpTo(): Promise<number | undefined> {
    const earliest = (await this.scripts.readUpTo(1, 'readers', this.prefix)) as string | null;
    return earliest === null ? undefined : Number(earliest);
  }

  async lostAt(): Promise<number | undefined> {
    const [, read] = (await this.redis.multi().set('epoch', String(Date.now()), 'NX').get('epoch').exec())!;
    const epoch = read![1] as string;
    const known = this.knownEpoch;
    this.knownEpoch = epoch;
    return known !== undefined && epoch !== known ? Number(epoch) : undefined;
  }

  /**
   * What in Redis's setup that it can read works against session-ms (for a warning at start): a
   * `maxmemory-policy` that evicts. At `maxmemory` such a policy drops keys with a TTL (a gateway's
   * liveness marks: its users count offline, and an hour on their connections are forgotten; acked
   * and stored marks; read positions), and with `allkeys-*` any key (what awaits an ack, the
   * connections, `epoch`, which then reads as Redis found empty). `noeviction` refuses writes
   * instead, which session-ms waits out. Empty where it cannot tell (INFO refused by an ACL).
   */
  async setupWarnings(): Promise<string[]> {
    const info = await this.redis.info('memory').catch(() => '');
    const policy = /^maxmemory_policy:(\S+)/m.exec(info)?.[1];
    const limit = Number(/^maxmemory:(\d+)/m.exec(info)?.[1] ?? 0); // 0: no limit, nothing evicted
    if (policy === undefined || policy === 'noeviction' || limit === 0) return [];
    return [
      `redis maxmemory-policy is ${policy}: at maxmemory Redis evicts session-ms's keys (users then count offline, pending deliveries may be lost); set it to noeviction`,
    ];
  }

  async ping(): Promise<void> {
    // Not connected: say why at once, instead of a probe timing out behind the reconnects.
    if (this.redis.status !== 'ready' && this.lastError)
      throw new Error(`redis ${this.redis.status}: ${this.lastError.message}`);
    // PING works on a replica: writes do not.
    if (this.onReplica())
      throw new Error(
        'redis answers READONLY after reconnecting: REDIS_URL names a replica, or a failover has not moved the name yet',
      );
    await this.redis.ping();
  }

  get waitsForReplicas(): boolean {
    return this.waitConnection !== undefined;
  }

  /**
   * WAIT covers the writes made on its own connection, up to Redis's replication offset after the
   * last of them. A write of this process's wait mark on the WAIT connection sets that to the
   * offset of now, past every write any connection made before: the main connection's included.
   * A failover to a replica that lagged is told by the server: another process (run_id) than the
   * one the mark was written to last, which may lack writes made since (the mark tells only of
   * those before it), or one lacking that mark.
   */
  async awaitReplicas(): Promise<ReplicaAnswer> {
    const connection = this.waitConnection;
    if (!connection) return 'replicated';
    const token = randomUUID();
    const written = this.waitMark;
    let before: string | null;
    let server: string | undefined;
    try {
      // One transaction: the mark read and the process that holds it are the same server's.
      const [[setError, got], [infoError, info]] = (await connection
        .multi()
        .set(this.waitMarkKey, token, 'PX', WAIT_MARK_TTL_MS, 'GET')
        .info('server')
        .exec())!;
      if (setError || infoError) throw setError ?? infoError;
      before = got as string | null;
      server = /^run_id:(\w+)/m.exec(info as string)?.[1];
    } catch (err) {
      written?.maybe.push(token); // Redis may have it all the same
      throw err;
    }
    this.waitMark = { token, at: Date.now(), maybe: [], server };
    const expired = before === null && written && Date.now() - written.at > WAIT_MARK_TTL_MS / 2;
    const lost =
      written !== undefined &&
      (server !== written.server ||
        (!expired && before !== written.token && !written.maybe.includes(before!)));
    const acked = (await connection.wait(this.replicaWait!.replicas, this.replicaWait!.timeoutMs)) as number;
    if (lost) return 'lost';
    return acked >= this.replicaWait!.replicas ? 'replicated' : 'short';
  }

  async close(): Promise<void> {
    await Promise.all([this.redis, this.waitConnection].map((r) => r?.quit().catch(() => r.disconnect())));
  }
}

function pendingFrom(user: string, mid: string, held: StoredPending, attempts: string): Pending {
  return { user, mid, frame: held.frame, stored: held.stored, attempts: Number(attempts) };
}
