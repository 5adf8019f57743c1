import { Type } from '@sinclair/typebox';
import pino from 'pino';
import { TOPICS, InboundEvent, TopicSpec, TYPING_NOTICE_MAX_AGE_MS } from '@parley/contracts';
import { MemoryBus } from '@parley/kafka';
import { createMetricsRegistry, Readiness, silentLogger } from '@parley/service-kit';
import { createMessageRouter, MessageRouter, MessageRouterDeps } from '../src/app';
import { INBOUND_RECORDS } from '../src/route';
import { waitFor } from '@parley/test-kit';
import { MemoryBlocks } from './support/memory-blocks';

const started: MessageRouter[] = [];
afterEach(() => Promise.all(started.splice(0).map((router) => router.stop())));

async function startRouter(options: Partial<MessageRouterDeps> = {}) {
  const bus = new MemoryBus();
  const readiness = new Readiness();
  readiness.register('kafka', () => bus.ping());
  const blocks = new MemoryBlocks();
  const router = createMessageRouter({
    bus,
    blocks,
    logger: silentLogger(),
    metrics: createMetricsRegistry('message-router', { collectDefaults: false }),
    readiness,
    port: 0,
    host: '127.0.0.1',
    ...options,
  });
  await router.start();
  started.push(router);
  return { bus, readiness, router, blocks };
}

