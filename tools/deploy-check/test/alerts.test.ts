/**
 * The PrometheusRule of deploy/k8s/components/alerts stays true to the code and the docs: every
 * expr parses as PromQL (Prometheus's own Lezer grammar), every `parley_*` metric and label it uses
 * is exported by the fleet (started in this process, scraped on each service's /metrics) with the
 * type its range functions want (rate() a counter, delta() a gauge), so is every one the docs and
 * the rules' annotations name, every alert is documented with a runbook link that exists, every
 * "Alert when" of docs/operations.md's "What to watch" table has a rule, and thresholds copied
 * from settings match the prod overlay.
 * The rules are read from the component's YAML directly; only the overlay checks need kubectl.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parse } from 'yaml';
import { dlqTopic, TOPICS } from '@parley/contracts';
import { DEFAULT_MAX_PENDING_PUBLISH_BYTES, issueToken } from '@parley/service-kit';
import { waitFor, WsTestClient } from '@parley/test-kit';
import { startFleet, type Fleet } from '../../../apps/launcher/src/fleet';
import { dashboardQueries } from '../src/dashboard';
import { fleet as deployableApps, ROOT } from '../src/fleet';
import { rangeFunctions, references, syntaxErrors } from '../src/promql';
import {
  appContainer,
  containerEnv,
  kubectlMissing,
  Manifests,
  overlayDir,
  plainEnv,
  render,
  renderWithComponents,
} from '../src/manifests';

/* eslint-disable @typescript-eslint/no-explicit-any */

const COMPONENT = path.join(ROOT, 'deploy/k8s/components/alerts');
const DOC = readFileSync(path.join(ROOT, 'docs/operations.md'), 'utf8');

