import { tracePointsOf, type TopicSpec } from '@parley/contracts';
import type { MessageTrace } from '@parley/service-kit';
import type { Envelope, EventBus } from './bus';

/**
 * `bus`, logging each event of a traced user's message it publishes (once Kafka has it, or the
 * publish failed) and each one a subscriber is handed (again on a retry): every Kafka hop of a
 * message, in every service, from one place. `bus` itself when nobody is traced.
 */
export function tracingBus(bus: EventBus, trace: MessageTrace): EventBus {
  if (!trace.on) return bus;
  /**
   * What to log of an event, when it concerns a traced user. Never throws: a reader with a looser
   * schema than the topic's (message-router's inbound frames) is handed events whose frames
   * tracePointsOf cannot read, and a throw here would fail the handler (retries, then the DLQ) or
   * reject a publish Kafka already has.
   */
  const traced = (event: unknown): Record<string, unknown> | undefined => {
    try {
      const points = tracePointsOf(event);
      const users = points ? trace.tracedAmong(points.users) : [];
      return users.length > 0 ? { ...described(event), mids: points!.mids, traced: users } : undefined;
    } catch {
      return undefined;
    }
  };
  return {
    async publish<T>(topic: TopicSpec<T>, events: T[], options?: { traceId?: string }) {
      try {
        await bus.publish(topic, events, options);
      } catch (err) {
        for (const fields of events.map(traced))
          if (fields) trace.hop('publish failed', { topic: topic.name, ...fields, err });
        throw err;
      }
      for (const fields of events.map(traced))
        if (fields) trace.hop('published', { topic: topic.name, ...fields });
    },
    subscribe(options) {
      return bus.subscribe({
        ...options,
        handle: (batch) => {
          for (const envelope of batch as Envelope<unknown>[]) {
            const fields = traced(envelope.event);
            if (fields)
              trace.hop('consumed', {
                topic: options.topic.name,
                group: options.groupId,
                partition: envelope.partition,
                offset: envelope.offset,
                ...fields,
              });
          }
          return options.handle(batch);
        },
      });
    },
    partitioner: (topic) => bus.partitioner(topic),
    ping: () => bus.ping(),
    close: () => bus.close(),
  };
}

/** An event's kind and parties: `to` as a count where it names many (a group's fan-out). */
function described(event: unknown): Record<string, unknown> {
  const { kind, from, to, user, frame } = event as {
    kind?: string;
    from?: string;
    to?: string | string[];
    user?: string;
    frame?: { type?: string };
  };
  return { kind, frameType: frame?.type, from, to: Array.isArray(to) ? `${to.length} users` : to, user };
}
