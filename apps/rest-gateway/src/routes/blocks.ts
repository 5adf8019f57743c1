import type { FastifyInstance } from 'fastify';
import { Type } from '@sinclair/typebox';
import { BlockList, BlockParams, MAX_BLOCKS_PER_USER } from '@parley/contracts';
import { errorAnswer, errors, s, secured } from '../schemas';
import { Upstreams } from '../upstream';
import { forwarder, params } from './forward';

/** `/v1/blocks…` (App Store guideline 1.2), owned by group-ms; message-router enforces them. */
export function registerBlockRoutes(api: FastifyInstance, upstreams: Upstreams): void {
  const forward = forwarder(upstreams);
  const blockSchema = { tags: ['blocks'], security: secured };
  api.put(
    '/v1/blocks/:user',
    {
      schema: {
        ...blockSchema,
        operationId: 'blockUser',
        description: `Block a user. From at most two seconds after this answer their 1:1 messages, typing notices and read receipts are not delivered to you, and \`GET /v1/presence\` shows you to them as offline (\`online: false\`, \`lastSeen: null\`). Group messages are not affected, nor is anything sent before the block, but they can no longer add you to a group (403 \`forbidden\`). No body. Blocking a user already blocked is no error (204 again). 400 \`invalid_request\` for yourself; 409 \`too_many_blocks\` past ${MAX_BLOCKS_PER_USER} blocked users (unblock one first)`,
        params: s(BlockParams),
        response: { 204: Type.Null(), 409: errorAnswer(409), ...errors },
      },
    },
    forward('group-ms', 'PUT', (r) => `/internal/blocks/${params(r).user}`),
  );
  api.delete(
    '/v1/blocks/:user',
    {
      schema: {
        ...blockSchema,
        operationId: 'unblockUser',
        description:
          'Unblock a user: what they send from at most two seconds after this answer is delivered to you again (not what they sent meanwhile), and they see your presence again at once. Unblocking a user not blocked is no error (204 again)',
        params: s(BlockParams),
        response: { 204: Type.Null(), ...errors },
      },
    },
    forward('group-ms', 'DELETE', (r) => `/internal/blocks/${params(r).user}`),
  );
  api.get(
    '/v1/blocks',
    {
      schema: {
        ...blockSchema,
        operationId: 'listBlocks',
        description: `The users you blocked, oldest block first: all of them at once (at most ${MAX_BLOCKS_PER_USER})`,
        response: { 200: s(BlockList), ...errors },
      },
    },
    forward('group-ms', 'GET', () => '/internal/blocks'),
  );
}
