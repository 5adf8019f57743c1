import type { MessageSummary } from './notification';

interface Window {
  messages: Map<string, MessageSummary>;
  timer: NodeJS.Timeout;
}

export interface Coalescer {
  /** Adds a message to the user's open window, opening one (closing after `windowMs`) if none. */
  add(user: string, message: MessageSummary): void;
  /** The user acked these mids: they need no push any more. */
  drop(user: string, mids: string[]): void;
  /** Closes every open window now (shutdown). */
  flushAll(): void;
  readonly openWindows: number;
}

/**
 * One push per user per window: the first message opens the window, later ones join it (the same
 * mid once), and when it closes `flush` gets them all, oldest first.
 */
export function createCoalescer(
  windowMs: number,
  flush: (user: string, messages: MessageSummary[]) => void,
): Coalescer {
  const windows = new Map<string, Window>();
  const close = (user: string) => {
    const window = windows.get(user);
    if (!window) return;
    clearTimeout(window.timer);
    windows.delete(user);
    if (window.messages.size > 0) flush(user, [...window.messages.values()]);
  };
  return {
    add(user, message) {
      let window = windows.get(user);
      if (!window) {
        window = { messages: new Map(), timer: setTimeout(() => close(user), windowMs) };
        windows.set(user, window);
      }
      if (!window.messages.has(message.mid)) window.messages.set(message.mid, message);
    },
    drop(user, mids) {
      const window = windows.get(user);
      if (!window) return;
      for (const mid of mids) window.messages.delete(mid);
      if (window.messages.size === 0) {
        clearTimeout(window.timer);
        windows.delete(user);
      }
    },
    flushAll() {
      for (const user of [...windows.keys()]) close(user);
    },
    get openWindows() {
      return windows.size;
    },
  };
}
