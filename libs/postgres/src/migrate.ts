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
 * on a fresh database would collide in the catalog. No statement timeout applies. Returns the ids
 * applied now.
 */
export async function migrate(db: SqlDatabase, service: string, migrations: Migration[]): Promise<string[]> {
  const ordered = [...migrations].sort((a, b) => a.id.localeCompare(b.id));
  return db.transaction(async (tx) => {
    // Waiting for another replica's migrations, or a long one (an index on a big table), is no stuck query.
    await tx.query('SET LOCAL statement_timeout = 0');
    await tx.query('SELECT pg_advisory_xact_lock($1)', [MIGRATIONS_LOCK]);
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
      await tx.query('INSERT INTO parley_migrations (service, id) VALUES ($1, $2)', [service, migration.id]);
    }
    return pending.map((m) => m.id);
  });
}

/** A stable 64-bit advisory-lock key, as a decimal string for bigint. */
const MIGRATIONS_LOCK = BigInt.asIntN(
  64,
  BigInt('0x' + createHash('sha256').update('parley:migrations').digest('hex').slice(0, 16)),
).toString();
