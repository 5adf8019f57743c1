import { Client } from 'pg';
import { randomUUID } from 'node:crypto';
import { SqlDatabase } from './database';
import { createPgDatabase } from './pg-database';
import { createPgliteDatabase } from './pglite-database';

/** Where the real-Postgres tests connect; CI starts this server (see .ci/run). */
export const TEST_DATABASE_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

export interface TestDatabase {
  name: string;
  /** Options apply to Postgres only (PGlite has no statement timeout of its own). */
  open(options?: { statementTimeoutMs?: number }): Promise<SqlDatabase>;
  /** Drops what `open` created. */
  dispose(): Promise<void>;
}

/**
 * The adapters a shared store suite runs against: real Postgres (a fresh schema per suite, so runs
 * never see each other's rows) and in-memory PGlite.
 */
export function testDatabases(): TestDatabase[] {
  return [postgresTestDatabase(), pgliteTestDatabase()];
}

function postgresTestDatabase(): TestDatabase {
  const schema = `t_${randomUUID().replace(/-/g, '').slice(0, 16)}`;
  const opened: SqlDatabase[] = [];
  return {
    name: 'postgres',
    async open(options) {
      const admin = new Client({ connectionString: TEST_DATABASE_URL });
      await admin.connect();
      await admin.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
      await admin.end();
      const db = createPgDatabase({
        connectionString: TEST_DATABASE_URL,
        options: `-c search_path=${schema}`,
        ...options,
      });
      opened.push(db);
      return db;
    },
    async dispose() {
      await Promise.all(opened.splice(0).map((db) => db.close()));
      const admin = new Client({ connectionString: TEST_DATABASE_URL });
      await admin.connect();
      await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await admin.end();
    },
  };
}

function pgliteTestDatabase(): TestDatabase {
  const opened: SqlDatabase[] = [];
  return {
    name: 'pglite',
    async open() {
      const db = await createPgliteDatabase();
      opened.push(db);
      return db;
    },
    async dispose() {
      await Promise.all(opened.splice(0).map((db) => db.close()));
    },
  };
}
