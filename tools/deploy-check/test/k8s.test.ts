/**
 * Renders deploy/k8s/overlays/{dev,prod} with `kubectl kustomize` and checks them against the code:
 * the apps and their config schemas (tools/deploy-check/src/fleet.ts) and the Kafka topics
 * (libs/contracts TOPICS). Skips, saying why, where kubectl is missing.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parse } from 'yaml';
import {
  AUTOSCALED,
  fleet,
  MANDATORY_SECRETS,
  ROOT,
  RUNTIME_VARS,
  SECRET_VARS,
  upstreamOf,
  validateInImage,
  type AppSpec,
} from '../src/fleet';
import { kafkaTopicsYaml, plannedTopics } from '../src/kafka-topics';
import { TOPICS } from '@parley/contracts';
import { READINESS_CHECK_TIMEOUT_MS } from '@parley/service-kit';
import {
  appContainer,
  containerEnv,
  K8sObject,
  kubectlMissing,
  Manifests,
  OVERLAYS,
  overlayDir,
  plainEnv,
  preStopSleepSeconds,
  render,
  resolvePort,
  selects,
} from '../src/manifests';

/* eslint-disable @typescript-eslint/no-explicit-any */

const missing = kubectlMissing();
if (missing) console.warn(`deploy-check: skipping the Kubernetes manifest checks: ${missing}`);
const describeK8s = missing ? describe.skip : describe;

const FIELDS = {
  'metadata.name': 'stand-in-pod-7d9f8',
  'status.podIP': '10.1.2.3',
  'metadata.namespace': 'parley',
  'spec.nodeName': 'node-1',
};
const APPS = fleet();

describe('the committed KafkaTopics', () => {
  it('are what tools/deploy-check/src/kafka-topics.ts generates from TOPICS', () => {
    const committed = readFileSync(path.join(ROOT, 'deploy/k8s/base/kafka/topics.yaml'), 'utf8');
    expect(committed).toBe(kafkaTopicsYaml());
  });
});

