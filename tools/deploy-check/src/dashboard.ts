/**
 * The Grafana dashboard of the fleet, written from the panel list below:
 *   npx tsx tools/deploy-check/src/dashboard.ts --write
 * deploy/k8s/components/dashboards ships the file as a ConfigMap for Grafana's dashboard sidecar;
 * a test fails when the file and this list part, and checks every query against the metrics the
 * fleet exports (tools/deploy-check/test/alerts.test.ts).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { ROOT } from './fleet';

export const DASHBOARD_FILE = path.join(ROOT, 'deploy/k8s/components/dashboards/parley.json');

/** Every selector of a panel's queries takes this matcher: the dashboard's namespace variable. */
const NS = 'namespace=~"$namespace"';

interface Panel {
  title: string;
  description: string;
  unit: string;
  /** PromQL with `{NS}` where the namespace matcher goes; legend in Grafana's `{{label}}` form. */
  queries: Array<{ expr: string; legend: string }>;
}

interface Row {
  title: string;
  panels: Panel[];
}

const rate = (metric: string, by: string, matchers = '') =>
  `sum by (${by}) (rate(${metric}{${NS}${matchers}}[5m]))`;

const quantile = (q: number, histogram: string, by: string, matchers = '') =>
  `histogram_quantile(${q}, sum by (le, ${by}) (rate(${histogram}_bucket{${NS}${matchers}}[5m])))`;

export const ROWS: Row[] = [
  {
    title: 'Traffic',
    panels: [
      {
        title: 'Frames from clients',
        description: 'Client frames taken by the gateways, by type: WebSocket and POST /v1/send',
        unit: 'reqps',
        queries: [
          { expr: rate('parley_ws_frames_total', 'type'), legend: 'ws {{type}}' },
          { expr: rate('parley_rest_frames_total', 'type'), legend: 'rest {{type}}' },
        ],
      },
      {
        title: 'Deliverables pushed and acked',
        description:
          'session-ms: each push attempt, acks that completed one, and deliverables handed to storage',
        unit: 'reqps',
        queries: [
          { expr: rate('parley_session_pushed_total', 'service'), legend: 'pushed' },
          { expr: rate('parley_session_acked_total', 'service'), legend: 'acked' },
          { expr: rate('parley_session_offline_total', 'service'), legend: 'to storage' },
        ],
      },
      {
        title: 'Open WebSockets',
        description: 'Per ws-gateway pod',
        unit: 'short',
        queries: [{ expr: `sum by (pod) (parley_ws_connections{${NS}})`, legend: '{{pod}}' }],
      },
    ],
  },
  {
    title: 'Latency',
    panels: [
      {
        title: 'First push of a message',
        description: 'From the gateway that took it to the recipient’s gateway writing it (p50, p99)',
        unit: 's',
        queries: [
          {
            expr: quantile(0.5, 'parley_session_first_push_latency_seconds', 'chat'),
            legend: 'p50 {{chat}}',
          },
          {
            expr: quantile(0.99, 'parley_session_first_push_latency_seconds', 'chat'),
            legend: 'p99 {{chat}}',
          },
        ],
      },
      {
        title: 'HTTP p99 by route',
        description: 'The public REST API and the internal APIs',
        unit: 's',
        queries: [
          {
            expr: quantile(0.99, 'parley_http_request_duration_seconds', 'service, route'),
            legend: '{{service}} {{route}}',
          },
        ],
      },
      {
        title: 'Ack read lag',
        description: 'How far behind the slowest session-ms replica reads acks; retries wait for it',
        unit: 's',
        queries: [{ expr: `max(parley_session_ack_read_lag_seconds{${NS}})`, legend: 'slowest replica' }],
      },
    ],
  },
  {
    title: 'Kafka',
    panels: [
      {
        title: 'Events published and consumed',
        description: 'By topic (a packed Kafka record holds many events)',
        unit: 'reqps',
        queries: [
          { expr: rate('parley_kafka_published_total', 'topic'), legend: 'published {{topic}}' },
          { expr: rate('parley_kafka_consumed_total', 'topic'), legend: 'consumed {{topic}}' },
        ],
      },
      {
        title: 'Consumer lag',
        description: "Records behind, by consumer group (Strimzi's Kafka Exporter)",
        unit: 'short',
        queries: [
          {
            expr: `sum by (consumergroup) (kafka_consumergroup_lag{${NS}, topic=~"parley\\\\..*"})`,
            legend: '{{consumergroup}}',
          },
        ],
      },
      {
        title: 'Parked and retried',
        description: 'Records parked on a DLQ (runbook: DLQ growing) and handler retries',
        unit: 'reqps',
        queries: [
          { expr: rate('parley_kafka_dead_lettered_total', 'topic'), legend: 'parked {{topic}}' },
          { expr: rate('parley_kafka_retries_total', 'topic'), legend: 'retried {{topic}}' },
        ],
      },
    ],
  },
  {
    title: 'Refusals and failures',
    panels: [
      {
        title: 'WebSocket refusals',
        description: 'Connects and frames refused, by stage and error code',
        unit: 'reqps',
        queries: [{ expr: rate('parley_ws_refused_total', 'stage, code'), legend: '{{stage}} {{code}}' }],
      },
      {
        title: 'Pushes to gateways that failed',
        description: 'session-ms calls to a ws-gateway, by reason',
        unit: 'reqps',
        queries: [{ expr: rate('parley_session_push_failures_total', 'reason'), legend: '{{reason}}' }],
      },
      {
        title: 'Push notifications',
        description: 'push-ms, by result (sent, failed, no_devices, acked, dropped, interrupted)',
        unit: 'reqps',
        queries: [{ expr: rate('parley_push_notifications_total', 'result'), legend: '{{result}}' }],
      },
    ],
  },
  {
    title: 'Processes',
    panels: [
      {
        title: 'Event-loop lag p99',
        description: 'Per service, the worst pod',
        unit: 's',
        queries: [
          {
            expr: `max by (service) (parley_nodejs_eventloop_lag_p99_seconds{${NS}})`,
            legend: '{{service}}',
          },
        ],
      },
      {
        title: 'Heap used',
        description: 'Per service, the largest pod',
        unit: 'bytes',
        queries: [
          { expr: `max by (service) (parley_nodejs_heap_size_used_bytes{${NS}})`, legend: '{{service}}' },
        ],
      },
      {
        title: 'Frames waiting for Kafka',
        description: 'Memory held by client frames on the gateways until Kafka has them',
        unit: 'bytes',
        queries: [
          { expr: `sum by (pod) (parley_ws_pending_publish_bytes{${NS}})`, legend: 'ws {{pod}}' },
          { expr: `sum by (pod) (parley_rest_pending_publish_bytes{${NS}})`, legend: 'rest {{pod}}' },
        ],
      },
    ],
  },
];

