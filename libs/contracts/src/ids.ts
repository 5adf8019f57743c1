import { Type } from '@sinclair/typebox';

export const USER_ID_PATTERN = '^[A-Za-z0-9_.-]{1,64}$';
export const CLIENT_ID_PATTERN = '^[A-Za-z0-9_-]{1,64}$';

export const UserId = Type.String({ pattern: USER_ID_PATTERN, description: 'A user id' });
export const GroupId = Type.String({ pattern: USER_ID_PATTERN, description: 'A group id (same alphabet as user ids)' });
export const DeviceId = Type.String({ pattern: USER_ID_PATTERN, description: 'A device id chosen by the client' });
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
