import { DeviceParams, ErasedCount, RegisterDeviceBody } from '@parley/contracts';
import { actingUser, HttpServer, requireInternalSecret } from '@parley/service-kit';
import type { DeviceStore } from './device-store';

/**
 * The internal API behind the rest-gateway's `PUT/DELETE /v1/devices/:deviceId` and
 * `DELETE /v1/account` (every device of the user). Every call
 * carries the internal secret and the acting user (`x-parley-user`).
 */
export function registerDeviceRoutes(http: HttpServer, devices: DeviceStore, internalSecret: string): void {
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
    async (request): Promise<ErasedCount> => ({ erased: await devices.removeUser(actingUser(request)) }),
  );
}