/** Every query of the dashboard, named by its panel. */
export function dashboardQueries(): Array<{ panel: string; expr: string }> {
  return ROWS.flatMap((row) =>
    row.panels.flatMap((panel) => panel.queries.map((q) => ({ panel: panel.title, expr: q.expr }))),
  );
}

const PANEL_WIDTH = 8;
const PANEL_HEIGHT = 8;

/** The dashboard as Grafana imports it (schema 39): a row per entry of ROWS, three panels across. */
export function dashboard(): object {
  const datasource = { type: 'prometheus', uid: '${datasource}' };
  const panels: object[] = [];
  let y = 0;
  let id = 0;
  for (const row of ROWS) {
    panels.push({
      id: ++id,
      type: 'row',
      title: row.title,
      collapsed: false,
      gridPos: { x: 0, y, w: 24, h: 1 },
    });
    y += 1;
    row.panels.forEach((panel, i) =>
      panels.push({
        id: ++id,
        type: 'timeseries',
        title: panel.title,
        description: panel.description,
        datasource,
        gridPos: {
          x: (i % 3) * PANEL_WIDTH,
          y: y + Math.floor(i / 3) * PANEL_HEIGHT,
          w: PANEL_WIDTH,
          h: PANEL_HEIGHT,
        },
        fieldConfig: { defaults: { unit: panel.unit }, overrides: [] },
        options: { legend: { displayMode: 'list', placement: 'bottom' }, tooltip: { mode: 'multi' } },
        targets: panel.queries.map((q, k) => ({
          datasource,
          expr: q.expr,
          legendFormat: q.legend,
          refId: String.fromCharCode(65 + k),
        })),
      }),
    );
    y += Math.ceil(row.panels.length / 3) * PANEL_HEIGHT;
  }
  return {
    uid: 'parley-fleet',
    title: 'Parley fleet',
    description: 'The fleet at a glance: docs/operations.md, "What to watch"',
    tags: ['parley'],
    schemaVersion: 39,
    version: 1,
    editable: true,
    time: { from: 'now-3h', to: 'now' },
    refresh: '30s',
    templating: {
      list: [
        { name: 'datasource', label: 'Data source', type: 'datasource', query: 'prometheus' },
        {
          name: 'namespace',
          label: 'Namespace',
          type: 'query',
          datasource,
          query: 'label_values(parley_ws_connections, namespace)',
          refresh: 2,
          includeAll: false,
        },
      ],
    },
    panels,
  };
}

export function dashboardJson(): string {
  return `${JSON.stringify(dashboard(), null, 2)}\n`;
}

export function committedDashboard(): string {
  return readFileSync(DASHBOARD_FILE, 'utf8');
}

if (require.main === module) {
  if (process.argv.includes('--write')) writeFileSync(DASHBOARD_FILE, dashboardJson());
  else process.stdout.write(dashboardJson());
}
