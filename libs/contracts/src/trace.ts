import type { ClientFrame } from './client-frames';
import { senderOfMid, userMid } from './ids';
import type { PushedFrame } from './server-frames';

/** Whom an event concerns and which messages it carries: what message tracing matches and logs. */
export interface TracePoints {
  /** The users it is from, to or about (a group id where a frame names one as its `to`). */
  users: string[];
  mids: string[];
}

/**
 * The trace points of an event of any topic; undefined for one that carries no user's message (a
 * gateway heartbeat, a cache invalidation) or that this release does not know.
 */
export function tracePointsOf(event: unknown): TracePoints | undefined {
  const e = event as { kind?: string; [field: string]: unknown };
  switch (e.kind) {
    case 'inbound':
    case 'group-message':
    case 'group-command':
    case 'group-typing':
      return clientFramePoints(e.from as string, e.frame as ClientFrame);
    case 'deliver':
    case 'offline':
      return pushedFramePoints([e.to as string], e.frame as PushedFrame);
    case 'deliver-many':
      return pushedFramePoints(e.to as string[], e.frame as PushedFrame);
    case 'ack':
    case 'offline-ack':
      return withSenders([e.user as string], e.mids as string[]);
    case 'connection-up':
    case 'connection-down':
      return { users: [e.user as string], mids: [] };
    default:
      return undefined;
  }
}

/** A frame pushed to users: they, and who sent what it carries. */
export function pushedFramePoints(to: string[], frame: PushedFrame): TracePoints {
  const users = [...to];
  if (frame.type === 'message' || frame.type === 'typing') users.push(frame.from);
  if (frame.type === 'receipt' || frame.type === 'group') users.push(frame.by);
  if (frame.type === 'typing') return { users, mids: [] };
  return withSenders(users, frame.type === 'receipt' ? [frame.mid, ...frame.mids] : [frame.mid]);
}

function clientFramePoints(from: string, frame: ClientFrame): TracePoints {
  switch (frame.type) {
    case 'message':
      return { users: [from, frame.to], mids: [userMid(from, frame.id)] };
    case 'ack':
      return withSenders([from], frame.mids);
    case 'read':
      return withSenders([from, frame.to], frame.mids);
    case 'group':
      return {
        users: [from, ...('members' in frame ? (frame.members ?? []) : [])],
        mids: [userMid(from, frame.id)],
      };
    case 'typing':
      return { users: [from, frame.to], mids: [] };
    default:
      return { users: [from], mids: [] };
  }
}

/** `users`, and the senders of the user mids among `mids` (an ack concerns who sent what it acks). */
function withSenders(users: string[], mids: string[]): TracePoints {
  const all = [...users];
  for (const mid of mids) {
    const sender = senderOfMid(mid);
    if (sender !== undefined) all.push(sender);
  }
  return { users: all, mids };
}
