import { Static, Type } from '@sinclair/typebox';
import { Mid, UserId } from './ids';
import { PushedFrame } from './server-frames';

/**
 * Internal HTTP between services. Never exposed publicly: every call carries the internal shared
 * secret, and calls on behalf of a user carry that user's id (already authenticated by an edge).
 */
export const INTERNAL_SECRET_HEADER = 'x-parley-internal-secret';
export const INTERNAL_USER_HEADER = 'x-parley-user';
export const MAX_GATEWAY_BATCH = 1000;

export const GatewayDelivery = Type.Object({
  to: UserId,
  connIds: Type.Optional(
    Type.Array(Type.String(), { description: 'Only these connections; all of the user’s otherwise' }),
  ),
  frame: PushedFrame,
});
export type GatewayDelivery = Omit<Static<typeof GatewayDelivery>, 'frame'> & { frame: PushedFrame };

export const GatewaySendRequest = Type.Object(
  { deliveries: Type.Array(GatewayDelivery, { minItems: 1, maxItems: MAX_GATEWAY_BATCH }) },
  { $id: 'GatewaySendRequest' },
);
export type GatewaySendRequest = { deliveries: GatewayDelivery[] };

export const GatewaySendResponse = Type.Object(
  {
    results: Type.Array(
      Type.Object({ written: Type.Integer({ minimum: 0, description: 'Sockets written to' }) }),
    ),
  },
  { $id: 'GatewaySendResponse' },
);
export type GatewaySendResponse = Static<typeof GatewaySendResponse>;

export const BulkAckBody = Type.Object(
  { mids: Type.Array(Mid, { minItems: 1, maxItems: 500 }) },
  { $id: 'BulkAckBody' },
);
export type BulkAckBody = Static<typeof BulkAckBody>;
