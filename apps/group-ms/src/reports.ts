import { Counter, Registry } from 'prom-client';
import type { Logger } from 'pino';
import {
  ParleyError,
  userMid,
  REPORT_REASONS,
  ReportBody,
  ReportList,
  ReportListQuery,
  ReportReceipt,
  ReportRecord,
  REPORT_PAGE_MAX_BYTES,
} from '@parley/contracts';
import { deleteOlderThan, SqlDatabase, SqlExecutor } from '@parley/postgres';
import { actingUser, contractsBodyValidator, DAY_MS, HttpServer } from '@parley/service-kit';

/** A report as filed: who filed it, and when. */
export interface NewReport extends Omit<ReportBody, 'id'> {
  /** The report's id: `<reporter>:<the client's id>` when it gave one, else the server's. */
  id: string;
  reporter: string;
  at: number;
}

/** Where reports of users are kept for moderators (App Store guideline 1.2), in filing order. */
export interface ReportStore {
  /**
   * Files `report` unless its reporter filed `maxPerDay` in the 24 hours before it: then answers
   * when the oldest of those leaves the window. A report filed before under its id is answered
   * as it is (`repeated`), filing nothing and counting nothing. Serialized per reporter.
   */
  file(
    report: NewReport,
    maxPerDay: number,
  ): Promise<{ filed: ReportRecord; repeated?: boolean } | { retryAt: number }>;
  /**
   * The reports filed after `after` (a position), oldest first: at most `limit`, and none more once
   * their comments and quoted messages reach `maxBytes` (REPORT_PAGE_MAX_BYTES; one report at
   * least). `more`: the page stopped at either, so more may follow its last.
   */
  list(after: number, limit: number, maxBytes?: number): Promise<{ reports: ReportRecord[]; more: boolean }>;
  /**
   * Account erasure: the reports the user filed (returns how many). Those about the user stay for
   * moderators until REPORTS_KEEP_DAYS: a reported user would otherwise erase them before they are read.
   */
  forgetReportsOf(user: string): Promise<number>;
  /** The reports filed before `filedBefore` (returns how many). */
  forgetReportsBefore(filedBefore: number, signal?: AbortSignal): Promise<number>;
}

/** Advisory-lock namespace for one reporter's reports (the second key is hashtext(user id)). */
const REPORT_LOCK_NAMESPACE = 0x72707274; // "rprt"
/**
 * Advisory lock that orders every filing (`user_reports`' positions). A bigserial is handed out at
 * the INSERT but shows at COMMIT, in any order: a moderator who read up to position 11 would never
 * see a 10 committed after it. Taken just before the INSERT and held until commit, it commits
 * positions in order, so a list up to position p has every report at or below it.
 */
const REPORT_ORDER_LOCK = 0x72707473; // "rpts"

const REPORT_COLUMNS = 'id, position, reporter, reported, reason, comment, messages, created_at';

interface ReportRow {
  id: string;
  position: string;
  reporter: string;
  reported: string;
  reason: ReportRecord['reason'];
  comment: string | null;
  messages: string;
  created_at: string;
}

const toRecord = (row: ReportRow): ReportRecord => ({
  id: row.id,
  position: Number(row.position),
  reporter: row.reporter,
  user: row.reported,
  reason: row.reason,
  ...(row.comment === null ? {} : { comment: row.comment }),
  messages: JSON.parse(row.messages) as ReportRecord['messages'],
  at: Number(row.created_at),
});

