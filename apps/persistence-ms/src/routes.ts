import { ErasedCount, ParleyError, SYNC_DEFAULT_LIMIT, SyncQuery, SyncResponse } from '@parley/contracts';
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
export function registerSyncRoutes(
  http: HttpServer,
  store: OfflineStore,
  { internalSecret, eraseBudgetMs }: { internalSecret: string; eraseBudgetMs: number },
): void {
  requireInternalSecret(http, internalSecret);

  http.get(
    '/internal/messages',
    { schema: { querystring: SyncQuery } },
    async (request): Promise<SyncResponse> => {
      const user = actingUser(request);
      const afterSeq = decodeCursor(request.query.after, user);
      const page = await store.page(user, afterSeq, request.query.limit ?? SYNC_DEFAULT_LIMIT);
      return { messages: page.messages, next: page.hasMore ? encodeCursor(page.lastSeq, user) : null };
    },
  );

  http.delete(
    '/internal/account',
    { schema: { response: { 200: ErasedCount } } },
    async (request): Promise<ErasedCount> => {
      // Answered 503 once the budget has passed (the caller's timeout is the rest-gateway's 10 s),
      // what was erased so far erased: the caller's next call goes on from there.
      const deadline = performance.now() + eraseBudgetMs;
      const { erased, done } = await store.erase(actingUser(request), () => performance.now() >= deadline);
      if (!done)
        throw new ParleyError(
          'unavailable',
          `erased ${erased} stored deliverables, more to erase: call again to go on`,
        );
      return { erased };
    },
  );
}
