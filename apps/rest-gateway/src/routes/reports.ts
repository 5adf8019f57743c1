import type { FastifyInstance } from 'fastify';
import {
  MAX_REPORT_COMMENT_LENGTH,
  MAX_REPORTED_MESSAGES,
  MAX_REPORTS_PER_DAY,
  REPORT_REASONS,
  ReportBody,
  ReportReceipt,
} from '@parley/contracts';
import { bodyErrors, s, secured } from '../schemas';
import { Upstreams } from '../upstream';
import { forwarder } from './forward';

/** `POST /v1/reports` (App Store guideline 1.2: a way to report objectionable content), kept by group-ms. */
export function registerReportRoutes(api: FastifyInstance, upstreams: Upstreams): void {
  const forward = forwarder(upstreams);
  api.post(
    '/v1/reports',
    {
      schema: {
        tags: ['reports'],
        operationId: 'reportUser',
        security: secured,
        description: `Report a user to the operator's moderators: \`reason\` one of ${REPORT_REASONS.join(', ')}; an optional \`comment\` (up to ${MAX_REPORT_COMMENT_LENGTH} characters) and up to ${MAX_REPORTED_MESSAGES} of their \`messages\` as you received them (\`mid\`, \`body\`, \`sentAt\`): the server keeps no delivered message, so these are the evidence. The reported user is not told. Answers 201 with the report's \`id\`; give an \`id\` of yours so that sending it again (after a timeout or a 503) files it once. Reporting does not block: \`PUT /v1/blocks/<user>\` does. 400 \`invalid_request\` for yourself; 429 \`rate_limited\` past ${MAX_REPORTS_PER_DAY} reports in 24 hours (the default; the operator may set another) (\`Retry-After\` says when the next is taken)`,
        body: s(ReportBody),
        response: { 201: s(ReportReceipt), ...bodyErrors },
      },
    },
    forward('group-ms', 'POST', () => '/internal/reports', true),
  );
}
