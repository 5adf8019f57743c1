import type { FastifyInstance } from 'fastify';
import { DevTokenBody, DevTokenResponse, ErrorBody } from '@parley/contracts';
import { DevTokenClaims, issueToken } from '@parley/service-kit';
import { s } from '../schemas';

/**
 * `POST /v1/dev/token`: a token for any user, signed with `secret` and carrying the `iss` and `aud`
 * the gateways check (dev mode only).
 */
export function registerDevTokenRoute(
  dev: FastifyInstance,
  { secret, ...claims }: { secret: string } & DevTokenClaims,
): void {
  dev.post(
    '/v1/dev/token',
    {
      schema: {
        tags: ['dev'],
        operationId: 'issueDevToken',
        description: 'Dev mode only: a token for any user',
        body: s(DevTokenBody),
        response: { 200: s(DevTokenResponse), 400: s(ErrorBody) },
      },
    },
    async (request) => ({
      token: await issueToken(secret, (request.body as DevTokenBody).user, undefined, claims),
    }),
  );
}
