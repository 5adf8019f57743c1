import { mkdirSync } from 'node:fs';
import { Type, TProperties } from '@sinclair/typebox';
import { SqlDatabase } from './database';
import { createPgDatabase, MAX_STATEMENT_TIMEOUT_MS } from './pg-database';
import { createPgliteDatabase } from './pglite-database';

export const DatabaseConfig = {
  DATABASE_URL: Type.Optional(
    Type.String({ pattern: '^postgres(ql)?://', description: 'Postgres; PGlite when unset' }),
  ),
  DATABASE_POOL_SIZE: Type.Integer({ minimum: 1, default: 10 }),
  DATABASE_STATEMENT_TIMEOUT_MS: Type.Integer({
    minimum: 0,
    maximum: MAX_STATEMENT_TIMEOUT_MS,
    default: 30_000,
    description:
      'Postgres cancels a statement (lock waits included) that runs longer, so a stuck query fails and is retried instead of holding a consumer; 0: no limit. Migrations are exempt',
  }),
  PGLITE_DATA_DIR: Type.String({ default: '.data/pglite', description: 'Embedded PGlite data directory' }),
} satisfies TProperties;

export interface DatabaseSettings {
  DATABASE_URL?: string;
  DATABASE_POOL_SIZE: number;
  DATABASE_STATEMENT_TIMEOUT_MS?: number;
  PGLITE_DATA_DIR: string;
}

/** Postgres when `DATABASE_URL` is set, else PGlite in its data directory. */
export function openDatabase(settings: DatabaseSettings): Promise<SqlDatabase> {
  if (settings.DATABASE_URL) {
    return Promise.resolve(
      createPgDatabase({
        connectionString: settings.DATABASE_URL,
        max: settings.DATABASE_POOL_SIZE,
        statementTimeoutMs: settings.DATABASE_STATEMENT_TIMEOUT_MS ?? 30_000,
      }),
    );
  }
  // PGlite creates its data directory but not the parents.
  if (settings.PGLITE_DATA_DIR) mkdirSync(settings.PGLITE_DATA_DIR, { recursive: true });
  return createPgliteDatabase(settings.PGLITE_DATA_DIR || undefined);
}

/** For `main.ts`: the database from the settings, with a readiness check and closing on shutdown. */
export async function connectDatabase(
  settings: DatabaseSettings,
  runtime: {
    readiness: { register(name: string, check: () => Promise<unknown>): void };
    closer: { add(name: string, close: () => Promise<unknown>): void };
  },
): Promise<SqlDatabase> {
  const db = await openDatabase(settings);
  runtime.closer.add('database', () => db.close());
  runtime.readiness.register('database', () => db.ping());
  return db;
}
