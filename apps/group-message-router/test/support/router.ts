import type { GroupCommandEvent, GroupTopicEvent } from '@parley/contracts';
import { createMetricsRegistry, Readiness, silentLogger } from '@parley/service-kit';
import { createGroupMessageRouter, GroupMessageRouter, GroupMessageRouterDeps } from '../../src/app';

/** A router on test doubles, with quiet logs and its own metrics. */
export const routerOn = (
  deps: Omit<GroupMessageRouterDeps, 'logger' | 'metrics' | 'readiness' | 'port' | 'host'>,
): GroupMessageRouter =>
  createGroupMessageRouter({
    ...deps,
    logger: silentLogger(),
    metrics: createMetricsRegistry('group-message-router', { collectDefaults: false }),
    readiness: new Readiness(),
    port: 0,
    host: '127.0.0.1',
  });

/** A group message as the gateway writes it to the group topic. */
export const message = (from: string, id: string, group: string, body: unknown = 'hi'): GroupTopicEvent => ({
  v: 1,
  kind: 'group-message',
  from,
  sentAt: 1000,
  deviceId: 'phone',
  frame: { type: 'message', id, to: group, chat: 'group', body },
});

/** A group op as the gateway writes it to the group topic. */
export const op = (from: string, id: string, frame: Record<string, unknown>): GroupTopicEvent => ({
  v: 1,
  kind: 'group-command',
  from,
  sentAt: 5,
  frame: { type: 'group', id, ...frame } as GroupCommandEvent['frame'],
});
