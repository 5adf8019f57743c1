import {
  GroupCommandEvent,
  GroupCommandsRequest,
  INTERNAL_SECRET_HEADER,
  MAX_GROUP_COMMANDS,
  TopicPosition,
} from '@parley/contracts';
import { TransientError } from '@parley/service-kit';

/**
 * Where the router has the group ops it meets applied (group-ms owns groups), in order and before
 * it routes what follows them in the group topic.
 */
export interface GroupCommandApplier {
  /**
   * `positions`: each command's place in the group topic, which group-ms records with the version
   * the op made, so that a message handled again meets the membership of its place.
   */
  apply(commands: GroupCommandEvent[], positions?: TopicPosition[]): Promise<void>;
}

/**
 * group-ms's internal API. Unreachable, timed out, a 5xx, a refused secret, a missing route or a
 * body too large: a TransientError, so the batch is retried in order until group-ms takes it.
 * Another 4xx means the ops themselves were refused.
 */
export function createHttpGroupCommandApplier(
  groupMsUrl: string,
  internalSecret: string,
  timeoutMs = 10_000,
): GroupCommandApplier {
  const url = new URL('/internal/group-commands', groupMsUrl);
  const post = async (commands: GroupCommandEvent[], positions: TopicPosition[] | undefined) => {
    let response: Response;
    try {
      response = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', [INTERNAL_SECRET_HEADER]: internalSecret },
        body: JSON.stringify({ commands, positions } satisfies GroupCommandsRequest),
        signal: AbortSignal.timeout(timeoutMs),
        // A redirect would carry the internal secret to wherever it points.
        redirect: 'error',
      });
    } catch (err) {
      throw new TransientError(`group-ms is unreachable: ${(err as Error).message}`);
    }
    let text: string;
    try {
      text = await response.text();
    } catch (err) {
      // Cut off mid-answer (a reset, or the timeout while the rest never came): group-ms's trouble,
      // not the ops', so retried rather than set aside on the DLQ.
      throw new TransientError(
        `group-ms answered ${response.status} but its body could not be read: ${(err as Error).message}`,
      );
    }
    // Not the ops' fault, so retried: the secrets disagree (a rotation rolling out), or the route is
    // missing (a group-ms of an earlier release, a wrong GROUP_URL) or refused the body's size.
    if (response.status >= 500 || RETRIED_STATUSES.has(response.status))
      throw new TransientError(`group-ms answered ${response.status}: ${text}`);
    if (response.status !== 200)
      throw new Error(`group-ms refused the group ops (${response.status}): ${text}`);
  };
  return {
    async apply(commands, positions) {
      const placed = positions?.length === commands.length ? positions : undefined;
      let start = 0;
      for (const part of partsOf(commands)) {
        await post(part, placed?.slice(start, start + part.length));
        start += part.length;
      }
    },
  };
}

const RETRIED_STATUSES = new Set([401, 403, 404, 413]);
/** Well under group-ms's body limit (1 MiB): a run of large ops goes in several calls. */
const MAX_CALL_BYTES = 512 * 1024;

/** The commands in order, in calls of at most MAX_GROUP_COMMANDS and about MAX_CALL_BYTES. */
function partsOf(commands: GroupCommandEvent[]): GroupCommandEvent[][] {
  const parts: GroupCommandEvent[][] = [];
  let part: GroupCommandEvent[] = [];
  let bytes = 0;
  for (const command of commands) {
    const size = Buffer.byteLength(JSON.stringify(command));
    if (part.length > 0 && (part.length === MAX_GROUP_COMMANDS || bytes + size > MAX_CALL_BYTES)) {
      parts.push(part);
      part = [];
      bytes = 0;
    }
    part.push(command);
    bytes += size;
  }
  if (part.length > 0) parts.push(part);
  return parts;
}