interface Rule {
  alert: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

function componentObjects(): any[] {
  const kustomization = parse(readFileSync(path.join(COMPONENT, 'kustomization.yaml'), 'utf8'));
  expect(kustomization).toMatchObject({ apiVersion: 'kustomize.config.k8s.io/v1alpha1', kind: 'Component' });
  return (kustomization.resources as string[]).map((file) =>
    parse(readFileSync(path.join(COMPONENT, file), 'utf8')),
  );
}
const RULE_OBJECT = componentObjects().find((o) => o.kind === 'PrometheusRule');
const RULES: Rule[] = (RULE_OBJECT?.spec?.groups ?? []).flatMap((g: any) => g.rules ?? []);
/** Every query Parley ships: the rules', and the Grafana dashboard's (deploy/k8s/components/dashboards). */
const SHIPPED = [
  ...RULES.map((r) => ({ name: r.alert, expr: r.expr })),
  ...dashboardQueries().map((q) => ({ name: `dashboard: ${q.panel}`, expr: q.expr })),
];

/**
 * Labels Prometheus adds to every scraped series: the pod's address, and its namespace and pod by
 * relabelling (a PodMonitor's, and the common annotation-discovery configs').
 */
const TARGET_LABELS = new Set(['namespace', 'instance', 'pod']);
/** The registry's default label on every app metric (libs/service-kit createMetricsRegistry; checked below). */
const DEFAULT_LABELS = new Set(['service']);

/** Metrics from outside the fleet the rules use, with the type and labels those exporters give them. */
const EXTERNAL: Record<string, { from: string; type: string; labels: string[] }> = {
  kafka_consumergroup_lag: {
    from: "Strimzi's Kafka Exporter",
    type: 'gauge',
    labels: ['consumergroup', 'topic', 'partition'],
  },
  kube_pod_container_status_restarts_total: {
    from: 'kube-state-metrics',
    type: 'counter',
    labels: ['namespace', 'pod', 'uid', 'container'],
  },
  kube_deployment_status_replicas_unavailable: {
    from: 'kube-state-metrics',
    type: 'gauge',
    labels: ['namespace', 'deployment'],
  },
};

/**
 * Range functions that mean something on one type only: a rate() of a gauge, or a delta() of a
 * counter (which resets at every restart), gives numbers a threshold cannot be set on.
 */
const FUNCTIONS_OF_TYPE: Record<string, string[]> = {
  counter: ['rate', 'irate', 'increase', 'resets'],
  gauge: ['delta', 'idelta', 'deriv', 'predict_linear'],
};

/**
 * Where operators read metric names beside the rules' exprs and the dashboard's queries: the docs,
 * the rules' annotations and the dashboard file (its namespace variable's query).
 */
const MENTIONING = [
  'docs/operations.md',
  'docs/architecture.md',
  'README.md',
  'deploy/k8s/components/alerts/prometheus-rule.yaml',
  'deploy/k8s/components/dashboards/parley.json',
];

/**
 * The `parley_*` names a text mentions (`*` a wildcard, as in `parley_nodejs_*`), each with the
 * label names of a `{...}` right after it: `{topic,group}` or `{stage="connect",code="..."}`.
 */
function mentionedMetrics(text: string): Array<{ name: string; labels: string[] }> {
  return [...text.matchAll(/\bparley_[a-z0-9_*]+(?:\{([^}]*)\})?/g)].map((m) => ({
    name: m[0].replace(/\{.*$/, ''),
    labels: (m[1] ?? '')
      .split(',')
      .map((part) => /^\s*([a-zA-Z_][a-zA-Z0-9_]*)/.exec(part)?.[1])
      .filter((label): label is string => label !== undefined),
  }));
}

/**
 * Labels of counters the traffic below does not increment (a labeled prom-client counter prints no
 * label names until its first increment): each is declared next to a sibling the traffic does show.
 */
const LABELS_NOT_SEEN_IN_TRAFFIC: Record<string, { labels: string[]; why: string }> = {
  parley_kafka_dead_lettered_total: {
    labels: ['topic', 'group'],
    why: 'no record is parked; created with parley_kafka_consumed_total (libs/kafka createCounters)',
  },
  parley_kafka_retries_total: {
    labels: ['topic', 'group'],
    why: 'no handler fails; created with parley_kafka_consumed_total (libs/kafka createCounters)',
  },
  parley_session_push_failures_total: {
    labels: ['reason'],
    why: 'every gateway answers; the reason label is the one documented in docs/operations.md',
  },
  parley_session_commits_held_total: {
    labels: ['because'],
    why: 'the fleet runs without REDIS_WAIT_REPLICAS: no commit is held back',
  },
  parley_push_notifications_total: {
    labels: ['result'],
    why: 'push-ms may not have coalesced its first notification when scraped',
  },
};

describe('the PrometheusRule parley-alerts', () => {
  it('is a monitoring.coreos.com/v1 PrometheusRule without a namespace of its own (the overlay sets it)', () => {
    expect(RULE_OBJECT).toMatchObject({
      apiVersion: 'monitoring.coreos.com/v1',
      kind: 'PrometheusRule',
      metadata: { name: 'parley-alerts' },
    });
    expect(RULE_OBJECT.metadata.namespace).toBeUndefined();
    expect(RULES.length).toBeGreaterThan(0);
  });

  it('has unique ParleyXxx alert names, each with a severity, summary, description and runbook link', () => {
    const names = RULES.map((r) => r.alert);
    expect(new Set(names).size).toBe(names.length);
    for (const rule of RULES) {
      expect([rule.alert, rule.alert]).toEqual([rule.alert, expect.stringMatching(/^Parley[A-Z][A-Za-z]+$/)]);
      expect([rule.alert, rule.labels?.severity]).toEqual([
        rule.alert,
        expect.stringMatching(/^(critical|warning)$/),
      ]);
      expect(rule.annotations?.summary?.trim()).toBeTruthy();
      expect(rule.annotations?.description?.trim()).toBeTruthy();
      expect([rule.alert, rule.annotations?.runbook_url]).toEqual([
        rule.alert,
        expect.stringMatching(/^docs\/operations\.md#[a-z0-9-]+$/),
      ]);
      if (rule.for !== undefined)
        expect([rule.alert, rule.for]).toEqual([rule.alert, expect.stringMatching(/^\d+[smh]$/)]);
    }
  });

  it('links runbooks to anchors that exist in docs/operations.md', () => {
    const anchors = docAnchors(DOC);
    for (const rule of RULES) {
      const anchor = rule.annotations!.runbook_url!.split('#')[1];
      expect([rule.alert, anchors.has(anchor)]).toEqual([rule.alert, true]);
    }
  });

  it('parses every expr as PromQL (and the check does catch bad ones)', () => {
    expect(syntaxErrors('sum by (topic) rate(x[5m])')).not.toEqual([]);
    expect(syntaxErrors('rat(x[5m]) > 0')).not.toEqual([]);
    expect(syntaxErrors('sum(rate(x[5m])) >')).not.toEqual([]);
    for (const query of SHIPPED) expect([query.name, syntaxErrors(query.expr)]).toEqual([query.name, []]);
  });

  it('leaves the DLQ topics out of "published and nobody consumes": nothing consumes a DLQ by design', () => {
    const rule = RULES.find((r) => r.alert === 'ParleyPublishedNotConsumed')!;
    const published = /parley_kafka_published_total\{([^}]*)\}/.exec(rule.expr)?.[1];
    expect(published).toBe('topic!~".*[.]dlq"');
    expect(new RegExp(`^(?:.*[.]dlq)$`).test(dlqTopic(TOPICS.delivery.name))).toBe(true);
  });

  it('uses only Parley metrics and the known exporters, with labels those exporters give (rules and dashboard)', () => {
    for (const query of SHIPPED)
      for (const [metric, labels] of references(query.expr)) {
        if (metric.startsWith('parley_')) continue; // checked against the fleet below
        expect([query.name, metric, metric in EXTERNAL]).toEqual([query.name, metric, true]);
        for (const label of labels)
          if (!TARGET_LABELS.has(label))
            expect([query.name, metric, label, EXTERNAL[metric].labels.includes(label)]).toEqual([
              query.name,
              metric,
              label,
              true,
            ]);
      }
  });

  it('is the table under "### Alerts" in docs/operations.md, alert by alert, with the same severity', () => {
    const documented = alertsTable(DOC);
    expect([...documented.keys()].sort()).toEqual(RULES.map((r) => r.alert).sort());
    for (const rule of RULES)
      expect([rule.alert, documented.get(rule.alert)]).toEqual([rule.alert, rule.labels!.severity]);
  });

  it('has a rule for every "Alert when" of the "What to watch" table', () => {
    const referenced = RULES.flatMap((r) => [...references(r.expr).keys()]);
    const rows = watchTable(DOC);
    expect(rows.length).toBeGreaterThan(20);
    for (const row of rows) {
      if (row.alertWhen.startsWith('—')) continue; // "—", or "— (info: ...)": no alert meant
      const covered = referenced.some((name) => row.metrics.some((pattern) => pattern.test(name)));
      expect([row.source, covered]).toEqual([row.source, true]);
    }
  });
});

/** Anchors of the doc: GitHub's heading slugs and explicit `<a id="...">`. */
function docAnchors(doc: string): Set<string> {
  const anchors = new Set<string>();
  for (const line of doc.split('\n')) {
    const heading = /^#{1,6}\s+(.*)$/.exec(line);
    if (heading)
      anchors.add(
        heading[1]
          .trim()
          .toLowerCase()
          .replace(/[^\p{L}\p{N}\s_-]/gu, '')
          .replace(/\s/g, '-'),
      );
    for (const m of line.matchAll(/<a id="([^"]+)"><\/a>/g)) anchors.add(m[1]);
  }
  return anchors;
}

function section(doc: string, heading: string): string {
  const start = doc.indexOf(`\n${heading}\n`);
  if (start < 0) throw new Error(`docs/operations.md has no "${heading}"`);
  const rest = doc.slice(start + heading.length + 2);
  const end = rest.search(/\n#{1,3} /);
  return end < 0 ? rest : rest.slice(0, end);
}

/** Table cells, split on `|` outside backticks. */
function cells(line: string): string[] {
  const out: string[] = [];
  let cell = '';
  let code = false;
  for (const ch of line.trim().replace(/^\||\|$/g, '')) {
    if (ch === '`') code = !code;
    if (ch === '|' && !code) {
      out.push(cell.trim());
      cell = '';
    } else cell += ch;
  }
  out.push(cell.trim());
  return out;
}

function tableRows(text: string): string[][] {
  return text
    .split('\n')
    .filter((l) => l.startsWith('|') && !/^\|[-| ]+\|$/.test(l))
    .slice(1)
    .map(cells);
}

function alertsTable(doc: string): Map<string, string> {
  return new Map(tableRows(section(doc, '### Alerts')).map((row) => [row[0], row[1]]));
}

/** Rows of "What to watch": the metric names of the first column as patterns, and "Alert when". */
function watchTable(doc: string): Array<{ source: string; metrics: RegExp[]; alertWhen: string }> {
  const table = section(doc, '## What to watch').split('\n### ')[0];
  return tableRows(table).map((row) => {
    const names = [...row[0].matchAll(/`([^`]+)`/g)].map((m) => m[1].replace(/\{.*$/, ''));
    const first = names[0];
    const family = first.replace(/_[a-z]+_total$/, ''); // `_acked_total` after parley_persistence_stored_total
    const metrics = names
      .flatMap((n) => n.split(/,\s*/))
      .map((n) => (n.startsWith('_') ? family + n : n))
      .map((n) => new RegExp(`^${n.replace(/\*/g, '.*')}(_bucket|_sum|_count)?$`));
    return { source: row[0], metrics, alertWhen: row[2] };
  });
}

// ---- against the running fleet ----

interface Scraped {
  /** Metric family names from `# TYPE` lines, with their type. */
  types: Map<string, string>;
  /** Label names seen on samples, per sample name. */
  labels: Map<string, Set<string>>;
}

function parseExposition(text: string, into: Scraped): void {
  for (const line of text.split('\n')) {
    const type = /^# TYPE (\S+) (\S+)/.exec(line);
    if (type) {
      into.types.set(type[1], type[2]);
      continue;
    }
    if (!line || line.startsWith('#')) continue;
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s/.exec(line);
    if (!sample) continue;
    const labels = into.labels.get(sample[1]) ?? new Set<string>();
    for (const m of (sample[3] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="/g)) labels.add(m[1]);
    into.labels.set(sample[1], labels);
  }
}

function exported(scraped: Scraped, name: string): boolean {
  return typeOf(scraped, name) !== undefined;
}

/** A family's type; a histogram's or summary's `_bucket`, `_sum` and `_count` are counters. */
function typeOf(scraped: Scraped, name: string): string | undefined {
  if (scraped.types.has(name)) return scraped.types.get(name);
  const suffix = /^(.*)_(bucket|sum|count)$/.exec(name);
  return suffix && ['histogram', 'summary'].includes(scraped.types.get(suffix[1]) ?? '')
    ? 'counter'
    : undefined;
}

/** The label names a family is known to carry: on its samples (a histogram's too), or declared above. */
function knownLabels(scraped: Scraped, family: string): Set<string> {
  return new Set([
    ...TARGET_LABELS,
    ...DEFAULT_LABELS,
    ...(LABELS_NOT_SEEN_IN_TRAFFIC[family]?.labels ?? []),
    ...['', '_bucket', '_sum', '_count'].flatMap((suffix) => [
      ...(scraped.labels.get(family + suffix) ?? []),
    ]),
  ]);
}

describe('parley-alerts against the fleet', () => {
  let running: Fleet;
  const scraped: Scraped = { types: new Map(), labels: new Map() };
  const clients: WsTestClient[] = [];

  const scrape = async () => {
    scraped.types.clear();
    scraped.labels.clear();
    const { broker: _broker, wsGateway: _public, ...servicePorts } = running.ports;
    for (const port of Object.values(servicePorts)) {
      const response = await fetch(`http://127.0.0.1:${port}/metrics`);
      expect([port, response.status]).toEqual([port, 200]);
      parseExposition(await response.text(), scraped);
    }
  };

  beforeAll(async () => {
    running = await startFleet({ ports: 'random', logLevel: 'warn', fastConsumers: true, ackTimeoutMs: 400 });
    const connect = async (user: string) => {
      const client = await WsTestClient.connect(
        `${running.urls.ws}?token=${await issueToken(running.jwtSecret, user)}`,
      );
      clients.push(client);
      return client;
    };
    // Traffic that makes the labeled series appear: a message delivered and acked, a refused
    // frame, POST /v1/send with a good and a bad frame, a message to a user who is offline.
    const alice = await connect('alerts-alice');
    const bob = await connect('alerts-bob');
    alice.send({ type: 'message', id: 'a1', to: 'alerts-bob', body: 'hi' });
    const message = await bob.next((f) => f.type === 'message', 10_000);
    bob.send({ type: 'ack', mids: [message.mid] });
    alice.send({ type: 'no-such-frame' });
    await alice.next((f) => f.type === 'error', 10_000);
    alice.send({ type: 'message', id: 'a2', to: 'alerts-carol', body: 'later' });
    await fetch(`${running.urls.rest}/v1/send`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${await issueToken(running.jwtSecret, 'alerts-alice')}`,
        'content-type': 'application/json',
      },
      body: JSON.stringify([
        { type: 'message', id: 'r1', to: 'alerts-bob', body: 'via rest' },
        { type: 'no-such-frame' },
      ]),
    });
    await waitFor(
      async () => {
        await scrape();
        return (
          [
            'parley_session_acked_total',
            'parley_persistence_stored_total',
            'parley_ws_delivered_total',
          ].every((name) => scraped.labels.has(name)) && scraped.labels.has('parley_kafka_consumed_total')
        );
      },
      20_000,
      'the traffic to show in the metrics',
    );
    await new Promise((resolve) => setTimeout(resolve, 1000)); // the offline message's push
    await scrape();
  }, 90_000);

  afterAll(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await running?.stop();
  }, 30_000);

  it('exports every parley_* metric the rules and the dashboard use', () => {
    expect(scraped.types.size).toBeGreaterThan(40);
    for (const query of SHIPPED)
      for (const metric of references(query.expr).keys())
        if (metric.startsWith('parley_'))
          expect([query.name, metric, exported(scraped, metric)]).toEqual([query.name, metric, true]);
  });

  it('exports the labels the rules and the dashboard match on or group by', () => {
    for (const query of SHIPPED)
      for (const [metric, labels] of references(query.expr)) {
        if (!metric.startsWith('parley_')) continue;
        const seen = scraped.labels.get(metric);
        for (const label of labels) {
          if (TARGET_LABELS.has(label)) continue;
          if (seen?.size) {
            expect([query.name, metric, label, seen.has(label)]).toEqual([query.name, metric, label, true]);
          } else if (!DEFAULT_LABELS.has(label)) {
            // No sample yet: the label must be one this test knows the code declares.
            expect([
              query.name,
              metric,
              label,
              LABELS_NOT_SEEN_IN_TRAFFIC[metric]?.labels.includes(label),
            ]).toEqual([query.name, metric, label, true]);
          }
        }
      }
    // Every app metric carries `service`.
    for (const [name, labels] of scraped.labels)
      if (name.startsWith('parley_')) expect([name, labels.has('service')]).toEqual([name, true]);
  });

  it('passes counters only to rate() and increase(), gauges only to delta() (rules and dashboard)', () => {
    expect(rangeFunctions('sum(rate(x[5m] offset 1h)) / delta(y[5m])')).toEqual([
      { metric: 'x', fn: 'rate' },
      { metric: 'y', fn: 'delta' },
    ]);
    for (const query of SHIPPED)
      for (const { metric, fn } of rangeFunctions(query.expr)) {
        const type = metric.startsWith('parley_') ? typeOf(scraped, metric) : EXTERNAL[metric]?.type;
        for (const [wanted, functions] of Object.entries(FUNCTIONS_OF_TYPE))
          if (functions.includes(fn))
            expect([query.name, fn, metric, type]).toEqual([query.name, fn, metric, wanted]);
      }
  });

  it("exports every parley_* metric and label the docs, the rules' annotations and the dashboard file name", () => {
    expect(mentionedMetrics('`parley_kafka_*{group}`, parley_x_total{stage="connect",code="y"}')).toEqual([
      { name: 'parley_kafka_*', labels: ['group'] },
      { name: 'parley_x_total', labels: ['stage', 'code'] },
    ]);
    const families = [...scraped.types.keys()];
    let checked = 0;
    for (const file of MENTIONING) {
      const mentioned = mentionedMetrics(readFileSync(path.join(ROOT, file), 'utf8'));
      checked += mentioned.length;
      for (const { name, labels } of mentioned) {
        const pattern = new RegExp(`^${name.replace(/\*/g, '.*')}$`);
        const matching = name.includes('*') ? families.filter((f) => pattern.test(f)) : [name];
        expect([file, name, matching.length > 0 && matching.every((m) => exported(scraped, m))]).toEqual([
          file,
          name,
          true,
        ]);
        for (const label of labels)
          expect([file, name, label, matching.some((m) => knownLabels(scraped, m).has(label))]).toEqual([
            file,
            name,
            label,
            true,
          ]);
      }
    }
    expect(checked).toBeGreaterThan(100);
  });

  it('matches /v1/* routes the HTTP histogram really records', () => {
    const rule = RULES.find((r) => r.alert === 'ParleyHttpLatencyHigh')!;
    expect(rule.expr).toContain('route=~"/v1/.*"');
    expect(scraped.labels.get('parley_http_request_duration_seconds_bucket')).toEqual(
      new Set(['service', 'method', 'route', 'status', 'le']),
    );
  });
});

// ---- against the rendered overlays ----

const missing = kubectlMissing();
if (missing) console.warn(`deploy-check: skipping the alerts' overlay checks: ${missing}`);
const describeK8s = missing ? describe.skip : describe;

describeK8s('parley-alerts in the prod overlay', () => {
  let prod: Manifests;
  let withAlerts: Manifests;
  let onItsOwn: Manifests;
  beforeAll(() => {
    prod = new Manifests(render(overlayDir('prod')));
    // docs/operations.md's two ways: the prod overlay with `components:` added (a copy of it,
    // beside it), and a small overlay of its own that sets the namespace and lists the component.
    withAlerts = new Manifests(renderWithComponents('prod', ['alerts']));
    const alone = mkdtempSync(path.join(os.tmpdir(), 'parley-alerts-'));
    try {
      writeFileSync(
        path.join(alone, 'kustomization.yaml'),
        [
          'apiVersion: kustomize.config.k8s.io/v1beta1',
          'kind: Kustomization',
          'namespace: parley',
          'components:',
          `  - ${path.relative(alone, COMPONENT)}`,
          '',
        ].join('\n'),
      );
      onItsOwn = new Manifests(render(alone));
    } finally {
      rmSync(alone, { recursive: true, force: true });
    }
  });

  const rule = (name: string) => RULES.find((r) => r.alert === name)!;
  const env = (app: string) =>
    plainEnv(
      containerEnv(prod, appContainer(prod.deploymentFor(app)!), {
        'metadata.name': 'pod',
        'status.podIP': '10.0.0.1',
        'metadata.namespace': 'parley',
        'spec.nodeName': 'node',
      }),
    );

  it('is not in the prod overlay by default, and renders into its namespace when enabled', () => {
    expect(prod.all('PrometheusRule')).toEqual([]);
    const rendered = withAlerts.find('PrometheusRule', 'parley-alerts');
    expect(rendered?.metadata).toMatchObject({ name: 'parley-alerts', namespace: 'parley' });
    expect(withAlerts.objects.length).toBe(prod.objects.length + 1);
    expect(onItsOwn.objects.map((o) => [o.kind, o.metadata.name, (o.metadata as any).namespace])).toEqual([
      ['PrometheusRule', 'parley-alerts', 'parley'],
    ]);
  });

  it('runs the Kafka Exporter that kafka_consumergroup_lag comes from', () => {
    expect(prod.find('Kafka', 'parley')?.spec?.kafkaExporter).toBeDefined();
  });

  it('names every Deployment of the fleet in the kube-state-metrics alerts', () => {
    const deployments = deployableApps()
      .map((app) => prod.deploymentFor(app.name)!.metadata.name)
      .sort();
    for (const name of ['ParleyPodRestarting', 'ParleyPodsUnavailable']) {
      const alternatives = /(?:pod|deployment)=~"\(?([a-z|-]+)\)?/
        .exec(rule(name).expr)![1]
        .split('|')
        .sort();
      expect([name, alternatives]).toEqual([name, deployments]);
    }
  });

  it("takes MAX_CONNECTIONS and MAX_PENDING_PUBLISH_BYTES from the gateways' settings", () => {
    const maxConnections = Number(env('ws-gateway').MAX_CONNECTIONS);
    expect(rule('ParleyWsConnectionsNearLimit').expr).toContain(`> 0.9 * ${maxConnections}`);
    for (const app of ['ws-gateway', 'rest-gateway']) {
      const limit = Number(env(app).MAX_PENDING_PUBLISH_BYTES ?? DEFAULT_MAX_PENDING_PUBLISH_BYTES);
      const prefix = app === 'ws-gateway' ? 'parley_ws' : 'parley_rest';
      expect(rule('ParleyPendingPublishNearLimit').expr).toContain(
        `(${prefix}_pending_publish_bytes) > 0.8 * ${limit}`,
      );
    }
  });

  it("takes each app's heap limit from its Deployment's --max-old-space-size", () => {
    const expr = rule('ParleyHeapNearLimit').expr;
    const explicit = new Map(
      [...expr.matchAll(/\{service="([a-z-]+)"\}\) > 0\.9 \* (\d+) \* 1048576/g)].map((m) => [
        m[1],
        Number(m[2]),
      ]),
    );
    const rest = /\{service!~"([a-z|-]+)"\}\) > 0\.9 \* (\d+) \* 1048576/.exec(expr)!;
    expect(rest[1].split('|').sort()).toEqual([...explicit.keys()].sort());
    for (const app of deployableApps()) {
      const heap = Number(/--max-old-space-size=(\d+)/.exec(env(app.name).NODE_OPTIONS ?? '')?.[1]);
      expect([app.name, explicit.get(app.name) ?? Number(rest[2])]).toEqual([app.name, heap]);
    }
  });
});
