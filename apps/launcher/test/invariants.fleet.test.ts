import { setTimeout as sleep } from 'node:timers/promises';
import WebSocket from 'ws';
import { seededRandom, WsTestClient } from '@parley/test-kit';
import { startFleet, Fleet } from '../src/fleet';
import { clientsOf } from './helpers';

/**
 * A seeded random walk through the whole fleet: users with one or two devices send 1:1 and group
 * messages over both APIs (sometimes the same id twice), change groups, drop sockets (gracefully or
 * not), ack late or never, and sync through GET /v1/messages. Afterwards the promises of
 * PROTOCOL.md and docs/protocol.md are checked as invariants over everything the users saw.
 *
 * PARLEY_FUZZ_SEED and PARLEY_FUZZ_STEPS explore further; a failure names the seed to rerun.
 * The seed fixes the steps, not the timing: a rerun of a seed may interleave differently.
 */
const SEED = Number(process.env.PARLEY_FUZZ_SEED ?? 20240611);
const STEPS = Number(process.env.PARLEY_FUZZ_STEPS ?? 500);
const USERS = 8;
const ACK_TIMEOUT_MS = 300;
const MAX_ATTEMPTS = 3;

type Frame = Record<string, unknown> & { type: string; mid?: string };
type AckMode = 'now' | 'late' | 'never';

interface Seen {
  at: number;
  via: 'ws' | 'sync';
  frame: Frame;
}
interface Device {
  user: User;
  id: string;
  client?: WsTestClient;
  busy: boolean;
  ackMode: AckMode;
  unacked: Set<string>;
}
interface User {
  name: string;
  devices: Device[];
  seen: Map<string, Seen[]>;
  frameCount: number;
}
interface Sent {
  from: string;
  id: string;
  mid: string;
  to: string;
  chat: 'direct' | 'group';
  body: unknown;
  firstSendAt: number;
  acceptedAt?: number;
}
interface Episode {
  user: string;
  addIssued: number;
  /** Upper bound of when the add took effect: a REST answer, or a notice of it seen by anyone. */
  appliedAt?: number;
  removeIssued?: number;
  /** Upper bound of when the removal took effect. */
  removedAt?: number;
}
interface Group {
  id: string;
  creator: string;
  creatorLeft: boolean;
  episodes: Episode[];
}

