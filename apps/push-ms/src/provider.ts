/** What a user is shown: no message content unless the service is configured to include it. */
export interface PushNotification {
  title: string;
  body: string;
  /** Handed to the app with the notification; FCM wants strings only. */
  data: Record<string, string>;
  /**
   * Notifications with the same one replace each other on the device (Android's tag, APNs'
   * apns-collapse-id, at most 64 bytes): the same window pushed again shows once.
   */
  collapseId: string;
}

/**
 * The result for one token: `sent`; `invalid` (the provider says it will never work again: forget
 * it); `retry` (a transient failure: try again later); `throttled` (FCM's 429: the project or the
 * device is over its quota, back off for a minute); `failed` (neither: give up on this push).
 */
export type TokenOutcome = 'sent' | 'invalid' | 'retry' | 'throttled' | 'failed';

/** The push port of push-ms. Adapters: FCM (firebase-admin) and a log provider. */
export interface PushProvider {
  readonly name: string;
  /** Sends one notification to every token; the outcomes come in the tokens' order. Never rejects. */
  send(tokens: string[], notification: PushNotification): Promise<TokenOutcome[]>;
  close(): Promise<void>;
}
