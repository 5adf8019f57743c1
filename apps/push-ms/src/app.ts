import { Counter } from 'prom-client';
import { DeliveredMessage, MAX_MUTES_PER_USER, OfflineTopicEvent, TOPICS } from '@parley/contracts';
import { Envelope, EventBus } from '@parley/kafka';
import {
  buildHttpServer,
  createRecentSet,
  HttpServer,
  RecentSet,
  Runtime,
  scrapedGauge,
  Service,
  serviceLifecycle,
  withDeadline,
} from '@parley/service-kit';
import { Coalescer, createCoalescer } from './coalescer';
import type { DeviceStore } from './device-store';
import { createDispatcher, Dispatcher } from './dispatcher';
import { buildNotification, summarize } from './notification';
import type { PushProvider } from './provider';
import { pushKey, UnfinishedRecords } from './unfinished';
import { registerDeviceRoutes, registerMuteRoutes } from './routes';
import { muteKey, MuteStore } from './mute-store';

export interface PushDeps extends Omit<Runtime, 'closer'> {
  bus: EventBus;
  devices: DeviceStore;
  /** The conversations each user muted: their messages are not announced to them. */
  mutes: MuteStore;
  /** Conversations one user may mute (default MAX_MUTES_PER_USER). */
  maxMutesPerUser?: number;
  /** How long a batch waits for its mute check before it is announced without it (default 1 s). */
  muteCheckTimeoutMs?: number;
  provider: PushProvider;
  port: number;
  host?: string;
  internalSecret: string;
  windowMs?: number;
  includeBody?: boolean;
  dedupMs?: number;
  maxAgeMs?: number;
  maxAttempts?: number;
  retryBaseMs?: number;
  /** How long every push waits after FCM answers 429 (default a minute, as FCM asks). */
  throttleMs?: number;
  /** How long a push waits out a database outage to look up the devices (default 90 s). */
  lookupPatienceMs?: number;
  groupId?: string;
}

export interface PushService extends Service {
  http: HttpServer;
}

/**
 * Announces offline deliverables with push notifications: one per user per window, to every
 * device of theirs. Only messages are announced; receipts, group changes and asynchronous errors
 * wait for the next sync. Pushes run beside the consumer and never hold it up; its commits wait
 * for them (a message's record is committed once its push is done), so none is lost to a crash.
 */
export function createPushService(deps: PushDeps): PushService {
  const http = buildHttpServer(deps);
  registerDeviceRoutes(http, deps.devices, deps.internalSecret, deps.mutes);
  registerMuteRoutes(http, deps.mutes, deps.maxMutesPerUser ?? MAX_MUTES_PER_USER);
  const dispatcher = createDispatcher({
    provider: deps.provider,
    devices: deps.devices,
    logger: deps.logger,
    metrics: deps.metrics,
    maxAttempts: deps.maxAttempts ?? 4,
    retryBaseMs: deps.retryBaseMs ?? 500,
    throttleMs: deps.throttleMs,
    lookupPatienceMs: deps.lookupPatienceMs,
    trace: deps.trace,
  });
  const announced = createRecentSet(deps.dedupMs ?? 600_000, 200_000);
  const unfinished = new UnfinishedRecords();
  scrapedGauge(
    deps.metrics,
    {
      name: 'parley_push_unfinished',
      help: 'Messages whose push is not done (in a window, or being sent): the consumer commits below the oldest of their records',
    },
    () => unfinished.size,
  );
  const coalescer = createCoalescer(deps.windowMs ?? 2000, (user, messages) => {
    const keys = messages.map((m) => pushKey(user, m.mid));
    for (const key of keys) announced.add(key);
    dispatcher.dispatch(
      user,
      buildNotification(messages),
      messages.map((m) => m.mid),
      () => keys.forEach((key) => unfinished.release(key)),
    );
  });
  const finishPushes = async () => {
    coalescer.flushAll();
    await dispatcher.drain();
  };
  const subscription = deps.bus.subscribe({
    groupId: deps.groupId ?? 'push-ms',
    topic: TOPICS.offline,
    background: {
      oldestUnfinished: (partition) => unfinished.oldestUnfinished(partition),
      finish: finishPushes,
    },
    handle: offlineHandler(coalescer, dispatcher, announced, unfinished, {
      includeBody: deps.includeBody ?? false,
      maxAgeMs: deps.maxAgeMs ?? 600_000,
      stale: new Counter({
        name: 'parley_push_stale_total',
        help: 'Offline messages not announced: they went offline longer ago than PUSH_MAX_AGE_MS',
        registers: [deps.metrics],
      }),
      mutedOf: mutedLookup(deps),
    }),
  });

  // Stopped after the consumer (workers stop in reverse order), which finishes the pushes itself
  // before its last commit when it was running.
  const pushes = {
    stop: async () => {
      await finishPushes();
      await deps.provider.close();
    },
  };
  // Listening first, as every service: /healthz answers while the migrations wait for their lock.
  return {
    http,
    ...serviceLifecycle(http, deps, deps.readiness, [
      { start: () => deps.devices.init() },
      pushes,
      subscription,
    ]),
  };
}