/** The report store on group-ms's Postgres (pg or PGlite): table `user_reports` (migrations.ts). */
export function createSqlReportStore(db: SqlDatabase): ReportStore {
  return {
    file: (report, maxPerDay) =>
      db.transaction(async (tx) => {
        await tx.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [
          REPORT_LOCK_NAMESPACE,
          report.reporter,
        ]);
        const earlier = await tx.query<ReportRow>(
          `SELECT ${REPORT_COLUMNS} FROM user_reports WHERE id = $1`,
          [report.id],
        );
        if (earlier.rows.length > 0) return { filed: toRecord(earlier.rows[0]), repeated: true };
        const recent = await recentReports(tx, report.reporter, report.at - DAY_MS, maxPerDay);
        if (recent.length >= maxPerDay) return { retryAt: recent[0] + DAY_MS };
        await tx.query('SELECT pg_advisory_xact_lock($1)', [REPORT_ORDER_LOCK]);
        const inserted = await tx.query<ReportRow>(
          `INSERT INTO user_reports (id, reporter, reported, reason, comment, messages, created_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           RETURNING ${REPORT_COLUMNS}`,
          [
            report.id,
            report.reporter,
            report.user,
            report.reason,
            report.comment ?? null,
            JSON.stringify(report.messages ?? []),
            report.at,
          ],
        );
        return { filed: toRecord(inserted.rows[0]) };
      }),
    async list(after, limit, maxBytes = REPORT_PAGE_MAX_BYTES) {
      // The first `limit` after `after` are sized (octet_length reads a stored value's size without
      // reading the value), and those whose predecessors hold under `maxBytes` are read.
      const rows = await db.query<ReportRow & { considered: string }>(
        `SELECT r.id, r.position, r.reporter, r.reported, r.reason, r.comment, r.messages, r.created_at,
                page.considered
         FROM (
           SELECT position, count(*) OVER () AS considered, sum(size) OVER (ORDER BY position) - size AS before
           FROM (
             SELECT position, octet_length(messages) + coalesce(octet_length(comment), 0) AS size
             FROM user_reports WHERE position > $1 ORDER BY position LIMIT $2
           ) firsts
         ) page JOIN user_reports r ON r.position = page.position
         WHERE page.before < $3
         ORDER BY r.position`,
        [after, limit, maxBytes],
      );
      const considered = Number(rows.rows[0]?.considered ?? 0);
      return {
        reports: rows.rows.map(toRecord),
        more: considered === limit || rows.rows.length < considered,
      };
    },
    async forgetReportsOf(user) {
      const deleted = await db.query('DELETE FROM user_reports WHERE reporter = $1', [user]);
      return deleted.rowCount;
    },
    forgetReportsBefore: (filedBefore, signal) =>
      deleteOlderThan(db, { table: 'user_reports', column: 'created_at', before: filedBefore, signal }),
  };
}

/** The times of `reporter`'s reports filed after `since`, oldest first, at most `limit`. */
async function recentReports(
  tx: SqlExecutor,
  reporter: string,
  since: number,
  limit: number,
): Promise<number[]> {
  const rows = await tx.query<{ created_at: string }>(
    `SELECT created_at FROM user_reports WHERE reporter = $1 AND created_at > $2
     ORDER BY created_at DESC LIMIT $3`,
    [reporter, since, limit],
  );
  return rows.rows.map((row) => Number(row.created_at)).reverse();
}

export interface ReportRoutesDeps {
  reports: ReportStore;
  clock: () => number;
  newId: () => string;
  logger: Logger;
  metrics: Registry;
  /** Reports one user may file in 24 hours (MAX_REPORTS_PER_DAY). */
  maxReportsPerDay: number;
}

/**
 * The internal API behind the rest-gateway's `POST /v1/reports`, and the moderators' list of
 * reports (`GET /internal/reports`, not forwarded by the rest-gateway: internal secret only).
 */
export function registerReportRoutes(app: HttpServer, deps: ReportRoutesDeps): void {
  const filed = new Counter({
    name: 'parley_group_reports_total',
    help: 'Users reported (filed for moderators), by reason',
    labelNames: ['reason'],
    registers: [deps.metrics],
  });
  for (const reason of REPORT_REASONS) filed.inc({ reason }, 0);

  // The reason is a union of literals: the contracts' validator names the field and the reasons.
  const bodySchema = { schema: { body: ReportBody }, validatorCompiler: contractsBodyValidator };
  app.post('/internal/reports', bodySchema, async (request, reply) => {
    const reporter = actingUser(request);
    const body = request.body;
    if (body.user === reporter) throw new ParleyError('invalid_request', 'user: you cannot report yourself');
    const at = deps.clock();
    const { id: clientId, ...report } = body;
    const id = clientId === undefined ? deps.newId() : userMid(reporter, clientId);
    const outcome = await deps.reports.file({ ...report, id, reporter, at }, deps.maxReportsPerDay);
    if ('retryAt' in outcome) {
      const retryAfterSeconds = Math.max(1, Math.ceil((outcome.retryAt - at) / 1000));
      throw new ParleyError(
        'rate_limited',
        `at most ${deps.maxReportsPerDay} reports a day; retry in ${retryAfterSeconds} s`,
        { retryAfterSeconds },
      );
    }
    if (outcome.repeated) return reply.code(201).send({ id: outcome.filed.id, at: outcome.filed.at });
    filed.inc({ reason: body.reason });
    // Ids only: the comment and the quoted messages are for moderators, not for the logs.
    deps.logger.info(
      { report: outcome.filed.id, reporter, user: body.user, reason: body.reason },
      'user reported',
    );
    const receipt: ReportReceipt = { id: outcome.filed.id, at: outcome.filed.at };
    return reply.code(201).send(receipt);
  });

  app.get(
    '/internal/reports',
    { schema: { querystring: ReportListQuery, response: { 200: ReportList } } },
    async (request): Promise<ReportList> => {
      const query = request.query;
      const limit = query.limit ?? 100;
      const { reports, more } = await deps.reports.list(query.after ?? 0, limit);
      return more ? { reports, next: reports.at(-1)!.position } : { reports };
    },
  );
}
