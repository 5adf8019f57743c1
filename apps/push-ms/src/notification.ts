import { createHash } from 'node:crypto';
import type { DeliveredMessage } from '@parley/contracts';
import type { PushNotification } from './provider';

/** What a pending push remembers of one message: never more of its body than the preview. */
export interface MessageSummary {
  mid: string;
  from: string;
  chat: 'direct' | 'group';
  to: string;
  /** Only when message bodies may be shown. */
  preview?: string;
}

const PREVIEW_CHARS = 200;
/** Senders named in the data payload: 20 ids of up to 64 characters keep it within FCM's 4 KiB. */
export const MAX_SENDERS_IN_DATA = 20;

export function summarize(frame: DeliveredMessage, includeBody: boolean): MessageSummary {
  const summary: MessageSummary = {
    mid: frame.mid,
    from: frame.from,
    chat: frame.chat ?? 'direct',
    to: frame.to,
  };
  const preview = includeBody ? previewOf(frame.body) : undefined;
  if (preview) summary.preview = preview;
  return summary;
}

/** A body's text, when it has one: a string body, or a string `text` field. */
function previewOf(body: unknown): string | undefined {
  const text = typeof body === 'string' ? body : (body as { text?: unknown } | null)?.text;
  if (typeof text !== 'string' || text.trim() === '') return undefined;
  if (text.length <= PREVIEW_CHARS) return text;
  let end = PREVIEW_CHARS - 1;
  // Not between the two halves of a surrogate pair (an emoji): half of one is no character.
  if (isHighSurrogate(text.charCodeAt(end - 1))) end--;
  return `${text.slice(0, end)}…`;
}

const isHighSurrogate = (code: number) => code >= 0xd800 && code <= 0xdbff;

/**
 * One notification for a window of messages: "3 new messages from alice", "5 new messages from
 * alice and bob in team". The latest message's text only when previews were kept.
 */
export function buildNotification(messages: MessageSummary[]): PushNotification {
  const senders = [...new Set(messages.map((m) => m.from))];
  const latest = messages[messages.length - 1];
  const summary = `${countText(messages.length)} from ${sendersText(senders)}${groupText(messages)}`;
  const title = senders.length === 1 ? senders[0] : 'Parley';
  let body = summary;
  if (latest.preview) body = messages.length === 1 ? latest.preview : `${summary}: ${latest.preview}`;
  return {
    title,
    body,
    data: {
      kind: 'parley.messages',
      count: String(messages.length),
      // Not `from`: FCM reserves it (with `message_type`, `google…`, `gcm…`) and refuses the push.
      senders: senders.slice(0, MAX_SENDERS_IN_DATA).join(','),
      mid: latest.mid,
    },
    collapseId: collapseIdOf(latest.mid),
  };
}

/** APNs takes a collapse id of at most 64 bytes; a longer mid is named by its hash. */
const MAX_COLLAPSE_ID_BYTES = 64;

/**
 * The latest mid names the window: a push sent again (one FCM took before its answer was lost, or
 * a replay after a restart) replaces the one shown instead of stacking a second beside it.
 */
export function collapseIdOf(mid: string): string {
  if (Buffer.byteLength(mid) <= MAX_COLLAPSE_ID_BYTES) return mid;
  return `~${createHash('sha256').update(mid).digest('base64url').slice(0, 43)}`;
}

function countText(count: number): string {
  return count === 1 ? 'New message' : `${count} new messages`;
}

function sendersText(senders: string[]): string {
  if (senders.length === 1) return senders[0];
  if (senders.length === 2) return `${senders[0]} and ${senders[1]}`;
  return `${senders[0]} and ${senders.length - 1} others`;
}

function groupText(messages: MessageSummary[]): string {
  const groups = new Set(messages.map((m) => (m.chat === 'group' ? m.to : '')));
  const [only] = groups;
  return groups.size === 1 && only ? ` in ${only}` : '';
}
