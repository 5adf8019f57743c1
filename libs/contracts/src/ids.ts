import { hash } from 'node:crypto';
import { Type } from '@sinclair/typebox';

export const USER_ID_PATTERN = '^[A-Za-z0-9_.-]{1,64}$';
export const CLIENT_ID_PATTERN = '^[A-Za-z0-9_-]{1,64}$';

export const UserId = Type.String({ pattern: USER_ID_PATTERN, description: 'A user id' });
export const GroupId = Type.String({
  pattern: USER_ID_PATTERN,
  description: 'A group id (same alphabet as user ids)',
});
/** Where a message or typing notice goes: a user, or a group (`chat: group`). */
export const Recipient = Type.String({
  pattern: USER_ID_PATTERN,
  description: 'A user id, or the group id of a group message (`chat: group`)',
});
export const DeviceId = Type.String({
  pattern: USER_ID_PATTERN,
  description: 'A device id chosen by the client',
});
export const ClientMessageId = Type.String({
  pattern: CLIENT_ID_PATTERN,
  description: 'Client message id, unique per sender',
});
export const Mid = Type.String({
  minLength: 1,
  maxLength: 200,
  description: 'Server message id: `<from>:<id>` for what users send, `~...` for what the server originates',
});
export const Timestamp = Type.Integer({ minimum: 0, description: 'Milliseconds since the Unix epoch' });
/** A gateway names its sockets with UUIDs (36 characters): room for another scheme, not for a payload. */
export const MAX_CONN_ID_LENGTH = 128;
export const ConnId = Type.String({
  maxLength: MAX_CONN_ID_LENGTH,
  description: 'A connection id, given to a socket by its gateway',
});

/** The server message id of anything a user sends: deterministic, so a resend is the same message. */
export function userMid(from: string, id: string): string {
  return `${from}:${id}`;
}

/**
 * Ids for frames the server originates. `~` never appears in a user id, so these cannot collide
 * with `<user>:<id>`; each is deterministic in its inputs so a replayed event yields the same mid.
 */
export function serverMid(kind: string, ...parts: string[]): string {
  return `~${kind}:${parts.join(':')}`;
}

/** The mid of a `delivered` or `read` receipt: deterministic, so a replayed ack or read is one receipt. */
export function receiptMid(status: 'delivered' | 'read', by: string, mids: string[]): string {
  // crypto.hash: one call, about a third of createHash's cost; the same digest.
  const digest = hash('sha256', mids.join('\n'), 'base64url').slice(0, 22);
  return serverMid(status === 'read' ? 'read' : 'dlv', by, digest);
}

/** The sender of a user mid (`<from>:<id>`); undefined for server-originated mids. */
export function senderOfMid(mid: string): string | undefined {
  if (mid.startsWith('~')) return undefined;
  const colon = mid.indexOf(':');
  return colon > 0 ? mid.slice(0, colon) : undefined;
}
