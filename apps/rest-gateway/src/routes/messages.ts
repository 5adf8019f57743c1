import type { FastifyInstance } from 'fastify';
import { SyncQuery, SyncResponse } from '@parley/contracts';
import { errors, s, secured } from '../schemas';
import { Upstreams } from '../upstream';
import { forwarder, query } from './forward';

/** `GET /v1/messages` (sync), owned by persistence-ms. */
export function registerMessageRoutes(api: FastifyInstance, upstreams: Upstreams): void {
  const forward = forwarder(upstreams);
  api.get(
    '/v1/messages',
    {
      schema: {
        tags: ['messages'],
        operationId: 'syncMessages',
        description: 'What the user has not acked yet, oldest first',
        security: secured,
        querystring: s(SyncQuery),
        response: { 200: s(SyncResponse), ...errors },
      },
    },
    forward('persistence-ms', 'GET', (r) => `/internal/messages?${query(r)}`),
  );
}
