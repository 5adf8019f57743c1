import { ErasedCount, SYNC_DEFAULT_LIMIT, SyncQuery, SyncResponse } from '@parley/contracts';
import { actingUser, HttpServer, requireInternalSecret } from '@parley/service-kit';
import { decodeCursor, encodeCursor } from './cursor';
import type { OfflineStore } from './store';

/**
 * The internal API behind the rest-gateway's `GET /v1/messages` and `DELETE /v1/account` (what is
 * stored for the user). Every call carries the internal secret and the acting user
 * (`x-parley-user`); a user only reads their own. Acks do not come this way: a client's ack goes
 * through Kafka (session-ms, then the offline topic), so that the sender's `delivered` receipt is
 * published before the stored copy is dropped.
 */
export function registerSyncRoutes(http: HttpServer, store: OfflineStore, internalSecret: string): void {
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

  http.delete(
    '/internal/account',
    { schema: { response: { 200: ErasedCount } } },
    async (request): Promise<ErasedCount> => ({ erased: await store.erase(actingUser(request)) }),
  );
}
