import {
  DeviceParams,
  ErasedCount,
  MuteList,
  MuteParams,
  MuteQuery,
  ParleyError,
  RegisterDeviceBody,
} from '@parley/contracts';
import { actingUser, HttpServer, requireInternalSecret } from '@parley/service-kit';
import type { DeviceStore } from './device-store';
import type { MuteStore } from './mute-store';

/**
 * The internal API behind the rest-gateway's `PUT/DELETE /v1/devices/:deviceId` and
 * `DELETE /v1/account` (every device of the user). Every call
 * carries the internal secret and the acting user (`x-parley-user`).
 */
export function registerDeviceRoutes(
  http: HttpServer,
  devices: DeviceStore,
  internalSecret: string,
  mutes: Pick<MuteStore, 'forgetMutesOf'>,
): void {
  requireInternalSecret(http, internalSecret);

  http.put(
    '/internal/devices/:deviceId',
    { schema: { params: DeviceParams, body: RegisterDeviceBody } },
    async (request, reply) => {
      await devices.register(
        actingUser(request),
        request.params.deviceId,
        request.body.token,
        request.body.platform,
      );
      return reply.code(204).send();
    },
  );

  http.delete('/internal/devices/:deviceId', { schema: { params: DeviceParams } }, async (request, reply) => {
    await devices.remove(actingUser(request), request.params.deviceId);
    return reply.code(204).send();
  });

  http.delete(
    '/internal/account',
    { schema: { response: { 200: ErasedCount } } },
    async (request): Promise<ErasedCount> => {
      const user = actingUser(request);
      await mutes.forgetMutesOf(user);
      return { erased: await devices.removeUser(user) };
    },
  );
}

/** The internal API behind the rest-gateway's `/v1/mutes…`: conversations that send the user no push. */
export function registerMuteRoutes(
  http: HttpServer,
  mutes: MuteStore,
  maxMutesPerUser: number,
  clock: () => number = Date.now,
): void {
  http.put(
    '/internal/mutes/:chat/:id',
    { schema: { params: MuteParams, querystring: MuteQuery } },
    async (request, reply) => {
      const { chat, id } = request.params;
      const { until } = request.query;
      const now = clock();
      // A time already past would mute nothing: most likely seconds where ms were meant.
      if (until !== undefined && until <= now)
        throw new ParleyError(
          'invalid_request',
          `until: ${until} is not in the future (milliseconds since the epoch; now is ${now})`,
        );
      const outcome = await mutes.mute(actingUser(request), { chat, id }, until ?? null, maxMutesPerUser);
      if (outcome === 'too_many')
        throw new ParleyError(
          'too_many_mutes',
          `at most ${maxMutesPerUser} conversations may be muted; unmute one first`,
        );
      return reply.code(204).send();
    },
  );

  http.delete('/internal/mutes/:chat/:id', { schema: { params: MuteParams } }, async (request, reply) => {
    await mutes.unmute(actingUser(request), request.params);
    return reply.code(204).send();
  });

  http.get(
    '/internal/mutes',
    { schema: { response: { 200: MuteList } } },
    async (request): Promise<MuteList> => ({ mutes: await mutes.mutesOf(actingUser(request), clock()) }),
  );
}
