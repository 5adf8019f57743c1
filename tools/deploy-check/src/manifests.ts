/**
 * Renders the kustomize overlays with `kubectl kustomize` (offline) and answers questions about
 * the result: which Deployment runs an app, the environment a container will really see (ConfigMap
 * envFrom, Secret references, downward API, $(VAR) expansion), which ports a Service reaches.
 */
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { ROOT } from './fleet';

// Rendered manifests are plain JSON-like trees; `any` keeps the checks readable.
/* eslint-disable @typescript-eslint/no-explicit-any */
export type K8sObject = {
  apiVersion: string;
  kind: string;
  metadata: { name: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [key: string]: any;
};

export const OVERLAYS = ['dev', 'prod'] as const;
export type Overlay = (typeof OVERLAYS)[number];

/** Why kubectl cannot render here, or undefined when it can. */
export function kubectlMissing(): string | undefined {
  const probe = spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8' });
  if (probe.error)
    return `kubectl not found (${(probe.error as NodeJS.ErrnoException).code ?? probe.error.message})`;
  if (probe.status !== 0) return `kubectl version --client failed: ${probe.stderr.trim()}`;
  return undefined;
}

export function overlayDir(overlay: string): string {
  return path.join(ROOT, 'deploy/k8s/overlays', overlay);
}

export function render(dir: string): K8sObject[] {
  const result = spawnSync('kubectl', ['kustomize', dir], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  if (result.error) throw result.error;
  if (result.status !== 0) throw new Error(`kubectl kustomize ${dir} failed:\n${result.stderr}`);
  return parseAllDocuments(result.stdout)
    .map((doc) => doc.toJS() as K8sObject)
    .filter(Boolean);
}

/**
 * Renders `overlay` with `components` (directories under deploy/k8s/components) added to its
 * `components:`, as docs/operations.md tells an operator to: a copy of the overlay beside it.
 */
export function renderWithComponents(overlay: string, components: string[]): K8sObject[] {
  const copy = mkdtempSync(path.join(ROOT, `deploy/k8s/overlays/.${overlay}-check-`));
  try {
    cpSync(overlayDir(overlay), copy, { recursive: true });
    const kustomization = path.join(copy, 'kustomization.yaml');
    const listed = components.map((c) => `  - ../../components/${c}\n`).join('');
    writeFileSync(kustomization, `${readFileSync(kustomization, 'utf8')}components:\n${listed}`);
    return render(copy);
  } finally {
    rmSync(copy, { recursive: true, force: true });
  }
}

export class Manifests {
  constructor(readonly objects: K8sObject[]) {}

  all(kind: string): K8sObject[] {
    return this.objects.filter((o) => o.kind === kind);
  }

  find(kind: string, name: string): K8sObject | undefined {
    return this.objects.find((o) => o.kind === kind && o.metadata.name === name);
  }

  /** The Deployment whose container runs `app` (args[0]). */
  deploymentFor(app: string): K8sObject | undefined {
    return this.all('Deployment').find((d) => appContainer(d)?.args?.[0] === app);
  }

  /** Services whose selector picks the Deployment's pods. */
  servicesFor(deployment: K8sObject): K8sObject[] {
    const labels = deployment.spec.template.metadata.labels ?? {};
    return this.all('Service').filter((s) => s.spec.selector && selects(s.spec.selector, labels));
  }

  /** A Secret's decoded data, or undefined when the overlay does not render it (operator-made). */
  secretData(name: string): Record<string, string> | undefined {
    const secret = this.find('Secret', name);
    if (!secret) return undefined;
    const data: Record<string, string> = { ...(secret.stringData ?? {}) };
    for (const [key, value] of Object.entries<string>(secret.data ?? {}))
      data[key] = Buffer.from(value, 'base64').toString('utf8');
    return data;
  }
}

export function selects(selector: Record<string, string>, labels: Record<string, string>): boolean {
  return Object.entries(selector).every(([k, v]) => labels[k] === v);
}

/** The app's container: the one running the fleet image (named `app`). */
export function appContainer(deployment: K8sObject): any {
  const containers: any[] = deployment.spec?.template?.spec?.containers ?? [];
  return containers.find((c) => c.name === 'app') ?? containers[0];
}

/** Stand-ins for Secret values the overlay does not render (prod: the operator creates them). */
export const SECRET_STAND_INS: Record<string, string> = {
  INTERNAL_SECRET: 'stand-in-internal-secret-0123456789',
  JWT_SECRET: 'stand-in-jwt-secret-0123456789-0123456789',
  JWT_JWKS_URL: 'https://idp.example.com/.well-known/jwks.json',
  JWT_AUDIENCE: 'parley',
  JWT_ISSUER: 'https://idp.example.com/',
  DATABASE_URL: 'postgres://parley:secret@postgres.example.internal:5432/parley',
  REDIS_URL: 'rediss://:secret@redis.example.internal:6379',
  FCM_SERVICE_ACCOUNT: '{"type":"service_account"}',
  KAFKA_SASL_PASSWORD: 'stand-in-kafka-password',
};

export interface EnvSource {
  value: string | undefined;
  from: 'value' | 'configMap' | 'secret' | 'field';
  secret?: { name: string; key: string; optional: boolean };
}

/**
 * The environment a container sees: envFrom ConfigMaps first, then `env` entries (which win),
 * with `$(VAR)` expanded from earlier entries as the kubelet does. Secret values come from the
 * rendered Secret when there is one, else from SECRET_STAND_INS (keyed by the variable's name).
 */
export function containerEnv(
  manifests: Manifests,
  container: any,
  fields: Record<string, string>,
): Map<string, EnvSource> {
  const env = new Map<string, EnvSource>();
  for (const source of container.envFrom ?? []) {
    if (source.configMapRef) {
      const cm = manifests.find('ConfigMap', source.configMapRef.name);
      if (!cm && !source.configMapRef.optional)
        throw new Error(`ConfigMap ${source.configMapRef.name} is not rendered`);
      for (const [key, value] of Object.entries<string>(cm?.data ?? {}))
        env.set(key, { value, from: 'configMap' });
    }
    if (source.secretRef)
      throw new Error('secrets are referenced key by key (secretKeyRef), not with envFrom');
  }
  const expand = (text: string) =>
    text.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (whole, name: string) => env.get(name)?.value ?? whole);
  for (const entry of container.env ?? []) {
    if ('value' in entry) env.set(entry.name, { value: expand(String(entry.value ?? '')), from: 'value' });
    else if (entry.valueFrom?.secretKeyRef) {
      const ref = entry.valueFrom.secretKeyRef;
      const rendered = manifests.secretData(ref.name);
      const value = rendered
        ? rendered[ref.key]
        : ref.optional && !(entry.name in SECRET_STAND_INS)
          ? undefined
          : SECRET_STAND_INS[entry.name];
      env.set(entry.name, {
        value,
        from: 'secret',
        secret: { name: ref.name, key: ref.key, optional: !!ref.optional },
      });
    } else if (entry.valueFrom?.configMapKeyRef) {
      const ref = entry.valueFrom.configMapKeyRef;
      env.set(entry.name, {
        value: manifests.find('ConfigMap', ref.name)?.data?.[ref.key],
        from: 'configMap',
      });
    } else if (entry.valueFrom?.fieldRef) {
      const field = entry.valueFrom.fieldRef.fieldPath;
      if (!(field in fields)) throw new Error(`no stand-in for fieldRef ${field}`);
      env.set(entry.name, { value: fields[field], from: 'field' });
    } else throw new Error(`env ${entry.name}: unsupported source ${JSON.stringify(entry)}`);
  }
  return env;
}

/** The plain environment (variables with a value), as process.env would hold it. */
export function plainEnv(env: Map<string, EnvSource>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [key, source] of env) if (source.value !== undefined) out[key] = source.value;
  return out;
}

/** A container port number from a probe/Service port that may be a name. */
export function resolvePort(container: any, port: number | string): number | undefined {
  if (typeof port === 'number')
    return (container.ports ?? []).some((p: any) => p.containerPort === port) ? port : undefined;
  if (/^\d+$/.test(port)) return resolvePort(container, Number(port));
  return (container.ports ?? []).find((p: any) => p.name === port)?.containerPort;
}

/** Seconds of the preStop `sleep N` hook (0 when there is none). */
export function preStopSleepSeconds(container: any): number {
  const hook = container.lifecycle?.preStop;
  if (!hook) return 0;
  if (hook.sleep?.seconds !== undefined) return Number(hook.sleep.seconds);
  const command: string[] = hook.exec?.command ?? [];
  const i = command.indexOf('sleep');
  return i >= 0 ? Number(command[i + 1]) : 0;
}