describe('message-router service', () => {
  it('consumes inbound frames and publishes the routed events, serving its probes', async () => {
    const { bus, readiness, router } = await startRouter();
    const inbound: InboundEvent = {
      v: 1,
      kind: 'inbound',
      from: 'alice',
      sentAt: 1,
      frame: { type: 'message', id: 'c1', to: 'bob', chat: 'direct', body: 'hi' },
    };
    await bus.publish(TOPICS.inbound, [
      inbound,
      { ...inbound, frame: { type: 'group', id: 'c2', op: 'leave', group: 'g1' } },
    ]);
    await waitFor(() => bus.events(TOPICS.delivery).length === 1 && bus.events(TOPICS.group).length === 1);
    expect(bus.events(TOPICS.delivery)[0]).toMatchObject({ to: 'bob', frame: { mid: 'alice:c1' } });
    expect((await router.http.inject('/readyz')).statusCode).toBe(200);
    expect((await router.http.inject('/metrics')).body).toContain(
      'parley_router_frames_total{type="message",service="message-router"} 1',
    );
    await router.stop();
    expect((await readiness.report()).ready).toBe(false);
  });

  it('sends a frame it cannot route back to its sender as an error deliverable, and routes the rest', async () => {
    const { bus, router } = await startRouter();
    const origin = { v: 1, kind: 'inbound', from: 'alice', sentAt: 1 } as const;
    // As a newer gateway writes them: a frame type and a group op this router does not know.
    await bus.publish(INBOUND_RECORDS, [
      { ...origin, frame: { type: 'reaction', id: 'r1', to: 'bob', emoji: '+1' } },
      { ...origin, frame: { type: 'group', id: 'c2', op: 'archive', group: 'g1' } },
      { ...origin, frame: { type: 'message', id: 'c3', to: 'bob', body: 'hi' } },
    ]);
    await waitFor(() => bus.events(TOPICS.delivery).length === 3);
    expect(bus.events(TOPICS.delivery)).toEqual([
      {
        v: 1,
        kind: 'deliver',
        to: 'alice',
        frame: {
          type: 'error',
          mid: '~err:alice:r1',
          id: 'r1',
          code: 'invalid_frame',
          message: 'cannot route this frame: type: must be one of message, ack, read, group, typing',
        },
      },
      {
        v: 1,
        kind: 'deliver',
        to: 'alice',
        frame: {
          type: 'error',
          mid: '~err:alice:c2',
          id: 'c2',
          code: 'invalid_frame',
          message: 'cannot route this frame: op: must be one of create, add, remove, leave, rename',
        },
      },
      expect.objectContaining({ to: 'bob', frame: expect.objectContaining({ mid: 'alice:c3' }) }),
    ]);
    expect(bus.events(TOPICS.group)).toEqual([]);
    const metrics = (await router.http.inject('/metrics')).body;
    expect(metrics).toContain('parley_router_refused_total{service="message-router"} 2');
    expect(metrics).toContain('parley_router_frames_total{type="message",service="message-router"} 1');
  });

  it('drops a typing notice written too long ago to matter (a backlog): it is about the moment', async () => {
    const { bus } = await startRouter();
    const typing = (from: string, sentAt: number): InboundEvent => ({
      v: 1,
      kind: 'inbound',
      from,
      sentAt,
      frame: { type: 'typing', to: 'bob', chat: 'direct' },
    });
    const now = Date.now();
    await bus.publish(TOPICS.inbound, [
      typing('stale', now - TYPING_NOTICE_MAX_AGE_MS - 1000),
      {
        ...typing('stale', now - TYPING_NOTICE_MAX_AGE_MS - 1000),
        frame: { type: 'typing', to: 'g1', chat: 'group' },
      },
      typing('fresh', now),
      {
        v: 1,
        kind: 'inbound',
        from: 'stale',
        sentAt: now - TYPING_NOTICE_MAX_AGE_MS - 1000,
        frame: { type: 'message', id: 'c1', to: 'bob', chat: 'direct', body: 'hi' },
      },
    ]);
    await waitFor(() => bus.events(TOPICS.delivery).length >= 2);
    // A message is no notice: however old, it is routed.
    expect(bus.events(TOPICS.delivery)).toEqual([
      expect.objectContaining({
        to: 'bob',
        ephemeral: true,
        frame: expect.objectContaining({ from: 'fresh' }),
      }),
      expect.objectContaining({ to: 'bob', frame: expect.objectContaining({ mid: 'stale:c1' }) }),
    ]);
    expect(bus.events(TOPICS.group)).toEqual([]);
  });

  it('counts each frame once, when its batch is published, not again for each retry of the publish', async () => {
    const { bus, router } = await startRouter();
    let refusals = 3;
    bus.refusePublish = (events) =>
      events.some((e) => (e as { kind?: string }).kind !== 'inbound') && refusals-- > 0;
    const origin = { v: 1, kind: 'inbound', from: 'alice', sentAt: Date.now() } as const;
    await bus.publish(INBOUND_RECORDS, [
      { ...origin, frame: { type: 'message', id: 'c1', to: 'bob', chat: 'direct', body: 'hi' } },
      { ...origin, frame: { type: 'reaction', id: 'r1', to: 'bob' } },
    ]);
    await waitFor(() => bus.events(TOPICS.delivery).length === 2);
    expect(refusals).toBeLessThan(0);
    const metrics = (await router.http.inject('/metrics')).body;
    expect(metrics).toContain('parley_router_frames_total{type="message",service="message-router"} 1');
    expect(metrics).toContain('parley_router_refused_total{service="message-router"} 1');
  });

  it('parks a record of a newer contract version on the DLQ with the reason, and routes what follows it', async () => {
    const { bus, router } = await startRouter();
    // As a gateway of a later release writes it: an envelope version this router does not know.
    const anyRecord: TopicSpec<unknown> = { ...INBOUND_RECORDS, schema: Type.Unknown(), key: () => 'alice' };
    const newer = { v: 2, kind: 'inbound', from: 'alice', sentAt: 1, frame: { type: 'message', id: 'n1' } };
    await bus.publish(anyRecord, [newer]);
    await bus.publish(TOPICS.inbound, [
      {
        v: 1,
        kind: 'inbound',
        from: 'alice',
        sentAt: 2,
        frame: { type: 'message', id: 'c1', to: 'bob', chat: 'direct', body: 'hi' },
      },
    ]);
    await waitFor(() => bus.events(TOPICS.delivery).length === 1, 5000, 'the record behind it routed');
    expect(bus.events(TOPICS.delivery)[0]).toMatchObject({ to: 'bob', frame: { mid: 'alice:c1' } });
    expect(bus.deadLetters(anyRecord)).toEqual([
      { event: newer, error: expect.stringMatching(/^parley\.inbound\.v1: v: must be 1/) },
    ]);
    await router.stop(); // the consumer is still running, not broken
  });
});

