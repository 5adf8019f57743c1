import {
  GroupCommandEvent,
  GroupCommandsRequest,
  INTERNAL_SECRET_HEADER,
  MAX_GROUP_COMMANDS,
} from '@parley/contracts';
import { TransientError } from '@parley/service-kit';

/**
 * Where the router has the group ops it meets applied (group-ms owns groups), in order and before
 * it routes what follows them in the group topic.
 */
export interface GroupCommandApplier {
  apply(commands: GroupCommandEvent[]): Promise<void>;
}

/**
 * group-ms's internal API. Unreachable, timed out, a 5xx or a refused secret: a TransientError,
 * so the batch is retried in order until group-ms takes it. Another 4xx means the ops themselves
 * were refused.
 */
export function createHttpGroupCommandApplier(
  groupMsUrl: string,
  internalSecret: string,
  timeoutMs = 10_000,
): GroupCommandApplier {
  const url = new URL('/internal/group-commands', groupMsUrl);
  const post = async (commands: GroupCommandEvent[]) => {
    let response: Response;
    try {
      response = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', [INTERNAL_SECRET_HEADER]: internalSecret },
        body: JSON.stringify({ commands } satisfies GroupCommandsRequest),
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (err) {
      throw new TransientError(`group-ms is unreachable: ${(err as Error).message}`);
    }
    const text = await response.text();
    // 401/403: the internal secrets disagree (a rotation rolling out), not the ops' fault: retried.
    if (response.status >= 500 || response.status === 401 || response.status === 403)
      throw new TransientError(`group-ms answered ${response.status}: ${text}`);
    if (response.status !== 200)
      throw new Error(`group-ms refused the group ops (${response.status}): ${text}`);
  };
  return {
    async apply(commands) {
      for (let i = 0; i < commands.length; i += MAX_GROUP_COMMANDS)
        await post(commands.slice(i, i + MAX_GROUP_COMMANDS));
    },
  };
}
