/**
 * The PodMonitors of deploy/k8s/components/pod-monitors scrape what the alerts need on a Prometheus
 * run by prometheus-operator: every pod of the fleet on the port its prometheus.io/port annotation
 * names, and Strimzi's Kafka Exporter of the overlay's Kafka cluster.
 */
import { fleet as deployableApps } from '../src/fleet';
import {
  K8sObject,
  kubectlMissing,
  Manifests,
  overlayDir,
  render,
  renderWithComponents,
  selects,
} from '../src/manifests';

/* eslint-disable @typescript-eslint/no-explicit-any */

const missing = kubectlMissing();
if (missing) console.warn(`deploy-check: skipping the PodMonitor checks: ${missing}`);
const describeK8s = missing ? describe.skip : describe;

describeK8s('the pod-monitors component in the prod overlay', () => {
  let prod: Manifests;
  let monitored: Manifests;
  beforeAll(() => {
    prod = new Manifests(render(overlayDir('prod')));
    monitored = new Manifests(renderWithComponents('prod', ['pod-monitors']));
  });

  /** The PodMonitor endpoints that scrape a pod template: selected, on a port it names. */
  const endpointsFor = (pod: any): Array<{ port: number; path: string }> =>
    monitored.all('PodMonitor').flatMap((monitor: K8sObject) => {
      if (!selects(monitor.spec.selector.matchLabels, pod.metadata.labels ?? {})) return [];
      const ports = pod.spec.containers.flatMap((c: any) => c.ports ?? []);
      return monitor.spec.podMetricsEndpoints.flatMap((endpoint: any) => {
        const port = ports.find((p: any) => p.name === endpoint.port);
        return port ? [{ port: port.containerPort, path: endpoint.path }] : [];
      });
    });

  it('adds two PodMonitors in the overlay namespace, and is not in the overlay by default', () => {
    expect(prod.all('PodMonitor')).toEqual([]);
    expect(monitored.all('PodMonitor').map((m) => [m.metadata.name, (m.metadata as any).namespace])).toEqual([
      ['parley', 'parley'],
      ['parley-kafka-exporter', 'parley'],
    ]);
    expect(monitored.objects.length).toBe(prod.objects.length + 2);
  });

  it.each(deployableApps().map((app) => app.name))(
    'scrapes %s once, on the port and path its prometheus.io annotations name',
    (app) => {
      const pod = prod.deploymentFor(app)!.spec.template;
      const annotations = pod.metadata.annotations;
      expect(endpointsFor(pod)).toEqual([
        { port: Number(annotations['prometheus.io/port']), path: annotations['prometheus.io/path'] },
      ]);
    },
  );

  it("scrapes the Kafka Exporter of the overlay's Kafka cluster on its metrics port", () => {
    const [kafka] = prod.all('Kafka');
    const exporterPod = {
      // What Strimzi gives the exporter's pod, with the annotations the Kafka resource adds.
      metadata: { labels: { 'strimzi.io/name': `${kafka!.metadata.name}-kafka-exporter` } },
      spec: { containers: [{ ports: [{ name: 'tcp-prometheus', containerPort: 9404 }] }] },
    };
    const annotations = kafka!.spec.kafkaExporter.template.pod.metadata.annotations;
    expect(endpointsFor(exporterPod)).toEqual([
      { port: Number(annotations['prometheus.io/port']), path: annotations['prometheus.io/path'] },
    ]);
  });
});
