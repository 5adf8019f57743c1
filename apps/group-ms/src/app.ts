import { randomUUID } from 'node:crypto';
import { Type } from '@sinclair/typebox';
import { Counter } from 'prom-client';
import { GroupCommandEvent, TOPICS } from '@parley/contracts';
import { Envelope, EventBus, KafkaSettingsSchema } from '@parley/kafka';
import { DatabaseConfig } from '@parley/postgres';
import {
  buildHttpServer,
  CommonConfig,
  HttpServer,
  InternalConfig,
  requireInternalSecret,
  Runtime,
  Service,
  serviceLifecycle,
} from '@parley/service-kit';
import { GroupStore } from './group-store';
import { GroupEffects, GroupService, noEffects } from './group-service';
import { registerGroupRoutes } from './http-routes';

export const GroupMsConfig = Type.Object({
  ...CommonConfig,
  ...KafkaSettingsSchema,
  ...DatabaseConfig,
  ...InternalConfig,
  PORT: Type.Integer({
    minimum: 0,
    maximum: 65535,
    default: 9104,
    description: 'Internal group API, probes and metrics',
  }),
  GROUP_MAX_MEMBERS: Type.Integer({
    minimum: 1,
    default: 1024,
    description: 'Most members a group may have',
  }),
});

export interface GroupMsDeps extends Omit<Runtime, 'closer'> {
  bus: EventBus;
  store: GroupStore;
  port: number;
  host?: string;
  internalSecret: string;
  maxMembers: number;
  /** Consumer group for group commands; `group-ms` by default. */
  groupId?: string;
  clock?: () => number;
  newId?: () => string;
}

export interface GroupMs extends Service {
  http: HttpServer;
}

/**
 * Groups and members in Postgres: the internal REST API for synchronous calls, and the consumer of
 * group commands from the pipe. Every change publishes a `group` deliverable to each member (and to
 * removed members) and a change event for membership caches.
 */
export function createGroupMs(deps: GroupMsDeps): GroupMs {
  const groups = new GroupService(deps.store, { maxMembers: deps.maxMembers });
  const applied = new Counter({
    name: 'parley_group_commands_total',
    help: 'Group commands from the pipe, by op',
    labelNames: ['op'],
    registers: [deps.metrics],
  });
  const publish = (effects: GroupEffects) => publishEffects(deps.bus, effects);

  const http = buildHttpServer(deps);
  requireInternalSecret(http, deps.internalSecret);
  registerGroupRoutes(http, {
    groups,
    publish,
    clock: deps.clock ?? Date.now,
    newId: deps.newId ?? randomUUID,
  });

  const handle = async (batch: Envelope<GroupCommandEvent>[]) => {
    const effects = noEffects();
    for (const { event } of batch) {
      const { deliveries, changes } = await groups.applyCommand(event);
      effects.deliveries.push(...deliveries);
      effects.changes.push(...changes);
      applied.inc({ op: event.frame.op });
    }
    await publish(effects);
  };
  const subscription = deps.bus.subscribe({
    groupId: deps.groupId ?? 'group-ms',
    topic: TOPICS.groupCommands,
    handle,
  });

  return { http, ...serviceLifecycle(http, deps, deps.readiness, [subscription]) };
}

async function publishEffects(bus: EventBus, effects: GroupEffects): Promise<void> {
  await Promise.all([
    bus.publish(TOPICS.delivery, effects.deliveries),
    bus.publish(TOPICS.groupChanges, effects.changes),
  ]);
}
