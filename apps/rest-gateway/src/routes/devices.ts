import type { FastifyInstance } from 'fastify';
import { Type } from '@sinclair/typebox';
import { DeviceParams, RegisterDeviceBody } from '@parley/contracts';
import { bodyErrors, errors, s, secured } from '../schemas';
import { Upstreams } from '../upstream';
import { forwarder, params } from './forward';

/** `PUT/DELETE /v1/devices/:deviceId` (push registration), owned by push-ms. */
export function registerDeviceRoutes(api: FastifyInstance, upstreams: Upstreams): void {
  const forward = forwarder(upstreams);
  const deviceSchema = { tags: ['devices'], security: secured, params: s(DeviceParams) };
  api.put(
    '/v1/devices/:deviceId',
    {
      schema: {
        ...deviceSchema,
        operationId: 'registerDevice',
        description: 'Register the device for push',
        body: s(RegisterDeviceBody),
        response: { 204: Type.Null(), ...bodyErrors },
      },
    },
    forward('push-ms', 'PUT', (r) => `/internal/devices/${params(r).deviceId}`, true),
  );
  api.delete(
    '/v1/devices/:deviceId',
    {
      schema: {
        ...deviceSchema,
        operationId: 'unregisterDevice',
        description: 'Unregister the device',
        response: { 204: Type.Null(), ...errors },
      },
    },
    forward('push-ms', 'DELETE', (r) => `/internal/devices/${params(r).deviceId}`),
  );
}
