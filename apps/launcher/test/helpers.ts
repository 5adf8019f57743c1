import { issueToken } from '@parley/service-kit';
import { WsTestClient } from '@parley/test-kit';
import type { Fleet } from '../src/fleet';

/** Real clients of a running fleet: WebSocket devices and REST calls as a user. */
export function clientsOf(fleet: Fleet) {
  const open: WsTestClient[] = [];
  const token = (user: string) => issueToken(fleet.jwtSecret, user);
  return {
    token,
    async connect(user: string, options: { deviceId?: string; autoAck?: boolean } = {}) {
      const query = options.deviceId ? `&deviceId=${options.deviceId}` : '';
      const client = await WsTestClient.connect(`${fleet.urls.ws}?token=${await token(user)}${query}`, {
        autoAck: options.autoAck,
      });
      open.push(client);
      return client;
    },
    async rest(user: string, method: string, path: string, body?: unknown) {
      const response = await fetch(`${fleet.urls.rest}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${await token(user)}`,
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await response.text();
      return {
        status: response.status,
        body: text ? JSON.parse(text) : undefined,
        headers: response.headers,
      };
    },
    async closeAll() {
      await Promise.all(open.splice(0).map((c) => c.close()));
    },
  };
}
