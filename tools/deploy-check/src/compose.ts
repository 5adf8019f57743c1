/**
 * docker-compose.yml read without a Docker engine: YAML with merge keys (`<<:`), then compose's
 * variable interpolation with an empty shell environment (`${VAR:-default}` takes the default),
 * as `docker compose config` would print it on a clean machine.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parse } from 'yaml';
import { ROOT } from './fleet';

/* eslint-disable @typescript-eslint/no-explicit-any */
export type ComposeFile = { services: Record<string, any>; volumes?: Record<string, unknown> };

export function interpolate(text: string, env: Record<string, string | undefined> = {}): string {
  return text.replace(
    /\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)/g,
    (whole, name, op, arg, bare) => {
      if (whole === '$$') return '$';
      const key = name ?? bare;
      const value = env[key];
      if (!op) return value ?? '';
      const unset = op.startsWith(':') ? !value : value === undefined;
      if (op.endsWith('-')) return unset ? arg : (value as string);
      if (unset) throw new Error(`compose variable ${key} is required: ${arg}`);
      return value as string;
    },
  );
}

function walk(node: unknown, env: Record<string, string | undefined>): unknown {
  if (typeof node === 'string') return interpolate(node, env);
  if (Array.isArray(node)) return node.map((n) => walk(n, env));
  if (node && typeof node === 'object')
    return Object.fromEntries(Object.entries(node).map(([k, v]) => [k, walk(v, env)]));
  return node;
}

export function loadCompose(
  file = path.join(ROOT, 'docker-compose.yml'),
  env: Record<string, string | undefined> = {},
): ComposeFile {
  const raw = parse(readFileSync(file, 'utf8'), { merge: true }) as ComposeFile;
  return walk(raw, env) as ComposeFile;
}

/** A service's environment as a map (compose allows a map or a list of KEY=VALUE). */
export function serviceEnv(service: any): Record<string, string> {
  const env = service.environment ?? {};
  if (Array.isArray(env)) {
    return Object.fromEntries(
      env.map((entry: string) => {
        const i = entry.indexOf('=');
        return i < 0 ? [entry, ''] : [entry.slice(0, i), entry.slice(i + 1)];
      }),
    );
  }
  return Object.fromEntries(
    Object.entries(env).map(([k, v]) => [k, v === null || v === undefined ? '' : String(v)]),
  );
}

/** Host-published ports as {host, container} (short syntax "8080:8080" or long syntax). */
export function publishedPorts(service: any): Array<{ host: number; container: number }> {
  return (service.ports ?? []).map((p: any) => {
    if (typeof p === 'object') return { host: Number(p.published), container: Number(p.target) };
    const parts = String(p).split('/')[0].split(':');
    const container = Number(parts[parts.length - 1]);
    const host = parts.length >= 2 ? Number(parts[parts.length - 2]) : NaN;
    return { host, container };
  });
}

/** depends_on as {service: condition} (list form means service_started). */
export function dependencies(service: any): Record<string, string> {
  const deps = service.depends_on ?? {};
  if (Array.isArray(deps)) return Object.fromEntries(deps.map((d: string) => [d, 'service_started']));
  return Object.fromEntries(
    Object.entries<any>(deps).map(([k, v]) => [k, v?.condition ?? 'service_started']),
  );
}

/** Seconds in a compose duration such as "30s", "1m30s". */
export function durationSeconds(text: string | undefined): number {
  if (!text) return 10; // compose's default stop_grace_period
  let total = 0;
  for (const [, n, unit] of text.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g))
    total += Number(n) * { ms: 0.001, s: 1, m: 60, h: 3600 }[unit as 'ms' | 's' | 'm' | 'h'];
  return total;
}
