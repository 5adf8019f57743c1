import { createHash } from 'node:crypto';
import { SqlDatabase } from './database';

export interface Migration {
  /** Sortable and never changed once released, e.g. `001_messages`. */
  id: string;
  sql: string;
}

/**
 * Applies the migrations a service has not applied yet, in id order, in one transaction under an
 * advisory lock: replicas starting together wait for each other instead of racing. The lock is
 * one for every service, since they share the bookkeeping table: two services creating it at once
 * on a fresh database would collide in the catalog. No statement timeout applies. A table lock
 * is waited for `MIGRATION_LOCK_TIMEOUT_MS` at most: every statement on the table queues behind a
 * waiting ALTER, so one held up by a long transaction (an older replica's, an operator's) would
 * stop the traffic on that table. The migrations then roll back and are tried again after a pause,
 * `MIGRATION_LOCK_ATTEMPTS` times in all. Returns the ids applied now.
 */
export async function migrate(db: SqlDatabase, service: string, migrations: Migration[]): Promise<string[]> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await migrateOnce(db, service, migrations);
    } catch (err) {
      if ((err as { code?: string }).code !== LOCK_NOT_AVAILABLE || attempt >= MIGRATION_LOCK_ATTEMPTS)
        throw err;
      await new Promise((resolve) => setTimeout(resolve, MIGRATION_LOCK_RETRY_MS));
    }
  }
}

const LOCK_NOT_AVAILABLE = '55P03';
/** How long a migration waits for a table lock, and how often it is tried (about 5 minutes in all). */
const MIGRATION_LOCK_TIMEOUT_MS = 2000;
const MIGRATION_LOCK_ATTEMPTS = 100;
const MIGRATION_LOCK_RETRY_MS = 1000;

async function migrateOnce(db: SqlDatabase, service: string, migrations: Migration[]): Promise<string[]> {
  const ordered = [...migrations].sort((a, b) => a.id.localeCompare(b.id));
  return db.transaction(
    async (tx) => {
      // Waiting for another replica's migrations, or a long one (an index on a big table), is no stuck query.
      await tx.query('SET LOCAL statement_timeout = 0');
      await tx.query('SELECT pg_advisory_xact_lock($1)', [MIGRATIONS_LOCK]);
      // After the advisory lock: waiting for another replica's migrations holds up no traffic.
      await tx.query(`SET LOCAL lock_timeout = ${MIGRATION_LOCK_TIMEOUT_MS}`);
      await tx.query(`CREATE TABLE IF NOT EXISTS parley_migrations (
      service text NOT NULL,
      id text NOT NULL,
      applied_at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (service, id)
    )`);
      const done = await tx.query<{ id: string }>('SELECT id FROM parley_migrations WHERE service = $1', [
        service,
      ]);
      const applied = new Set(done.rows.map((row) => row.id));
      const pending = ordered.filter((m) => !applied.has(m.id));
      for (const migration of pending) {
        await tx.query(migration.sql);
        await tx.query('INSERT INTO parley_migrations (service, id) VALUES ($1, $2)', [
          service,
          migration.id,
        ]);
      }
      return pending.map((m) => m.id);
    },
    { noTimeout: true },
  );
}

/** A stable 64-bit advisory-lock key, as a decimal string for bigint. */
const MIGRATIONS_LOCK = BigInt.asIntN(
  64,
  BigInt('0x' + createHash('sha256').update('parley:migrations').digest('hex').slice(0, 16)),
).toString();