describeK8s.each(OVERLAYS)('overlay %s', (overlay) => {
  let m: Manifests;
  beforeAll(() => {
    m = new Manifests(render(overlayDir(overlay)));
  });

  const deployment = (app: AppSpec): K8sObject => {
    const d = m.deploymentFor(app.name);
    if (!d) throw new Error(`no Deployment runs ${app.name}`);
    return d;
  };
  const envOf = (app: AppSpec) => containerEnv(m, appContainer(deployment(app)), FIELDS);

  it('renders a namespace for everything namespaced', () => {
    const namespaces = m.all('Namespace').map((n) => n.metadata.name);
    expect(namespaces).toHaveLength(1);
    for (const o of m.objects.filter((o) => o.kind !== 'Namespace'))
      expect([o.kind, o.metadata.name, (o.metadata as any).namespace]).toEqual([
        o.kind,
        o.metadata.name,
        namespaces[0],
      ]);
  });

  describe.each(APPS.map((a) => [a.name, a] as const))('%s', (_name, app) => {
    it('has a Deployment running the fleet image with this app as its argument', () => {
      const images = new Set(APPS.map((a) => appContainer(deployment(a)).image));
      expect(images.size).toBe(1);
      const c = appContainer(deployment(app));
      expect(c.args).toEqual([app.name]);
      if (overlay === 'prod')
        expect(c.image).toMatch(/^[\w.-]+(\/[\w.-]+)+(:(?!latest$|dev$)[\w.-]+)?(@sha256:[a-f0-9]{64})?$/);
      expect(c.image).not.toMatch(/:latest$/);
    });

    it('declares its ports as the schema defaults, and sets PORT/INTERNAL_PORT to them', () => {
      const c = appContainer(deployment(app));
      const ports = (c.ports ?? []).map((p: any) => p.containerPort).sort();
      expect(ports).toEqual([app.port, app.internalPort].filter((p) => p !== undefined).sort());
      const env = plainEnv(envOf(app));
      expect(Number(env.PORT)).toBe(app.port);
      if (app.internalPort !== undefined) expect(Number(env.INTERNAL_PORT)).toBe(app.internalPort);
    });

    it('has readiness (/readyz), liveness (/healthz) and startup probes on its probe port', () => {
      const c = appContainer(deployment(app));
      expect(c.readinessProbe?.httpGet?.path).toBe('/readyz');
      expect(c.livenessProbe?.httpGet?.path).toBe('/healthz');
      expect(c.startupProbe?.httpGet?.path).toBe('/healthz');
      for (const probe of [c.readinessProbe, c.livenessProbe, c.startupProbe])
        expect(resolvePort(c, probe.httpGet.port)).toBe(app.probePort);
    });

    it('waits for /readyz longer than /readyz waits for a check, so a slow dependency is a 503 naming it', () => {
      // A probe that times out first records only a timeout; the pod goes unready either way.
      const c = appContainer(deployment(app));
      expect(c.readinessProbe.timeoutSeconds * 1000).toBeGreaterThan(READINESS_CHECK_TIMEOUT_MS);
    });

    it('listens on IPv6 addresses as well as IPv4 ones (HOST ::), where probes and POD_IP point', () => {
      // The kubelet probes the pod's IP and session-ms calls the gateway's POD_IP: in an IPv6-only
      // or IPv6-first cluster both are IPv6 addresses, which a server on 0.0.0.0 refuses.
      const env = plainEnv(envOf(app));
      expect(env.HOST ?? app.schema.properties.HOST.default).toBe('::');
    });

    it('has CPU and memory requests and a memory limit, and a heap below the limit', () => {
      const { resources, env } = appContainer(deployment(app));
      expect(resources?.requests?.cpu).toBeDefined();
      expect(resources?.requests?.memory).toBeDefined();
      expect(resources?.limits?.memory).toBeDefined();
      const limitMi = mebibytes(resources.limits.memory);
      const heap = /--max-old-space-size=(\d+)/.exec(
        env.find((e: any) => e.name === 'NODE_OPTIONS')?.value ?? '',
      );
      // Required, not checked only when present: the heap alert (prometheus-rule.yaml) is written
      // against each service's --max-old-space-size.
      expect(heap?.[0]).toMatch(/^--max-old-space-size=\d+$/);
      expect(Number(heap![1])).toBeLessThanOrEqual(limitMi * 0.8);
    });

    it('runs as non-root with a read-only root filesystem', () => {
      const d = deployment(app);
      const c = appContainer(d);
      expect(d.spec.template.spec.securityContext?.runAsNonRoot).toBe(true);
      expect(c.securityContext?.readOnlyRootFilesystem).toBe(true);
      expect(c.securityContext?.allowPrivilegeEscalation).toBe(false);
    });

    it('sets every variable its schema requires and the important optional ones', () => {
      const env = envOf(app);
      // A pod advertises http://<POD_IP>:<INTERNAL_PORT> without GATEWAY_INTERNAL_URL (see below).
      const standsIn = (v: string) => v === 'GATEWAY_INTERNAL_URL' && env.has('POD_IP');
      const missingVars = app.expected.filter((v) => !env.has(v) && !standsIn(v));
      expect(missingVars).toEqual([]);
      for (const v of app.required) expect([v, env.get(v)?.value]).not.toEqual([v, undefined]);
    });

    it('sets no variable outside its schema on the container itself (typos)', () => {
      const names: string[] = (appContainer(deployment(app)).env ?? []).map((e: any) => e.name);
      expect(
        names.filter((n) => !app.vars.includes(n) && !RUNTIME_VARS.includes(n) && n !== 'POD_IP'),
      ).toEqual([]);
    });

    it('takes every secret from a Secret (secretKeyRef), mandatory ones not optional', () => {
      const env = envOf(app);
      for (const v of SECRET_VARS.filter((s) => env.has(s))) {
        expect([v, env.get(v)!.from]).toEqual([v, 'secret']);
        if (MANDATORY_SECRETS.includes(v)) expect([v, env.get(v)!.secret!.optional]).toEqual([v, false]);
      }
    });

    it("passes the app's own config validation (loadConfig) with the rendered environment, over the Dockerfile's ENV", () => {
      expect(validateInImage(app, plainEnv(envOf(app)))).toEqual([]);
    });

    it('points each upstream URL at the Service and port of the app it names', () => {
      const env = plainEnv(envOf(app));
      for (const variable of app.vars) {
        const upstream = upstreamOf(app, variable);
        if (!upstream) continue;
        const url = new URL(env[variable]);
        const service = m.find('Service', url.hostname);
        expect([variable, service?.metadata.name]).toEqual([variable, url.hostname]);
        expect(m.servicesFor(deployment(upstream)).map((s) => s.metadata.name)).toContain(url.hostname);
        expect(service!.spec.ports.map((p: any) => p.port)).toContain(Number(url.port));
      }
    });

    it('has a Service on its port that reaches the container port', () => {
      const d = deployment(app);
      const c = appContainer(d);
      const services = m.servicesFor(d);
      const main = services.find((s) => s.metadata.name === app.name);
      expect(main?.spec.ports.map((p: any) => p.port)).toEqual([app.port]);
      for (const s of services)
        for (const p of s.spec.ports)
          expect([s.metadata.name, resolvePort(c, p.targetPort ?? p.port)]).toEqual([
            s.metadata.name,
            p.port,
          ]);
    });

    it('is scraped by Prometheus on its probe port', () => {
      const annotations = deployment(app).spec.template.metadata.annotations ?? {};
      expect(annotations['prometheus.io/scrape']).toBe('true');
      expect(Number(annotations['prometheus.io/port'])).toBe(app.probePort);
      expect(annotations['prometheus.io/path']).toBe('/metrics');
    });

    it('drains: preStop sleep, then SHUTDOWN_TIMEOUT_MS, within terminationGracePeriodSeconds', () => {
      const d = deployment(app);
      const sleep = preStopSleepSeconds(appContainer(d));
      const shutdownMs = Number(
        plainEnv(envOf(app)).SHUTDOWN_TIMEOUT_MS ?? app.schema.properties.SHUTDOWN_TIMEOUT_MS.default,
      );
      expect(sleep).toBeGreaterThanOrEqual(5);
      expect(d.spec.template.spec.terminationGracePeriodSeconds).toBeGreaterThanOrEqual(
        sleep + shutdownMs / 1000 + 5,
      );
    });

    it('has a PodDisruptionBudget', () => {
      const labels = deployment(app).spec.template.metadata.labels;
      const pdbs = m.all('PodDisruptionBudget').filter((p) => selects(p.spec.selector.matchLabels, labels));
      expect(pdbs).toHaveLength(1);
    });

    it('lets a drain evict its pods that are not ready, as all are while Kafka is away', () => {
      // Under the default (IfHealthyBudget) no pod is evicted while fewer are ready than the budget
      // wants: a Kafka outage fails /readyz on every pod, and blocks every drain of a node with one.
      const labels = deployment(app).spec.template.metadata.labels;
      const pdb = m.all('PodDisruptionBudget').find((p) => selects(p.spec.selector.matchLabels, labels));
      expect(pdb?.spec.unhealthyPodEvictionPolicy).toBe('AlwaysAllow');
    });

    it('autoscales if it is a gateway or router (leaving replicas to the HPA), else has fixed replicas', () => {
      const d = deployment(app);
      const hpa = m
        .all('HorizontalPodAutoscaler')
        .find(
          (h) =>
            h.spec.scaleTargetRef.kind === 'Deployment' && h.spec.scaleTargetRef.name === d.metadata.name,
        );
      if (app.name in AUTOSCALED) {
        expect(hpa).toBeDefined();
        expect(d.spec.replicas).toBeUndefined();
        expect(hpa!.spec.minReplicas).toBeLessThanOrEqual(hpa!.spec.maxReplicas);
        // A consumer group cannot use more members than partitions.
        for (const topic of AUTOSCALED[app.name])
          expect(hpa!.spec.maxReplicas).toBeLessThanOrEqual(TOPICS[topic as keyof typeof TOPICS].partitions);
      } else {
        expect(hpa).toBeUndefined();
        expect(d.spec.replicas).toBeGreaterThanOrEqual(1);
      }
    });

    it('is reachable on internal ports only from the fleet, on public ports from anywhere', () => {
      const d = deployment(app);
      const podLabels = d.spec.template.metadata.labels;
      const policies = m
        .all('NetworkPolicy')
        .filter(
          (p) =>
            selects(p.spec.podSelector.matchLabels ?? {}, podLabels) &&
            (p.spec.policyTypes ?? ['Ingress']).includes('Ingress'),
        );
      expect(policies.length).toBeGreaterThan(0); // selected, so isolated: only the rules below admit
      const rules = policies.flatMap((p) => p.spec.ingress ?? []);
      const c = appContainer(d);
      const onPort = (port: number) =>
        rules.filter((r: any) => !r.ports || r.ports.some((p: any) => resolvePort(c, p.port) === port));
      const fromAnywhere = (rule: any) => !rule.from || rule.from.length === 0;
      const fleetPeer = { ...podLabels, 'app.kubernetes.io/name': 'some-other-parley-app' };
      const fromFleet = (rule: any) =>
        (rule.from ?? []).some(
          (peer: any) =>
            peer.podSelector &&
            !peer.namespaceSelector &&
            !peer.ipBlock &&
            selects(peer.podSelector.matchLabels ?? {}, fleetPeer),
        );
      if (app.public) expect(onPort(app.port).some(fromAnywhere)).toBe(true);
      const internal = app.public ? app.internalPort : app.port;
      if (internal !== undefined) {
        expect(onPort(internal).some(fromAnywhere)).toBe(false);
        expect(onPort(internal).some(fromFleet)).toBe(true);
        for (const rule of onPort(internal))
          for (const peer of rule.from) expect(peer.ipBlock).toBeUndefined();
      }
    });
  });

  it('gives session-ms one address per ws-gateway pod (headless Service + POD_IP, an IPv6 one bracketed by the gateway)', () => {
    const gateway = APPS.find((a) => a.name === 'ws-gateway')!;
    const d = deployment(gateway);
    const headless = m.servicesFor(d).filter((s) => s.spec.clusterIP === 'None');
    expect(headless).toHaveLength(1);
    expect(headless[0].spec.ports.map((p: any) => p.port)).toEqual([gateway.internalPort]);
    const env = envOf(gateway);
    expect(env.get('POD_IP')?.from).toBe('field');
    expect(env.get('GATEWAY_ID')?.from).toBe('field');
    // Unset: the gateway builds http://<POD_IP>:<INTERNAL_PORT> itself, with an IPv6 address in
    // brackets (a URL written here as http://$(POD_IP):9080 is no URL in an IPv6-only cluster).
    expect(env.has('GATEWAY_INTERNAL_URL')).toBe(false);
    expect(env.get('INTERNAL_PORT')?.value).toBe(String(gateway.internalPort));
  });

  it('adds ws-gateway pods on memory before one refuses sockets at MAX_CONNECTIONS, and below its limit', () => {
    // Idle sockets cost memory, not CPU: about 6.5 KiB each over a 120 MiB process (docs/benchmarks.md).
    const gateway = APPS.find((a) => a.name === 'ws-gateway')!;
    const d = deployment(gateway);
    const hpa = m.all('HorizontalPodAutoscaler').find((h) => h.spec.scaleTargetRef.name === d.metadata.name);
    const memory = hpa!.spec.metrics.find((x: any) => x.resource?.name === 'memory');
    const targetMi = mebibytes(memory.resource.target.averageValue);
    const socketsAtTarget = ((targetMi - 120) * 1024) / 6.5;
    const maxConnections = Number(plainEnv(envOf(gateway)).MAX_CONNECTIONS);
    expect(socketsAtTarget).toBeLessThan(maxConnections * 0.9);
    expect(targetMi).toBeLessThan(mebibytes(appContainer(d).resources.limits.memory));
  });

  it('runs the image its own kustomization names (images[].newName/newTag/digest)', () => {
    const kustomization = parse(readFileSync(path.join(overlayDir(overlay), 'kustomization.yaml'), 'utf8'));
    const entry = (kustomization.images ?? []).find((i: any) => i.name === 'parley');
    expect(entry).toBeDefined();
    const wanted = `${entry.newName ?? 'parley'}${entry.newTag ? `:${entry.newTag}` : ''}${entry.digest ? `@${entry.digest}` : ''}`;
    for (const app of APPS)
      expect([app.name, appContainer(deployment(app)).image]).toEqual([app.name, wanted]);
  });

  it('has exactly the fleet: one Deployment per app, nothing else running the image', () => {
    const image = appContainer(m.deploymentFor(APPS[0].name)!).image;
    const runners = m
      .all('Deployment')
      .filter((d) => appContainer(d).image === image)
      .map((d) => appContainer(d).args[0])
      .sort();
    expect(runners).toEqual(APPS.map((a) => a.name).sort());
  });

  describe('Kafka (Strimzi)', () => {
    const kafka = () => {
      const all = m.all('Kafka');
      expect(all).toHaveLength(1);
      return all[0];
    };
    const config = () => m.all('ConfigMap').find((c) => c.data?.KAFKA_BROKERS)!.data;

    it('is a KRaft cluster with node pools', () => {
      const k = kafka();
      expect(k.metadata.annotations?.['strimzi.io/kraft']).toBe('enabled');
      expect(k.metadata.annotations?.['strimzi.io/node-pools']).toBe('enabled');
      const pools = m
        .all('KafkaNodePool')
        .filter((p) => p.metadata.labels?.['strimzi.io/cluster'] === k.metadata.name);
      expect(pools.flatMap((p) => p.spec.roles).sort()).toEqual(['broker', 'controller']);
    });

    it('spreads each node pool over hosts (hard) and zones, as the apps: one host lost is one node lost', () => {
      // Strimzi places nothing by itself: two of three nodes on one host lose the controller quorum
      // and min.insync.replicas together with it. Strimzi labels a pool's pods with these two.
      const k = kafka();
      for (const pool of m.all('KafkaNodePool')) {
        const podLabels = {
          'strimzi.io/cluster': k.metadata.name,
          'strimzi.io/pool-name': pool.metadata.name,
        };
        const exporterLabels = {
          'strimzi.io/cluster': k.metadata.name,
          'strimzi.io/name': 'parley-kafka-exporter',
        };
        const spread = (pool.spec.template?.pod?.topologySpreadConstraints ?? []).filter(
          (c: any) => selects(c.labelSelector?.matchLabels ?? {}, podLabels) && c.maxSkew === 1,
        );
        for (const c of spread) expect(selects(c.labelSelector.matchLabels, exporterLabels)).toBe(false);
        const on = (key: string) => spread.find((c: any) => c.topologyKey === key);
        expect([pool.metadata.name, on('kubernetes.io/hostname')?.whenUnsatisfiable]).toEqual([
          pool.metadata.name,
          'DoNotSchedule',
        ]);
        expect(on('kubernetes.io/hostname').nodeTaintsPolicy).toBe('Honor');
        expect(on('topology.kubernetes.io/zone')).toBeDefined();
      }
    });

    it('runs the Kafka Exporter with the prometheus.io annotations that get kafka_consumergroup_lag scraped', () => {
      const exporter = kafka().spec.kafkaExporter;
      expect(exporter).toBeDefined();
      expect(exporter.template?.pod?.metadata?.annotations).toEqual({
        'prometheus.io/scrape': 'true',
        'prometheus.io/port': '9404',
        'prometheus.io/path': '/metrics',
      });
    });

    it('has a KafkaTopic with the right partitions, retention and segment time for every topic the code uses, and no other', () => {
      const k = kafka();
      const topics = m.all('KafkaTopic');
      for (const t of topics) expect(t.metadata.labels?.['strimzi.io/cluster']).toBe(k.metadata.name);
      const actual = topics.map((t) => ({
        name: t.spec.topicName ?? t.metadata.name,
        partitions: t.spec.partitions,
        retentionMs: Number(t.spec.config?.['retention.ms']),
        segmentMs: Number(t.spec.config?.['segment.ms']),
      }));
      const wanted = plannedTopics().map(({ name, partitions, retentionMs, segmentMs }) => ({
        name,
        partitions,
        retentionMs,
        segmentMs,
      }));
      const byName = (a: { name: string }, b: { name: string }) => a.name.localeCompare(b.name);
      expect(actual.sort(byName)).toEqual(wanted.sort(byName));
    });

    it('replicates topics as KAFKA_REPLICATION_FACTOR says, within the brokers it has', () => {
      const k = kafka();
      const rf = Number(config().KAFKA_REPLICATION_FACTOR);
      const brokers = m
        .all('KafkaNodePool')
        .filter((p) => p.spec.roles.includes('broker'))
        .reduce((n, p) => n + p.spec.replicas, 0);
      expect(rf).toBeLessThanOrEqual(brokers);
      expect(Number(k.spec.kafka.config['default.replication.factor'])).toBe(rf);
      expect(Number(k.spec.kafka.config['min.insync.replicas'])).toBeLessThanOrEqual(Math.max(1, rf - 1));
      for (const t of m.all('KafkaTopic')) expect(t.spec.replicas).toBe(rf);
    });

    it('is what the apps connect to: bootstrap Service, listener port, TLS and SASL agree', () => {
      const k = kafka();
      const cfg = config();
      const [host, port] = cfg.KAFKA_BROKERS.split(',')[0].split(':');
      expect(host).toBe(`${k.metadata.name}-kafka-bootstrap`);
      const listener = k.spec.kafka.listeners.find((l: any) => l.port === Number(port));
      expect(listener).toBeDefined();
      expect(cfg.KAFKA_SSL).toBe(String(!!listener.tls));
      const auth = listener.authentication?.type;
      expect(cfg.KAFKA_SASL_MECHANISM || undefined).toBe(
        auth === 'scram-sha-512' ? 'scram-sha-512' : undefined,
      );
      if (auth) {
        const user = m.find('KafkaUser', cfg.KAFKA_SASL_USERNAME);
        expect(user?.spec.authentication.type).toBe(auth);
        for (const app of APPS)
          expect(envOf(app).get('KAFKA_SASL_PASSWORD')?.secret?.name).toBe(cfg.KAFKA_SASL_USERNAME);
      }
      if (listener.tls) expect(cfg.NODE_EXTRA_CA_CERTS).toBeDefined();
      // Only the fleet may reach the listeners.
      for (const l of k.spec.kafka.listeners) expect(l.networkPolicyPeers?.length).toBeGreaterThan(0);
    });
  });

  if (overlay === 'prod') {
    it('prod: no development switches, secrets only by reference to the operator-made Secret', () => {
      for (const app of APPS) expect(plainEnv(envOf(app)).DEV_MODE ?? 'false').toBe('false');
      expect(m.all('Secret')).toEqual([]);
      const example = parse(
        readFileSync(path.join(overlayDir('prod'), 'parley-secrets.example.yaml'), 'utf8'),
      );
      const keys = Object.keys(example.stringData);
      for (const app of APPS) {
        for (const [, source] of envOf(app)) {
          if (source.from !== 'secret' || source.secret!.name === 'parley-kafka-user') continue;
          expect(source.secret!.name).toBe(example.metadata.name);
          expect(keys).toContain(source.secret!.key);
        }
      }
    });

    it('prod: every app runs at least two replicas', () => {
      for (const app of APPS) {
        const d = deployment(app);
        const hpa = m
          .all('HorizontalPodAutoscaler')
          .find((h) => h.spec.scaleTargetRef.name === d.metadata.name);
        expect([app.name, hpa ? hpa.spec.minReplicas : d.spec.replicas]).toEqual([
          app.name,
          expect.any(Number),
        ]);
        expect(hpa ? hpa.spec.minReplicas : d.spec.replicas).toBeGreaterThanOrEqual(2);
      }
    });
  } else {
    it('dev: every Secret the apps reference is rendered with its keys', () => {
      for (const app of APPS) {
        for (const [name, source] of envOf(app)) {
          if (source.from !== 'secret' || source.secret!.optional) continue;
          expect([name, m.secretData(source.secret!.name)?.[source.secret!.key]]).toEqual([
            name,
            expect.any(String),
          ]);
        }
      }
    });
  }
});

function mebibytes(quantity: string): number {
  const match = /^(\d+(?:\.\d+)?)(Ki|Mi|Gi)?$/.exec(quantity);
  if (!match) throw new Error(`unsupported quantity ${quantity}`);
  const factor = { Ki: 1 / 1024, Mi: 1, Gi: 1024 }[match[2] as 'Ki' | 'Mi' | 'Gi'] ?? 1 / (1024 * 1024);
  return Number(match[1]) * factor;
}
