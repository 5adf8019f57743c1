/**
 * The SQL port the services use. Two adapters speak the same SQL: `pg` against a real Postgres
 * (production, tests) and PGlite in-process (the embedded default).
 */
export interface QueryResult<R> {
  rows: R[];
  rowCount: number;
}

export interface SqlExecutor {
  query<R = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<QueryResult<R>>;
}

export interface SqlDatabase extends SqlExecutor {
  /**
   * Runs `work` in one transaction: committed if it resolves, rolled back if it throws. `noTimeout`:
   * the client waits for each answer without limit (work that lifts the statement timeout itself).
   */
  transaction<T>(work: (tx: SqlExecutor) => Promise<T>, options?: { noTimeout?: boolean }): Promise<T>;
  /** Resolves when the database answers; for readiness checks. */
  ping(): Promise<void>;
  close(): Promise<void>;
  readonly kind: 'postgres' | 'pglite';
}

/** A transaction whose work caught a failed statement: Postgres rolled it back at COMMIT. */
export class RolledBackError extends Error {
  constructor() {
    super('the transaction was rolled back: a statement in it failed and the failure was caught');
    this.name = 'RolledBackError';
  }
}
