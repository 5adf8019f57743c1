import { BulkAckBody, SYNC_DEFAULT_LIMIT, SyncQuery, SyncResponse } from '@parley/contracts';
import { actingUser, HttpServer, requireInternalSecret } from '@parley/service-kit';
import { decodeCursor, encodeCursor } from './cursor';
import type { PersistenceMetrics } from './metrics';
import type { OfflineStore } from './store';

/**
 * The internal API behind the rest-gateway's `GET /v1/messages` and bulk ack. Every call carries
 * the internal secret and the acting user (`x-parley-user`); a user only reads and acks their own.
 */
export function registerSyncRoutes(
  http: HttpServer,
  store: OfflineStore,
  metrics: PersistenceMetrics,
  internalSecret: string,
): void {
  requireInternalSecret(http, internalSecret);

  http.get(
    '/internal/messages',
    { schema: { querystring: SyncQuery } },
    async (request): Promise<SyncResponse> => {
      const user = actingUser(request);
      const afterSeq = decodeCursor(request.query.after);
      const page = await store.page(user, afterSeq, request.query.limit ?? SYNC_DEFAULT_LIMIT);
      return { messages: page.messages, next: page.hasMore ? encodeCursor(page.lastSeq) : null };
    },
  );

  http.post('/internal/ack', { schema: { body: BulkAckBody } }, async (request, reply) => {
    const user = actingUser(request);
    metrics.acked.inc({ source: 'api' }, await store.ack(user, request.body.mids));
    return reply.code(204).send();
  });
}