describe(`fleet: protocol invariants under a random walk (seed ${SEED}, ${STEPS} steps)`, () => {
  let fleet: Fleet;
  let clients: ReturnType<typeof clientsOf>;

  beforeAll(async () => {
    fleet = await startFleet({
      ports: 'random',
      logLevel: 'error',
      ackTimeoutMs: ACK_TIMEOUT_MS,
      maxAttempts: MAX_ATTEMPTS,
      fastConsumers: true,
    });
    clients = clientsOf(fleet);
  }, 60_000);
  afterAll(async () => {
    await clients.closeAll();
    await fleet.stop();
  }, 30_000);

  it('keeps every delivery promise', async () => {
    const walk = seededRandom(SEED);
    const rand = walk.next;
    // Choices made off the walk (ack delays, page sizes) draw from a stream of their own, so that
    // the walk's steps do not shift with the timing of background calls.
    const offWalk = seededRandom(SEED ^ 0x5bd1e995).next;
    const { pick, chance } = walk;
    const violations: string[] = [];
    const violate = (what: string) => {
      if (violations.length < 50) violations.push(what);
    };

    const users: User[] = Array.from({ length: USERS }, (_, i) => {
      const user: User = { name: `fz${i}`, devices: [], seen: new Map(), frameCount: 0 };
      const deviceCount = chance(0.5) ? 2 : 1;
      for (let d = 0; d < deviceCount; d++)
        user.devices.push({ user, id: `d${d}`, busy: false, ackMode: 'now', unacked: new Set() });
      return user;
    });
    const byName = new Map(users.map((u) => [u.name, u]));
    const sent = new Map<string, Sent>();
    const groups = new Map<string, Group>();
    /** When a user's ack of a direct mid is known to be processed: its sender saw the receipt. */
    const ackConfirmed = new Map<string, number>();
    const pending = new Set<Promise<unknown>>();
    const background = (work: Promise<unknown>) => {
      const p = work.catch((err: unknown) => violate(`background call failed: ${String(err)}`));
      pending.add(p);
      void p.finally(() => pending.delete(p));
    };
    let seq = 0;

    const latestEpisode = (group: Group, user: string) =>
      [...group.episodes].reverse().find((e) => e.user === user);
    const appliedMembers = (group: Group) =>
      group.episodes.filter((e) => e.removeIssued === undefined && e.appliedAt !== undefined);

    // ---- what a user is shown, over a socket or through sync ----
    function observe(user: User, frame: Frame, via: 'ws' | 'sync') {
      const now = Date.now();
      user.frameCount++;
      const mid = frame.mid;
      if (typeof mid !== 'string') return;
      const earlier = user.seen.get(mid);
      if (earlier) {
        const a = JSON.stringify(stripVolatile(earlier[0].frame));
        const b = JSON.stringify(stripVolatile(frame));
        if (a !== b) violate(`${user.name}: mid ${mid} carried two contents: ${a} vs ${b}`);
        earlier.push({ at: now, via, frame });
      } else user.seen.set(mid, [{ at: now, via, frame }]);

      if (frame.type === 'message') {
        if (mid !== `${frame.from}:${frame.id}`)
          violate(`${user.name}: message ${frame.from}/${frame.id} under mid ${mid}`);
        if (frame.from === user.name) violate(`${user.name}: shown its own message ${mid}`);
        const original = sent.get(mid);
        if (!original) return violate(`${user.name}: shown a message nobody sent: ${JSON.stringify(frame)}`);
        if (
          frame.to !== original.to ||
          (frame.chat ?? 'direct') !== original.chat ||
          JSON.stringify(frame.body) !== JSON.stringify(original.body)
        )
          violate(`${user.name}: ${mid} altered: ${JSON.stringify(frame)} vs ${JSON.stringify(original)}`);
        if (original.chat === 'direct' && original.to !== user.name)
          violate(`${user.name}: shown ${mid}, addressed to ${original.to}`);
        if (original.chat === 'group') {
          const group = groups.get(original.to);
          const allowed = group?.episodes.some(
            (e) =>
              e.user === user.name &&
              e.addIssued <= now &&
              (e.removedAt === undefined || e.removedAt >= original.firstSendAt),
          );
          if (!allowed) violate(`${user.name}: shown group message ${mid} of ${original.to} as a non-member`);
        }
        const confirmed = ackConfirmed.get(`${user.name} ${mid}`);
        if (confirmed !== undefined && now > confirmed + (via === 'ws' ? 1500 : 3000))
          violate(
            `${user.name}: shown ${mid} over ${via} ${now - confirmed} ms after its ack was confirmed (receipt)`,
          );
      } else if (frame.type === 'receipt') {
        for (const m of (frame.mids as string[]) ?? []) {
          if (!m.startsWith(`${user.name}:`)) violate(`${user.name}: receipt for someone else's ${m}`);
          const original = sent.get(m);
          if (original?.chat === 'direct' && frame.by !== original.to)
            violate(`${user.name}: receipt for ${m} by ${String(frame.by)}, sent to ${original.to}`);
          if (frame.status === 'delivered' && original?.chat === 'direct' && frame.by === original.to) {
            const key = `${original.to} ${m}`;
            if (!ackConfirmed.has(key)) ackConfirmed.set(key, now);
          }
        }
      } else if (frame.type === 'group') {
        const group = groups.get(frame.group as string);
        if (!group) return violate(`${user.name}: notice of an unknown group: ${JSON.stringify(frame)}`);
        if (!group.episodes.some((e) => e.user === user.name && e.addIssued <= now))
          violate(`${user.name}: notice of ${group.id}, never a member: ${JSON.stringify(frame)}`);
        const members = (frame.members as string[]) ?? [];
        if (frame.op === 'create' || frame.op === 'add') {
          for (const member of members) {
            const episode = latestEpisode(group, member);
            if (episode && episode.appliedAt === undefined && (frame.at as number) >= episode.addIssued)
              episode.appliedAt = now;
          }
        } else if (frame.op === 'remove' || frame.op === 'leave') {
          const gone = frame.op === 'leave' ? [frame.by as string] : members;
          for (const member of gone) {
            const episode = latestEpisode(group, member);
            if (
              episode?.removeIssued !== undefined &&
              episode.removedAt === undefined &&
              (frame.at as number) >= episode.removeIssued
            )
              episode.removedAt = now;
          }
        }
      } else if (frame.type === 'error') {
        const id = frame.id as string | undefined;
        if (id && !sent.has(`${user.name}:${id}`) && !id.startsWith('o'))
          violate(`${user.name}: error for an id it never sent: ${JSON.stringify(frame)}`);
      }
    }

    /** A frame's content, keys in order, without what may differ between copies of one deliverable. */
    function stripVolatile(frame: Frame) {
      // The same message routed again (a resend) may carry a new sentAt, and a receipt made again
      // (a second ack) a new `at`; a client keeps the first copy of a mid.
      const { sentAt: _sentAt, ...rest } = frame;
      if (frame.type === 'receipt') delete rest.at;
      return Object.fromEntries(Object.entries(rest).sort(([a], [b]) => a.localeCompare(b)));
    }

    // ---- devices ----
    function ackOnSocket(device: Device, mids: string[]) {
      const socket = device.client?.socket;
      if (!socket || socket.readyState !== WebSocket.OPEN || mids.length === 0) return;
      for (let i = 0; i < mids.length; i += 500)
        device.client!.send({ type: 'ack', mids: mids.slice(i, i + 500) });
      for (const mid of mids) device.unacked.delete(mid);
    }

    function onSocketFrame(device: Device, frame: Frame) {
      if (frame.type === 'hello') return;
      if (frame.type === 'accepted') {
        const original = sent.get(frame.mid as string);
        if (original && original.acceptedAt === undefined) original.acceptedAt = Date.now();
        return;
      }
      observe(device.user, frame, 'ws');
      if (typeof frame.mid !== 'string') return;
      const mid = frame.mid;
      if (device.ackMode === 'now') setImmediate(() => ackOnSocket(device, [mid]));
      else if (device.ackMode === 'late') {
        device.unacked.add(mid);
        const client = device.client;
        setTimeout(() => device.client === client && ackOnSocket(device, [mid]), 100 + offWalk() * 1500);
      } else device.unacked.add(mid);
    }

    async function connect(device: Device, ackMode: AckMode) {
      device.busy = true;
      try {
        const client = await clients.connect(device.user.name, { deviceId: device.id });
        device.client = client;
        device.ackMode = ackMode;
        device.unacked.clear();
        let handled = 0;
        const drain = () => {
          while (handled < client.frames.length) onSocketFrame(device, client.frames[handled++]);
        };
        drain();
        client.socket.on('message', drain);
      } finally {
        device.busy = false;
      }
    }

    async function disconnect(device: Device, abrupt: boolean) {
      const client = device.client!;
      device.client = undefined;
      device.busy = true;
      try {
        if (abrupt) client.socket.terminate();
        else await client.close();
      } finally {
        device.busy = false;
      }
    }

    const online = (user: User) => user.devices.filter((d) => d.client && !d.busy);

    // ---- sending ----
    async function sendRest(user: User, frames: Array<Record<string, unknown>>) {
      const answer = await clients.rest(
        user.name,
        'POST',
        '/v1/send',
        frames.length === 1 ? frames[0] : frames,
      );
      if (answer.status !== 200) return violate(`${user.name}: POST /v1/send ${answer.status}`);
      for (const result of answer.body.results as Array<Record<string, unknown>>) {
        if (result.status !== 'accepted' || typeof result.mid !== 'string') continue;
        const original = sent.get(result.mid);
        if (original && original.acceptedAt === undefined) original.acceptedAt = Date.now();
      }
    }

    function sendFrames(user: User, frames: Array<Record<string, unknown>>) {
      const devices = online(user);
      if (devices.length > 0 && chance(0.6)) {
        const device = pick(devices);
        for (const frame of frames) device.client!.send(frame);
      } else background(sendRest(user, frames));
    }

    function newMessage(from: User, to: string, chat: 'direct' | 'group') {
      const id = `m${++seq}`;
      const message: Sent = {
        from: from.name,
        id,
        mid: `${from.name}:${id}`,
        to,
        chat,
        body: { seq, text: `${from.name}->${to}` },
        firstSendAt: Date.now(),
      };
      sent.set(message.mid, message);
      return message;
    }
    const frameOf = (m: Sent) => ({ type: 'message', id: m.id, to: m.to, chat: m.chat, body: m.body });

    function stepDirect() {
      const from = pick(users);
      const count = chance(0.2) ? 2 + Math.floor(rand() * 3) : 1;
      const frames = [];
      for (let i = 0; i < count; i++) {
        const to = pick(users.filter((u) => u !== from)).name;
        frames.push(frameOf(newMessage(from, to, 'direct')));
      }
      sendFrames(from, frames);
      if (chance(0.15)) sendFrames(from, frames); // the same ids again, maybe over the other API
    }

    function stepResend() {
      const from = pick(users);
      const mine = [...sent.values()].filter((m) => m.from === from.name);
      if (mine.length === 0) return;
      sendFrames(from, [frameOf(pick(mine))]);
    }

    function stepGroupMessage() {
      const candidates = [...groups.values()].filter((g) => appliedMembers(g).length > 0);
      if (candidates.length === 0) return;
      const group = pick(candidates);
      const from = byName.get(pick(appliedMembers(group)).user)!;
      const message = newMessage(from, group.id, 'group');
      sendFrames(from, [frameOf(message)]);
      if (chance(0.1)) sendFrames(from, [frameOf(message)]);
    }

    function groupOp(actor: User, op: Record<string, unknown>, rest: () => Promise<number>, expect: number) {
      const devices = online(actor);
      if (devices.length > 0 && chance(0.5)) {
        pick(devices).client!.send({ type: 'group', id: `o${++seq}`, ...op });
        return undefined;
      }
      return rest().then((status) => {
        if (status !== expect) violate(`${actor.name}: group ${JSON.stringify(op)} answered ${status}`);
        return status === expect ? Date.now() : undefined;
      });
    }

    function stepGroupCreate() {
      const creator = pick(users);
      const others = users.filter((u) => u !== creator && chance(0.4)).map((u) => u.name);
      if (others.length === 0) others.push(pick(users.filter((u) => u !== creator)).name);
      const id = `g${++seq}`;
      const now = Date.now();
      const group: Group = {
        id,
        creator: creator.name,
        creatorLeft: false,
        episodes: [creator.name, ...others].map((user) => ({ user, addIssued: now })),
      };
      groups.set(id, group);
      const done = groupOp(
        creator,
        { op: 'create', group: id, name: `Group ${id}`, members: others },
        async () =>
          (
            await clients.rest(creator.name, 'POST', '/v1/groups', {
              id,
              name: `Group ${id}`,
              members: others,
            })
          ).status,
        201,
      );
      if (done)
        background(
          done.then((at) => {
            if (at !== undefined) for (const e of group.episodes) if (e.addIssued === now) e.appliedAt ??= at;
          }),
        );
    }

    function stepGroupAdd() {
      const candidates = [...groups.values()].filter((g) => appliedMembers(g).length > 0);
      if (candidates.length === 0) return;
      const group = pick(candidates);
      // Not a user whose removal is not known to have taken effect yet: one sent over WebSocket
      // (or POST /v1/send) takes effect when it is routed, not when it is issued (docs/protocol.md,
      // Groups). An add of that user applied before it (a no-op for a member, answered 200) would
      // be followed by the removal, and the user counted in although out of the group.
      const outside = users.filter((u) => {
        const latest = latestEpisode(group, u.name);
        return latest === undefined || latest.removedAt !== undefined;
      });
      if (outside.length === 0) return;
      const actor = byName.get(pick(appliedMembers(group)).user)!;
      const target = pick(outside).name;
      const episode: Episode = { user: target, addIssued: Date.now() };
      group.episodes.push(episode);
      const done = groupOp(
        actor,
        { op: 'add', group: group.id, members: [target] },
        async () =>
          (await clients.rest(actor.name, 'POST', `/v1/groups/${group.id}/members`, { members: [target] }))
            .status,
        200,
      );
      if (done) background(done.then((at) => at !== undefined && (episode.appliedAt ??= at)));
    }

    function stepGroupRemove(leave: boolean) {
      const candidates = [...groups.values()].filter((g) =>
        leave ? appliedMembers(g).length > 0 : !g.creatorLeft && appliedMembers(g).length > 1,
      );
      if (candidates.length === 0) return;
      const group = pick(candidates);
      // Only the creator removes others, and only while it has not left: it is then the admin.
      const actor = leave ? byName.get(pick(appliedMembers(group)).user)! : byName.get(group.creator)!;
      const targets = leave
        ? [actor.name]
        : appliedMembers(group)
            .map((e) => e.user)
            .filter((u) => u !== group.creator);
      if (targets.length === 0) return;
      const target = pick(targets);
      const episode = latestEpisode(group, target)!;
      episode.removeIssued = Date.now();
      if (target === group.creator) group.creatorLeft = true;
      const done = groupOp(
        actor,
        leave ? { op: 'leave', group: group.id } : { op: 'remove', group: group.id, members: [target] },
        async () =>
          (await clients.rest(actor.name, 'DELETE', `/v1/groups/${group.id}/members/${target}`)).status,
        200,
      );
      if (done) background(done.then((at) => at !== undefined && (episode.removedAt ??= at)));
    }

    async function sync(user: User, ackProbability: number) {
      const pass = new Set<string>();
      let after: string | null = null;
      for (let page = 0; page < 50; page++) {
        const limit = 1 + Math.floor(offWalk() * 7);
        const answer = await clients.rest(
          user.name,
          'GET',
          `/v1/messages?limit=${limit}${after ? `&after=${encodeURIComponent(after)}` : ''}`,
        );
        if (answer.status !== 200) return violate(`${user.name}: GET /v1/messages ${answer.status}`);
        const messages = answer.body.messages as Frame[];
        if (messages.length > limit) violate(`${user.name}: a page of ${messages.length} > limit ${limit}`);
        for (const frame of messages) {
          if (pass.has(frame.mid!)) violate(`${user.name}: sync repeated ${frame.mid} within one pass`);
          pass.add(frame.mid!);
          observe(user, frame, 'sync');
        }
        if (messages.length > 0 && offWalk() < ackProbability) {
          const ack = await clients.rest(user.name, 'POST', '/v1/send', {
            type: 'ack',
            mids: messages.map((m) => m.mid),
          });
          if (ack.status !== 200 || ack.body.results[0].status !== 'accepted')
            violate(`${user.name}: ack refused: ${JSON.stringify(ack.body)}`);
        }
        after = answer.body.next;
        if (!after) break;
      }
      return pass.size;
    }

    function stepDevice() {
      const device = pick(users.flatMap((u) => u.devices).filter((d) => !d.busy));
      if (!device) return;
      if (device.client) {
        if (chance(0.3)) ackOnSocket(device, [...device.unacked]); // a device that catches up before dropping
        background(disconnect(device, chance(0.5)));
      } else {
        const mode: AckMode = chance(0.6) ? 'now' : chance(0.5) ? 'late' : 'never';
        background(connect(device, mode));
      }
    }

    // ---- the walk ----
    for (const user of users) await connect(user.devices[0], 'now');
    const started = Date.now();
    for (let step = 0; step < STEPS; step++) {
      const r = rand();
      if (r < 0.3) stepDirect();
      else if (r < 0.37) stepResend();
      else if (r < 0.52) stepGroupMessage();
      else if (r < 0.57) stepGroupCreate();
      else if (r < 0.62) stepGroupAdd();
      else if (r < 0.66) stepGroupRemove(false);
      else if (r < 0.69) stepGroupRemove(true);
      else if (r < 0.85) stepDevice();
      else background(sync(pick(users), 0.7));
      await sleep(Math.floor(rand() * 25));
    }
    await Promise.all([...pending]);
    const walked = Date.now() - started;

    // ---- quiet: every device acks from now on; everyone syncs until nothing is left ----
    for (const user of users) {
      for (const device of user.devices) {
        while (device.busy) await sleep(10);
        if (device.client) {
          device.ackMode = 'now';
          ackOnSocket(device, [...device.unacked]);
        }
      }
      if (!user.devices.some((d) => d.client)) await connect(user.devices[0], 'now');
    }

    const accepted = [...sent.values()].filter((m) => m.acceptedAt !== undefined);
    const expectedRecipients = (m: Sent): string[] => {
      if (m.chat === 'direct') return [m.to];
      const group = groups.get(m.to)!;
      const throughout = (user: string) =>
        group.episodes.some(
          (e) =>
            e.user === user &&
            e.appliedAt !== undefined &&
            e.appliedAt < m.firstSendAt &&
            e.removeIssued === undefined,
        );
      if (!throughout(m.from)) return [];
      return users.map((u) => u.name).filter((u) => u !== m.from && throughout(u));
    };
    const missing = () => {
      const gaps: string[] = [];
      for (const m of accepted) {
        for (const to of expectedRecipients(m))
          if (!byName.get(to)!.seen.has(m.mid)) gaps.push(`${m.mid} -> ${to}`);
        if (m.chat === 'direct' && !ackConfirmed.has(`${m.to} ${m.mid}`))
          gaps.push(`receipt of ${m.mid} to ${m.from}`);
      }
      return gaps;
    };
    const deadline = Date.now() + 20_000;
    let left: string[] = [];
    for (;;) {
      const stored = await Promise.all(users.map((u) => sync(u, 1)));
      left = missing();
      if (left.length === 0 && stored.every((n) => n === 0)) break;
      if (Date.now() > deadline) break;
      await sleep(300);
    }
    for (const gap of left) violate(`never reached: ${gap}`);

    // After everyone acked everything: nothing stored, nothing more pushed.
    await sleep(ACK_TIMEOUT_MS * (MAX_ATTEMPTS + 1));
    await Promise.all(users.map((u) => sync(u, 1)));
    const counts = users.map((u) => u.frameCount);
    await sleep(ACK_TIMEOUT_MS * (MAX_ATTEMPTS + 2));
    users.forEach((u, i) => {
      if (u.frameCount !== counts[i])
        violate(`${u.name}: ${u.frameCount - counts[i]} frames after all was acked`);
    });
    for (const user of users) {
      const rest = await clients.rest(user.name, 'GET', '/v1/messages?limit=500');
      if (rest.body.messages.length > 0)
        violate(
          `${user.name}: still stored after all was acked: ${rest.body.messages.map((m: Frame) => m.mid)}`,
        );
    }

    const directs = accepted.filter((m) => m.chat === 'direct').length;
    const checkedGroup = accepted
      .filter((m) => m.chat === 'group')
      .reduce((n, m) => n + expectedRecipients(m).length, 0);
    console.log(
      `seed ${SEED}: ${STEPS} steps in ${walked} ms; ${accepted.length}/${sent.size} messages accepted ` +
        `(${directs} direct), ${checkedGroup} group deliveries checked, ${groups.size} groups`,
    );
    expect({ seed: SEED, violations }).toEqual({ seed: SEED, violations: [] });
  }, 90_000);
});