describe('message-router and blocked users', () => {
  const from = (sender: string, frame: InboundEvent['frame'], sentAt = Date.now()): InboundEvent => ({
    v: 1,
    kind: 'inbound',
    from: sender,
    sentAt,
    frame,
  });
  const message = (sender: string, to: string, id: string) =>
    from(sender, { type: 'message', id, to, chat: 'direct', body: 'hi' });
  const typing = (sender: string, to: string) => from(sender, { type: 'typing', to, chat: 'direct' });
  const read = (sender: string, to: string, mid: string) => from(sender, { type: 'read', to, mids: [mid] });
  /** Published last in a batch: once it is delivered, the whole batch has been handled. */
  const last = message('zed', 'yann', 'end');
  const delivered = (bus: MemoryBus) => bus.events(TOPICS.delivery);
  const handled = (bus: MemoryBus) => () =>
    delivered(bus).some(
      (d) => d.kind === 'deliver' && d.frame.type === 'message' && d.frame.mid === 'zed:end',
    );
  /** Each delivery's mid (its kind where it has none). */
  const midsOf = (bus: MemoryBus) =>
    delivered(bus).map((d) => (d.kind === 'deliver' && 'mid' in d.frame ? d.frame.mid : d.kind));
  const metricsOf = async (router: MessageRouter) => (await router.http.inject('/metrics')).body;

  it("drops a blocked sender's 1:1 message, typing notice and read receipt to the blocker, tells the sender nothing, and counts them by type", async () => {
    const { bus, router, blocks } = await startRouter();
    blocks.block('bob', 'mallory');
    await bus.publish(TOPICS.inbound, [
      message('mallory', 'bob', 'm1'),
      typing('mallory', 'bob'),
      read('mallory', 'bob', 'bob:b1'),
      message('mallory', 'carol', 'm2'),
      last,
    ]);
    await waitFor(handled(bus));
    // Nothing for bob, no error for mallory: only her message to carol (who did not block her).
    expect(delivered(bus)).toEqual([
      expect.objectContaining({ to: 'carol', frame: expect.objectContaining({ mid: 'mallory:m2' }) }),
      expect.objectContaining({ to: 'yann' }),
    ]);
    const metrics = await metricsOf(router);
    for (const type of ['message', 'typing', 'read'])
      expect(metrics).toContain(`parley_router_blocked_total{type="${type}",service="message-router"} 1`);
    expect(metrics).toContain('parley_router_frames_total{type="message",service="message-router"} 2');
    expect(metrics).not.toContain('parley_router_refused_total{service="message-router"} 1');
  });

  it("looks the recipients of a batch's 1:1 frames up once, each once, and not at all for a batch without any", async () => {
    const { bus, blocks } = await startRouter();
    await bus.publish(TOPICS.inbound, [
      message('mallory', 'bob', 'm1'),
      typing('alice', 'bob'),
      read('carol', 'dave', 'dave:d1'),
      last,
    ]);
    await waitFor(handled(bus));
    expect(blocks.lookups).toEqual([['bob', 'dave', 'yann']]);
    await bus.publish(TOPICS.inbound, [
      from('mallory', { type: 'group', id: 'c1', op: 'leave', group: 'g1' }),
      from('mallory', { type: 'ack', mids: ['bob:b1'] }),
    ]);
    await waitFor(() => bus.events(TOPICS.group).length === 1 && delivered(bus).length === 5);
    expect(blocks.lookups).toHaveLength(1);
  });

  it("routes the blocker's own frames to the user it blocked, and other senders' frames to the blocker", async () => {
    const { bus, router, blocks } = await startRouter();
    blocks.block('bob', 'mallory');
    await bus.publish(TOPICS.inbound, [
      message('bob', 'mallory', 'b1'),
      typing('bob', 'mallory'),
      read('bob', 'mallory', 'mallory:m1'),
      message('alice', 'bob', 'a1'),
      last,
    ]);
    await waitFor(handled(bus));
    expect(delivered(bus).map((d) => (d.kind === 'deliver' ? [d.to, d.frame.type] : d.kind))).toEqual([
      ['mallory', 'message'],
      ['mallory', 'typing'],
      ['mallory', 'receipt'],
      ['bob', 'message'],
      ['yann', 'message'],
    ]);
    expect(await metricsOf(router)).not.toContain('parley_router_blocked_total{');
  });

  it("leaves a blocked sender's group messages, group typing, group ops and acks alone, and a frame to oneself", async () => {
    const { bus, router, blocks } = await startRouter();
    blocks.block('bob', 'mallory');
    blocks.block('mallory', 'mallory');
    await bus.publish(TOPICS.inbound, [
      // A group named like the blocker is still a group: `chat: group` is never looked up.
      from('mallory', { type: 'message', id: 'g1', to: 'bob', chat: 'group', body: 'hi' }),
      from('mallory', { type: 'typing', to: 'bob', chat: 'group' }),
      from('mallory', { type: 'group', id: 'g2', op: 'leave', group: 'bob' }),
      from('mallory', { type: 'ack', mids: ['bob:b1'] }),
      message('mallory', 'mallory', 'self'),
      last,
    ]);
    await waitFor(handled(bus));
    expect(bus.events(TOPICS.group).map((g) => g.kind)).toEqual([
      'group-message',
      'group-typing',
      'group-command',
    ]);
    expect(delivered(bus).map((d) => (d.kind === 'deliver' ? d.to : d.kind))).toEqual([
      'ack',
      'mallory',
      'yann',
    ]);
    expect(blocks.lookups).toEqual([['yann']]);
    expect(await metricsOf(router)).not.toContain('parley_router_blocked_total{');
  });

  it("keeps a recipient's blocks once read; a block or unblock applies once the changes are read, in the background each blockPollMs, before the batch past two", async () => {
    let now = 1_000_000;
    const { bus, blocks } = await startRouter({ clock: () => now, blockPollMs: 1000 });
    await bus.publish(TOPICS.inbound, [message('mallory', 'bob', 'before')]);
    await waitFor(() => delivered(bus).length === 1);
    // bob's blocks (none) are kept: his block is not seen until the changes are read.
    blocks.block('bob', 'mallory');
    await bus.publish(TOPICS.inbound, [message('mallory', 'bob', 'kept')]);
    await waitFor(() => delivered(bus).length === 2);
    expect(blocks.lookups).toEqual([['bob']]);

    now += 1000; // this batch starts a read of the changes, and is routed on what is kept meanwhile
    await bus.publish(TOPICS.inbound, [message('mallory', 'bob', 'while-read')]);
    await waitFor(() => delivered(bus).length === 3 && blocks.changeReads === 2);
    await bus.publish(TOPICS.inbound, [message('mallory', 'bob', 'blocked'), last]);
    await waitFor(handled(bus));
    expect(blocks.lookups).toEqual([['bob'], ['bob', 'yann']]);

    blocks.unblock('bob', 'mallory');
    now += 2001; // two polls without a read: this batch waits for one, so the unblock holds for it
    await bus.publish(TOPICS.inbound, [message('mallory', 'bob', 'after')]);
    await waitFor(() => delivered(bus).length === 5);
    expect(midsOf(bus)).toEqual([
      'mallory:before',
      'mallory:kept',
      'mallory:while-read',
      'zed:end',
      'mallory:after',
    ]);
    expect(blocks.lookups).toEqual([['bob'], ['bob', 'yann'], ['bob']]);
  });

  it('reads the changes each poll though the wall clock steps back (NTP correcting the host)', async () => {
    const wall = Date.now;
    let stepMs = 0;
    const stepped = jest.spyOn(Date, 'now').mockImplementation(() => wall() - stepMs);
    try {
      const { bus, blocks } = await startRouter({ blockPollMs: 50 });
      await bus.publish(TOPICS.inbound, [message('mallory', 'bob', 'before')]);
      await waitFor(() => delivered(bus).length === 1);
      stepMs = 3_600_000;
      blocks.block('bob', 'mallory');
      await new Promise((resolve) => setTimeout(resolve, 200)); // four polls
      // On the wall clock, the last read was an hour ahead: no read for an hour, no block.
      await bus.publish(TOPICS.inbound, [message('mallory', 'bob', 'blocked'), last]);
      await waitFor(handled(bus));
      expect(midsOf(bus)).toEqual(['mallory:before', 'zed:end']);
    } finally {
      stepped.mockRestore();
    }
  });

  it("counts the block check's reads of Postgres and the ids it keeps", async () => {
    const { bus, router, blocks } = await startRouter();
    blocks.block('bob', 'mallory');
    blocks.block('bob', 'eve');
    await bus.publish(TOPICS.inbound, [message('alice', 'bob', 'a1'), message('alice', 'carol', 'a2')]);
    await waitFor(() => delivered(bus).length === 2);
    await bus.publish(TOPICS.inbound, [message('alice', 'bob', 'a3')]); // kept: not read again
    await waitFor(() => delivered(bus).length === 3);
    const metrics = await metricsOf(router);
    expect(metrics).toContain('parley_router_block_reads_total{read="blocks",service="message-router"} 1');
    expect(metrics).toContain(
      `parley_router_block_reads_total{read="changes",service="message-router"} ${blocks.changeReads}`,
    );
    // bob and the two he blocked, and carol.
    expect(metrics).toContain('parley_router_block_cache_ids{service="message-router"} 4');
  });

  it('reading the changes before every batch (blockPollMs 0), applies a block from the next batch on', async () => {
    const { bus, blocks } = await startRouter({ blockPollMs: 0 });
    await bus.publish(TOPICS.inbound, [message('mallory', 'bob', 'before')]);
    await waitFor(() => delivered(bus).length === 1);
    blocks.block('bob', 'mallory');
    await bus.publish(TOPICS.inbound, [message('mallory', 'bob', 'during'), last]);
    await waitFor(handled(bus));
    expect(midsOf(bus)).toEqual(['mallory:before', 'zed:end']);
  });

  it('routes the whole batch when the lookup fails (Postgres down), counting the failed check and warning once for the batch', async () => {
    const lines: Array<{ level: number; msg: string }> = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
    const { bus, router, blocks } = await startRouter({ logger, blockCheckRetryMs: 0 });
    blocks.block('bob', 'mallory');
    blocks.failWith = new Error('connect ECONNREFUSED 127.0.0.1:5432');
    await bus.publish(TOPICS.inbound, [message('mallory', 'bob', 'm1'), typing('mallory', 'bob'), last]);
    await waitFor(handled(bus));
    expect(delivered(bus).map((d) => d.kind === 'deliver' && d.to)).toEqual(['bob', 'bob', 'yann']);
    const metrics = await metricsOf(router);
    expect(metrics).toContain(
      'parley_router_block_checks_failed_total{reason="error",service="message-router"} 1',
    );
    expect(metrics).not.toContain('parley_router_blocked_total{');
    expect(lines.filter((l) => l.level === 40).map((l) => l.msg)).toEqual([
      expect.stringMatching(/^block check failed/),
    ]);
    // Postgres back: blocks hold again.
    blocks.failWith = undefined;
    await bus.publish(TOPICS.inbound, [message('mallory', 'bob', 'm2'), message('alice', 'bob', 'a1')]);
    await waitFor(() => delivered(bus).length === 4);
    expect(delivered(bus)[3]).toMatchObject({ to: 'bob', frame: { mid: 'alice:a1' } });
    expect(lines.map((l) => l.msg)).toContain('block checks succeed again');
  });

  it('routes a batch whose lookup does not answer in time, instead of waiting for a database that does not answer', async () => {
    const { bus, router, blocks } = await startRouter({ blockCheckTimeoutMs: 20 });
    blocks.block('bob', 'mallory');
    blocks.hang = true;
    await bus.publish(TOPICS.inbound, [message('mallory', 'bob', 'm1'), last]);
    await waitFor(handled(bus));
    expect(delivered(bus)[0]).toMatchObject({ to: 'bob', frame: { mid: 'mallory:m1' } });
    expect(await metricsOf(router)).toContain(
      'parley_router_block_checks_failed_total{reason="timeout",service="message-router"} 1',
    );
  });

  it('after a failed lookup, routes without asking until the retry time has passed, then asks again', async () => {
    let now = 1_000_000;
    const { bus, router, blocks } = await startRouter({ clock: () => now, blockCheckRetryMs: 5000 });
    blocks.block('bob', 'mallory');
    blocks.failWith = new Error('connect ECONNREFUSED 127.0.0.1:5432');
    await bus.publish(TOPICS.inbound, [message('mallory', 'bob', 'm1')]);
    await waitFor(() => delivered(bus).length === 1);
    blocks.failWith = undefined;
    now += 4999;
    await bus.publish(TOPICS.inbound, [message('mallory', 'bob', 'm2')]);
    await waitFor(() => delivered(bus).length === 2);
    // The first batch's read of the changes failed; the second was not asked about: routed unchecked.
    expect([blocks.changeReads, blocks.lookups.length]).toEqual([1, 0]);
    now += 1;
    await bus.publish(TOPICS.inbound, [message('mallory', 'bob', 'm3'), message('alice', 'bob', 'a1')]);
    await waitFor(() => delivered(bus).length === 3);
    expect([blocks.changeReads, blocks.lookups]).toEqual([2, [['bob']]]);
    expect(midsOf(bus)).toEqual(['mallory:m1', 'mallory:m2', 'alice:a1']);
    const metrics = await metricsOf(router);
    expect(metrics).toContain(
      'parley_router_block_checks_failed_total{reason="error",service="message-router"} 1',
    );
    expect(metrics).toContain(
      'parley_router_block_checks_failed_total{reason="skipped",service="message-router"} 1',
    );
  });
});
