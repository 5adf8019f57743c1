import type { FastifyInstance } from 'fastify';
import { BlockersResponse, compile, ParleyError, PresenceQuery, PresenceResponse } from '@parley/contracts';
import { errors, s, secured } from '../schemas';
import { UpstreamName, Upstreams } from '../upstream';
import { query } from './forward';

const validatePresence = compile(PresenceResponse);
const validateBlockers = compile(BlockersResponse);

/**
 * `GET /v1/presence`, owned by session-ms; those asked about who blocked the caller (group-ms
 * knows) are answered offline, with no last seen, whatever session-ms says of them.
 */
export function registerPresenceRoutes(api: FastifyInstance, upstreams: Upstreams): void {
  api.get(
    '/v1/presence',
    {
      schema: {
        tags: ['presence'],
        operationId: 'getPresence',
        description:
          'Online state and last seen of the users asked about. A user who blocked you is shown offline with no last seen (`online: false`, `lastSeen: null`)',
        security: secured,
        querystring: s(PresenceQuery),
        response: { 200: s(PresenceResponse), ...errors },
      },
    },
    async (request): Promise<PresenceResponse> => {
      const users = query(request);
      const ask = (service: UpstreamName, path: string) =>
        upstreams.call(service, { method: 'GET', path, user: request.user, success: 200 });
      // Both at once; either failing fails the request (a blocker's presence is never shown for
      // want of the blocks). session-ms's refusal first: it is the one this route always gave.
      const [presence, blockers] = await Promise.allSettled([
        ask('session-ms', `/internal/presence?${users}`),
        ask('group-ms', `/internal/blocks/blockers?${users}`),
      ]);
      if (presence.status === 'rejected') throw presence.reason;
      if (blockers.status === 'rejected') throw blockers.reason;
      const shown = validatePresence(presence.value.body);
      if (!shown.ok) throw unexpected('session-ms');
      const hidden = validateBlockers(blockers.value.body);
      if (!hidden.ok) throw unexpected('group-ms');
      const blockedBy = new Set(hidden.value.blockers);
      return {
        presence: shown.value.presence.map((entry) =>
          blockedBy.has(entry.user) ? { user: entry.user, online: false, lastSeen: null } : entry,
        ),
      };
    },
  );
}

const unexpected = (service: UpstreamName) =>
  new ParleyError('unavailable', `${service} answered the presence with an unexpected body`);
