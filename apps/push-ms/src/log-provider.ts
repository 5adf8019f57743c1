import type { Logger } from 'pino';
import type { PushNotification, PushProvider } from './provider';

export interface RecordedPush {
  tokens: string[];
  notification: PushNotification;
  at: number;
}

export interface LogPushProvider extends PushProvider {
  /** The most recent pushes it would have sent, oldest first. */
  readonly recorded: readonly RecordedPush[];
}

/** The embedded default: records and logs what it would have sent, and reports every token as sent. */
export function createLogPushProvider(logger: Logger, keep = 100): LogPushProvider {
  const recorded: RecordedPush[] = [];
  return {
    name: 'log',
    recorded,
    async send(tokens, notification) {
      recorded.push({ tokens, notification, at: Date.now() });
      if (recorded.length > keep) recorded.splice(0, recorded.length - keep);
      logger.info(
        {
          push: {
            devices: tokens.length,
            title: notification.title,
            body: notification.body,
            data: notification.data,
            collapseId: notification.collapseId,
          },
        },
        'push (log provider)',
      );
      return tokens.map(() => 'sent' as const);
    },
    async close() {},
  };
}