/**
 * Messages join their recipient's push window, unless already announced (a redelivered record, or
 * a deliverable replayed on connect that went offline again) or old news (a backlog: announcing
 * a week of messages after an outage would be a storm); an ack takes them out of it. The record of
 * a message in a window stays `unfinished` until its push is done.
 */
function offlineHandler(
  coalescer: Coalescer,
  dispatcher: Dispatcher,
  announced: RecentSet,
  unfinished: UnfinishedRecords,
  options: {
    includeBody: boolean;
    maxAgeMs: number;
    stale: Counter;
    mutedOf: (messages: OfflineMessage[]) => Promise<(message: OfflineMessage) => boolean>;
  },
) {
  return async (batch: Envelope<OfflineTopicEvent>[]): Promise<void> => {
    const oldest = Date.now() - options.maxAgeMs;
    const isMuted = await options.mutedOf(
      batch.flatMap(({ event }) =>
        event.kind === 'offline' && event.frame.type === 'message'
          ? [{ to: event.to, frame: event.frame }]
          : [],
      ),
    );
    for (const { event, partition, offset } of batch) {
      if (event.kind === 'offline-ack') {
        coalescer.drop(event.user, event.mids);
        for (const mid of event.mids) unfinished.release(pushKey(event.user, mid));
        dispatcher.acked(event.user, event.mids);
        continue;
      }
      const key = pushKey(event.to, event.frame.mid);
      if (event.frame.type !== 'message' || announced.has(key)) continue;
      if (event.at < oldest) options.stale.inc();
      else if (isMuted({ to: event.to, frame: event.frame })) continue;
      else {
        unfinished.hold(key, partition, Number(offset));
        coalescer.add(event.to, summarize(event.frame, options.includeBody));
      }
    }
  };
}

/** A message on its way to a user who is offline (`to`: that user; a group message's `frame.to` is the group). */
interface OfflineMessage {
  to: string;
  frame: DeliveredMessage;
}

/** The conversation of a message, as its recipient muted it: the sender of a 1:1, or the group. */
const conversationOf = (frame: DeliveredMessage) =>
  frame.chat === 'group'
    ? { chat: 'group' as const, id: frame.to }
    : { chat: 'direct' as const, id: frame.from };

/**
 * Which of a batch's messages their recipient muted: one read for the batch. A read that fails, or
 * takes longer than `muteCheckTimeoutMs`, mutes nothing (counted and logged): a push too many,
 * rather than pushes held behind a database that does not answer.
 */
function mutedLookup(deps: PushDeps) {
  const muted = new Counter({
    name: 'parley_push_muted_total',
    help: 'Offline messages not announced: their recipient muted the conversation',
    registers: [deps.metrics],
  });
  const failed = new Counter({
    name: 'parley_push_mute_checks_failed_total',
    help: 'Batches of offline messages announced without their mute check: the read of mutes failed or took over 1 s',
    registers: [deps.metrics],
  });
  const timeoutMs = deps.muteCheckTimeoutMs ?? 1000;
  return async (messages: OfflineMessage[]) => {
    let keys = new Set<string>();
    try {
      const read = deps.mutes.mutedAmong(
        messages.map(({ to, frame }) => ({ user: to, ...conversationOf(frame) })),
        Date.now(),
      );
      keys = await withDeadline(
        read,
        timeoutMs,
        () => new Error(`the mute check took longer than ${timeoutMs} ms`),
      );
    } catch (err) {
      failed.inc();
      deps.logger.warn(
        { err, messages: messages.length },
        'mute check failed: announcing these messages unchecked',
      );
    }
    return ({ to, frame }: OfflineMessage) => {
      const isMuted = keys.has(muteKey(to, conversationOf(frame)));
      if (isMuted) muted.inc();
      return isMuted;
    };
  };
}
