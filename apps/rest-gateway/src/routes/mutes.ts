import type { FastifyInstance } from 'fastify';
import { Type } from '@sinclair/typebox';
import { MAX_MUTES_PER_USER, MuteList, MuteParams, MuteQuery } from '@parley/contracts';
import { errorAnswer, errors, s, secured } from '../schemas';
import { Upstreams } from '../upstream';
import { forwarder, params, query } from './forward';

/** `/v1/mutes…`: conversations that send the user no push notification, kept by push-ms. */
export function registerMuteRoutes(api: FastifyInstance, upstreams: Upstreams): void {
  const forward = forwarder(upstreams);
  const muteSchema = { tags: ['mutes'], security: secured };
  const path = (request: Parameters<typeof params>[0]) => {
    const { chat, id } = params(request);
    return `/internal/mutes/${chat}/${id}`;
  };
  api.put(
    '/v1/mutes/:chat/:id',
    {
      schema: {
        ...muteSchema,
        operationId: 'muteConversation',
        description: `Mute a conversation (\`direct\` with a user, or a \`group\`): its messages still arrive over the socket and by sync, but no push notification announces them to you. \`?until=<ms since the epoch>\` ends the mute then (400 \`invalid_request\` for a time already past); without it, it lasts until unmuted. Muting again changes when it ends. No body. 409 \`too_many_mutes\` past ${MAX_MUTES_PER_USER} muted conversations`,
        params: s(MuteParams),
        querystring: s(MuteQuery),
        response: { 204: Type.Null(), 409: errorAnswer(409), ...errors },
      },
    },
    forward('push-ms', 'PUT', (r) => `${path(r)}?${query(r)}`),
  );
  api.delete(
    '/v1/mutes/:chat/:id',
    {
      schema: {
        ...muteSchema,
        operationId: 'unmuteConversation',
        description:
          'Unmute a conversation: its messages are announced again. Unmuting one not muted is no error (204 again)',
        params: s(MuteParams),
        response: { 204: Type.Null(), ...errors },
      },
    },
    forward('push-ms', 'DELETE', path),
  );
  api.get(
    '/v1/mutes',
    {
      schema: {
        ...muteSchema,
        operationId: 'listMutes',
        description: `The conversations you muted, those still in force, oldest mute first: all of them at once (at most ${MAX_MUTES_PER_USER})`,
        response: { 200: s(MuteList), ...errors },
      },
    },
    forward('push-ms', 'GET', () => '/internal/mutes'),
  );
}
