/**
 * docker-compose.yml checked like the Kubernetes overlays (no Docker engine here): every app as a
 * service of the one image, its env complete and accepted by its own schema, only the public ports
 * published, health checks on /readyz and start order on healthy dependencies.
 */
import { fleet, PUBLIC_APPS, upstreamOf, validateInImage } from '../src/fleet';
import {
  dependencies,
  durationSeconds,
  interpolate,
  loadCompose,
  publishedPorts,
  serviceEnv,
} from '../src/compose';

/* eslint-disable @typescript-eslint/no-explicit-any */
const compose = loadCompose();
const APPS = fleet();
const services = compose.services;
const serviceFor = (app: string): [string, any] => {
  const found = Object.entries(services).find(([, s]) => Array.isArray(s.command) && s.command[0] === app);
  if (!found) throw new Error(`no compose service runs ${app}`);
  return found;
};

describe('compose variable interpolation (as docker compose does it)', () => {
  it('takes defaults, values and escapes', () => {
    expect(interpolate('${A:-x}/${B-y}/$${C}', { B: '' })).toBe('x//${C}');
    expect(interpolate('${A:-x}', { A: 'set' })).toBe('set');
  });
});

describe('docker-compose.yml', () => {
  it('runs every app exactly once, all from the one image', () => {
    const runners = Object.values(services).filter(
      (s) => Array.isArray(s.command) && APPS.some((a) => a.name === s.command[0]),
    );
    expect(runners.map((s) => s.command[0]).sort()).toEqual(APPS.map((a) => a.name).sort());
    expect(new Set(runners.map((s) => s.image)).size).toBe(1);
    for (const s of runners) expect(s.build).toBeDefined();
  });

  it('runs Kafka in KRaft mode, Redis and Postgres from pinned official images', () => {
    const image = (name: string) => services[name]?.image as string;
    expect(image('kafka')).toMatch(/^apache\/kafka:\d+\.\d+\.\d+$/);
    expect(image('redis')).toMatch(/^redis:\d+\.\d+\.\d+(-[a-z0-9]+)?$/);
    expect(image('postgres')).toMatch(/^postgres:\d+(\.\d+)+(-[a-z0-9]+)?$/);
    const kafka = serviceEnv(services.kafka);
    expect(kafka.KAFKA_PROCESS_ROLES.split(',').sort()).toEqual(['broker', 'controller']);
    expect(kafka.KAFKA_ZOOKEEPER_CONNECT).toBeUndefined();
    expect(kafka.CLUSTER_ID).toMatch(/^[A-Za-z0-9_-]{22}$/);
    for (const name of ['kafka', 'redis', 'postgres']) expect(services[name].healthcheck?.test).toBeDefined();
  });

  it('publishes only the public ports (8080, 8081), nothing internal', () => {
    const published = Object.entries(services).flatMap(([name, s]) =>
      publishedPorts(s).map((p) => ({ name, ...p })),
    );
    const expected = APPS.filter((a) => a.public).map((a) => ({
      name: serviceFor(a.name)[0],
      host: a.port,
      container: a.port,
    }));
    const byHost = (a: { host: number }, b: { host: number }) => a.host - b.host;
    expect(published.sort(byHost)).toEqual(expected.sort(byHost));
    expect(published.map((p) => p.host).sort()).toEqual([8080, 8081]);
  });

  describe.each(APPS.map((a) => [a.name, a] as const))('%s', (_name, app) => {
    const [serviceName, service] = serviceFor(app.name);
    const env = serviceEnv(service);

    it('sets every variable its schema requires and the important optional ones', () => {
      expect(app.expected.filter((v) => !(v in env))).toEqual([]);
      for (const v of app.required) expect([v, env[v]]).toEqual([v, expect.stringMatching(/.+/)]);
    });

    it('sets no variable outside its schema (typos)', () => {
      expect(Object.keys(env).filter((k) => !app.vars.includes(k))).toEqual([]);
    });

    it("passes the app's own config validation (loadConfig) in the image, over the Dockerfile's ENV", () => {
      expect(validateInImage(app, env)).toEqual([]);
    });

    it('listens on the default ports, exposes the internal one, publishes only if public', () => {
      expect(Number(env.PORT)).toBe(app.port);
      if (app.internalPort !== undefined) expect(Number(env.INTERNAL_PORT)).toBe(app.internalPort);
      const internal = [app.public ? undefined : app.port, app.internalPort]
        .filter((p) => p !== undefined)
        .map(String);
      expect((service.expose ?? []).map(String).sort()).toEqual(internal.sort());
      expect(publishedPorts(service).length > 0).toBe(PUBLIC_APPS.includes(app.name));
    });

    it('has a health check on /readyz at its probe port', () => {
      const test = [].concat(service.healthcheck?.test ?? []).join(' ');
      expect(test).toContain(`127.0.0.1:${app.probePort}/readyz`);
    });

    it('waits for healthy Kafka, and for Postgres/Redis when it uses them', () => {
      const deps = dependencies(service);
      expect(deps.kafka).toBe('service_healthy');
      if (env.DATABASE_URL) expect(deps[new URL(env.DATABASE_URL).hostname]).toBe('service_healthy');
      if (env.REDIS_URL) expect(deps[new URL(env.REDIS_URL).hostname]).toBe('service_healthy');
      for (const [dep, condition] of Object.entries(deps)) {
        expect(services[dep]).toBeDefined();
        expect([dep, condition]).toEqual([dep, 'service_healthy']);
        expect(services[dep].healthcheck).toBeDefined();
      }
    });

    it('points Kafka, Postgres, Redis and upstream URLs at compose services and their ports', () => {
      for (const broker of env.KAFKA_BROKERS.split(',')) {
        const [host, port] = broker.split(':');
        expect(host).toBe('kafka');
        expect(serviceEnv(services.kafka).KAFKA_ADVERTISED_LISTENERS).toContain(`//${host}:${port}`);
      }
      if (env.DATABASE_URL) expect(services[new URL(env.DATABASE_URL).hostname]?.image).toMatch(/^postgres:/);
      if (env.REDIS_URL) expect(services[new URL(env.REDIS_URL).hostname]?.image).toMatch(/^redis:/);
      for (const variable of app.vars) {
        const upstream = upstreamOf(app, variable);
        if (!upstream) continue;
        const url = new URL(env[variable]);
        expect([variable, url.hostname, Number(url.port)]).toEqual([
          variable,
          serviceFor(upstream.name)[0],
          upstream.port,
        ]);
      }
      if (env.GATEWAY_INTERNAL_URL)
        expect(new URL(env.GATEWAY_INTERNAL_URL).hostname).toBe(service.hostname ?? serviceName);
    });

    it('gets time to drain on stop (stop_grace_period > SHUTDOWN_TIMEOUT_MS)', () => {
      expect(durationSeconds(service.stop_grace_period)).toBeGreaterThan(
        Number(env.SHUTDOWN_TIMEOUT_MS) / 1000,
      );
    });
  });
});
