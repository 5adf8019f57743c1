/** What each app's own config validation refuses at start, for the whole fleet. */
import { fleet, upstreamOf, validateConfig } from '../src/fleet';

/** Where one service reaches another: every upstream `*_URL`, and what a gateway advertises. */
const serviceUrls = fleet().flatMap((app) =>
  app.vars
    .filter((v) => upstreamOf(app, v) !== undefined || v === 'GATEWAY_INTERNAL_URL')
    .map((variable) => ({ app, variable })),
);

describe('service URL settings', () => {
  it('covers the upstream URLs and the gateway address', () => {
    expect(serviceUrls.map(({ app, variable }) => `${app.name} ${variable}`).sort()).toEqual([
      'group-message-router GROUP_URL',
      'rest-gateway GROUP_URL',
      'rest-gateway PERSISTENCE_URL',
      'rest-gateway PUSH_URL',
      'rest-gateway SESSION_URL',
      'ws-gateway GATEWAY_INTERNAL_URL',
    ]);
  });

  // Taken as they were, these started the app: group-message-router then exited 1 with a bare
  // "Invalid URL" stack, rest-gateway reported ready and answered every call to that service 503.
  it.each(serviceUrls)(
    '$app.name refuses a $variable that is no http(s)://host:port at start',
    ({ app, variable }) => {
      for (const value of [
        'group-ms:9104',
        'notaurl',
        '127.0.0.1:9104',
        'http://group-ms:9104/',
        'http://',
      ]) {
        const problems = validateConfig(app, { [variable]: value });
        expect([value, problems]).toEqual([value, [expect.stringMatching(new RegExp(`^${variable}: `))]]);
      }
      for (const value of ['http://group-ms:9104', 'https://10.0.0.7:9104', 'http://[fd00::7]:9080'])
        expect([value, validateConfig(app, { [variable]: value })]).toEqual([value, []]);
    },
  );
});
