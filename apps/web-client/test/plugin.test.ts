import { buildHttpServer, createMetricsRegistry, Readiness, silentLogger } from '@parley/service-kit';
import { webClientPlugin } from '../src/plugin';

describe('the web client plugin', () => {
  const build = async () => {
    const app = buildHttpServer({
      logger: silentLogger(),
      metrics: createMetricsRegistry('rest-gateway', { collectDefaults: false }),
      readiness: new Readiness(),
    });
    await app.register(webClientPlugin({ wsPort: 18080 }));
    return app;
  };

  it('serves the page and tells it where the WebSocket is', async () => {
    const app = await build();
    const page = await app.inject({ method: 'GET', url: '/' });
    expect([page.statusCode, page.headers['content-type']]).toEqual([200, 'text/html; charset=utf-8']);
    const config = await app.inject({
      method: 'GET',
      url: '/config.json',
      headers: { host: 'phone.lan:8081' },
    });
    expect(config.json()).toEqual({ wsUrl: 'ws://phone.lan:18080/v1/ws' });
    await app.close();
  });

  it('answers a path outside its folder as any missing file: 404 no route, not 400 "Forbidden"', async () => {
    const app = await build();
    for (const url of [
      '/nothing.js',
      '/a/%2e%2e/%2e%2e/package.json',
      '/x%5c..%5cindex.html',
      '//x',
      '/%00',
    ]) {
      const res = await app.inject({ method: 'GET', url });
      expect([url, res.statusCode, res.json().error]).toEqual([
        url,
        404,
        { code: 'not_found', message: expect.stringMatching(/^no route GET \//) },
      ]);
    }
    await app.close();
  });
});
