import { GatewayDelivery, GatewaySendResponse, INTERNAL_SECRET_HEADER } from '@parley/contracts';

/** How session-ms reaches a ws-gateway instance's internal `/send`. */
export interface GatewayClient {
  /** Sockets written per delivery, in order. Rejects when the gateway cannot be reached. */
  send(gatewayUrl: string, deliveries: GatewayDelivery[]): Promise<number[]>;
}

/** HTTP with keep-alive (Node's fetch pools connections per origin). */
export function createHttpGatewayClient(internalSecret: string, timeoutMs = 5000): GatewayClient {
  return {
    async send(gatewayUrl, deliveries) {
      const response = await fetch(`${gatewayUrl}/send`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', [INTERNAL_SECRET_HEADER]: internalSecret },
        body: JSON.stringify({ deliveries }),
        signal: AbortSignal.timeout(timeoutMs),
      });
      if (!response.ok) throw new Error(`gateway ${gatewayUrl} answered ${response.status}`);
      const body = (await response.json()) as GatewaySendResponse;
      return body.results.map((r) => r.written);
    },
  };
}
