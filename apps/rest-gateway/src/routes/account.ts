import type { FastifyInstance } from 'fastify';
import { AccountErased, compile, ErasedCount, ParleyError } from '@parley/contracts';
import { errors, s, secured } from '../schemas';
import { UpstreamName, Upstreams } from '../upstream';

const validateErasedCount = compile(ErasedCount);

/** `DELETE /v1/account`: the user erased in each service that holds something of theirs, in turn. */
export function registerAccountRoutes(api: FastifyInstance, upstreams: Upstreams): void {
  api.delete(
    '/v1/account',
    {
      schema: {
        tags: ['account'],
        operationId: 'deleteAccount',
        description:
          'Erase what Parley holds of the user: leave every group, forget their devices and last seen, drop what awaits their ack and what is stored for them. Idempotent: a 503 part way is finished by calling again',
        security: secured,
        response: { 200: s(AccountErased), ...errors },
      },
    },
    async (request): Promise<AccountErased> => {
      const eraseIn = (service: UpstreamName) => erase(upstreams, service, request.user);
      // Groups first, so that no new group message is fanned out to the user meanwhile; what awaits
      // an ack before storage, so that none of it is handed to storage after storage is erased.
      const groups = await eraseIn('group-ms');
      const devices = await eraseIn('push-ms');
      const pending = await eraseIn('session-ms');
      const stored = await eraseIn('persistence-ms');
      const erased = { groups, devices, pending, stored };
      request.log.info({ user: request.user, erased }, 'account erased');
      return { erased };
    },
  );
}

/** How many things `service` erased of the user, as it answers (a body of another shape is a 503). */
async function erase(upstreams: Upstreams, service: UpstreamName, user: string): Promise<number> {
  const { body } = await upstreams.call(service, { method: 'DELETE', path: '/internal/account', user });
  const checked = validateErasedCount(body);
  if (!checked.ok)
    throw new ParleyError('unavailable', `${service} answered the erasure with an unexpected body`);
  return checked.value.erased;
}
