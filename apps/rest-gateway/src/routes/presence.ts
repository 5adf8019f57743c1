import type { FastifyInstance } from 'fastify';
import { PresenceQuery, PresenceResponse } from '@parley/contracts';
import { errors, s, secured } from '../schemas';
import { Upstreams } from '../upstream';
import { forwarder, query } from './forward';

/** `GET /v1/presence`, owned by session-ms. */
export function registerPresenceRoutes(api: FastifyInstance, upstreams: Upstreams): void {
  const forward = forwarder(upstreams);
  api.get(
    '/v1/presence',
    {
      schema: {
        tags: ['presence'],
        description: 'Online state and last seen',
        security: secured,
        querystring: s(PresenceQuery),
        response: { 200: s(PresenceResponse), ...errors },
      },
    },
    forward('session-ms', 'GET', (r) => `/internal/presence?${query(r)}`),
  );
}
