import { createServer, IncomingMessage, ServerResponse } from 'node:http';
import { AddressInfo } from 'node:net';
import WebSocket from 'ws';
import { MAX_PRESENCE_USERS, type Mute, type Presence } from '@parley/contracts';
import { ParleyClient } from '../public/parley-client.js';

/** A client whose REST calls reach `answer`, a stand-in for rest-gateway; closed after `use`. */
async function withRestStandIn(
  answer: (request: IncomingMessage, body: string, response: ServerResponse) => void,
  use: (client: ParleyClient) => Promise<void>,
  options: { restTimeoutMs?: number } = {},
) {
  const server = createServer((request, response) => {
    let body = '';
    request.on('data', (chunk) => (body += chunk));
    request.on('end', () => answer(request, body, response));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    await use(
      new ParleyClient({
        restUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
        wsUrl: 'ws://127.0.0.1:9/v1/ws',
        getToken: async () => 'a-token',
        WebSocket,
        ...options,
      }),
    );
  } finally {
    await new Promise((resolve) => server.close(resolve));
  }
}

const json = (response: ServerResponse, status: number, body: unknown, headers = {}) =>
  response.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(body));

describe('parley-client.js REST retries', () => {
  it('calls REST again after a 429 (waiting its Retry-After) and a 503, and gives up after four tries', async () => {
    const answers: Array<[number, Record<string, string>]> = [
      [429, { 'retry-after': '1' }],
      [503, {}],
      [200, {}],
      [503, {}],
      [503, {}],
      [503, {}],
      [503, {}],
    ];
    const calls: number[] = [];
    await withRestStandIn(
      (_request, _body, response) => {
        calls.push(Date.now());
        const [status, headers] = answers.shift()!;
        const body =
          status === 200 ? { groups: [] } : { error: { code: 'unavailable', message: `a ${status}` } };
        json(response, status, body, headers);
      },
      async (c) => {
        expect(await c.rest('GET', '/v1/groups')).toEqual({ groups: [] });
        expect(calls).toHaveLength(3);
        expect(calls[1] - calls[0]).toBeGreaterThanOrEqual(990); // the Retry-After, 1 s
        await expect(c.rest('GET', '/v1/groups')).rejects.toMatchObject({ status: 503, code: 'unavailable' });
        expect(calls).toHaveLength(7);
      },
    );
  });

  it('doubles the Retry-After of a 503 while the 503s go on (docs/protocol.md), and waits a 429 out as given', async () => {
    const answers: Array<[number, string]> = [
      [503, '1'],
      [503, '1'],
      [200, ''],
      [429, '1'],
      [429, '1'],
      [200, ''],
    ];
    const calls: number[] = [];
    await withRestStandIn(
      (_request, _body, response) => {
        calls.push(Date.now());
        const [status, retryAfter] = answers.shift()!;
        if (status === 200) return json(response, 200, { groups: [] });
        const code = status === 503 ? 'unavailable' : 'rate_limited';
        json(response, status, { error: { code, message: `a ${status}` } }, { 'retry-after': retryAfter });
      },
      async (c) => {
        await c.rest('GET', '/v1/groups');
        await c.rest('GET', '/v1/groups');
      },
    );
    const waits = calls.slice(1).map((at, i) => at - calls[i]);
    expect(waits[0]).toBeGreaterThanOrEqual(990); // the first 503's Retry-After, 1 s
    expect(waits[1]).toBeGreaterThanOrEqual(1990); // the second, doubled
    expect(waits[3]).toBeLessThan(1900); // a 429's Retry-After says when the next is taken: as given
    expect(waits[4]).toBeLessThan(1900);
  });

  it('gives up at once on a 429 whose Retry-After is past the longest wait (a daily limit): a try sooner is refused again', async () => {
    let calls = 0;
    await withRestStandIn(
      (_request, _body, response) => {
        calls++;
        json(
          response,
          429,
          { error: { code: 'rate_limited', message: 'at most 20 reports a day; retry in 3600 s' } },
          { 'retry-after': '3600' },
        );
      },
      async (c) => {
        const started = Date.now();
        await expect(c.report('bob', 'spam')).rejects.toMatchObject({
          status: 429,
          code: 'rate_limited',
          message: 'at most 20 reports a day; retry in 3600 s',
        });
        expect(calls).toBe(1);
        expect(Date.now() - started).toBeLessThan(1000);
      },
    );
  });

  it('rejects a call the server never answers after restTimeoutMs (a connection gone dark), rather than never', async () => {
    const hung: ServerResponse[] = [];
    await withRestStandIn(
      (_request, _body, response) => void hung.push(response),
      async (c) => {
        const started = Date.now();
        await expect(c.rest('GET', '/v1/groups')).rejects.toMatchObject({ name: 'TimeoutError' });
        expect(Date.now() - started).toBeLessThan(5_000);
        for (const response of hung) response.destroy();
      },
      { restTimeoutMs: 300 },
    );
  });

  it('reports a user with the last 20 of the messages given, each as {mid, body, sentAt}', async () => {
    const posted: Array<{ method?: string; url?: string; body: unknown }> = [];
    await withRestStandIn(
      (request, body, response) => {
        posted.push({ method: request.method, url: request.url, body: JSON.parse(body) });
        json(response, 201, { id: 'r1', at: 1234 });
      },
      async (c) => {
        const messages = Array.from({ length: 25 }, (_, i) => ({
          mid: `bob:m${i}`,
          body: { text: `message ${i}` },
          sentAt: 1000 + i,
          from: 'bob', // what the app keeps besides: not sent
        }));
        expect(await c.report('bob', 'harassment', { comment: 'line one\nline two', messages })).toEqual({
          id: 'r1',
          at: 1234,
        });
        expect(await c.report('bob', 'other')).toEqual({ id: 'r1', at: 1234 });
      },
    );
    expect(posted).toEqual([
      {
        method: 'POST',
        url: '/v1/reports',
        body: {
          id: expect.any(String),
          user: 'bob',
          reason: 'harassment',
          comment: 'line one\nline two',
          messages: Array.from({ length: 20 }, (_, i) => ({
            mid: `bob:m${i + 5}`,
            body: { text: `message ${i + 5}` },
            sentAt: 1005 + i,
          })),
        },
      },
      { method: 'POST', url: '/v1/reports', body: { id: expect.any(String), user: 'bob', reason: 'other' } },
    ]);
    const ids = posted.map((p) => (p.body as { id: string }).id);
    expect(new Set(ids).size).toBe(2); // two reports, two ids
  });

  it('files one report when a report answered 503 is tried again (the gateway timed out on a group-ms that did file it)', async () => {
    const filed = new Map<string, number>();
    let calls = 0;
    // As group-ms does: a report under an id already filed is that report again.
    await withRestStandIn(
      (_request, raw, response) => {
        // Without an id, each call is a report of its own (a server id).
        const id = (JSON.parse(raw) as { id?: string }).id ?? `server-${calls}`;
        if (!filed.has(id)) filed.set(id, 1000 + filed.size);
        if (calls++ === 0)
          json(response, 503, {
            error: { code: 'unavailable', message: 'group-ms is unreachable: timeout' },
          });
        else json(response, 201, { id: `ann:${id}`, at: filed.get(id) });
      },
      async (c) => {
        const receipt = await c.report('bob', 'spam');
        expect(calls).toBe(2);
        expect(filed.size).toBe(1);
        expect(receipt).toEqual({ id: `ann:${[...filed.keys()][0]}`, at: 1000 });
      },
    );
  });

  it('creates one group when a create answered 503 is tried again (the gateway timed out on a group-ms that did create it)', async () => {
    const groups = new Set<string>();
    let calls = 0;
    // rest-gateway answers 503 (group-ms "unreachable") when its call times out, though group-ms
    // may have created the group: as group-ms does, a create without an id gets a fresh one, and a
    // create naming an existing group by its creator is the same create again.
    await withRestStandIn(
      (_request, raw, response) => {
        const body = JSON.parse(raw) as { id?: string; name: string };
        const id = body.id ?? `g${groups.size + 1}-${Math.random().toString(36).slice(2)}`;
        groups.add(id);
        if (calls++ === 0)
          json(response, 503, {
            error: { code: 'unavailable', message: 'group-ms is unreachable: timeout' },
          });
        else json(response, 201, { id, name: body.name });
      },
      async (c) => {
        const created = await c.createGroup('trip', ['bob']);
        expect(calls).toBe(2);
        expect([...groups]).toEqual([created.id]);
      },
    );
  });

  it('mutes and unmutes a conversation, with or without an end, and lists mutes typed as the contracts say', async () => {
    const calls: string[] = [];
    await withRestStandIn(
      (request, _body, response) => {
        calls.push(`${request.method} ${request.url}`);
        if (request.method === 'GET')
          json(response, 200, { mutes: [{ chat: 'group', id: 'team', until: null }] });
        else response.writeHead(204).end();
      },
      async (c) => {
        await c.mute('group', 'team');
        await c.mute('direct', 'bob', 1700000000000);
        await c.unmute('direct', 'bob');
        const mutes: Mute[] = await c.mutes();
        expect(mutes).toEqual([{ chat: 'group', id: 'team', until: null }]);
      },
    );
    expect(calls).toEqual([
      'PUT /v1/mutes/group/team',
      'PUT /v1/mutes/direct/bob?until=1700000000000',
      'DELETE /v1/mutes/direct/bob',
      'GET /v1/mutes',
    ]);
  });

  it('gives presence as GET /v1/presence answers it: lastSeen null for a user never seen', async () => {
    await withRestStandIn(
      (_request, _body, response) =>
        json(response, 200, { presence: [{ user: 'bob', online: false, lastSeen: null }] }),
      async (c) => {
        // Typed as the contracts' Presence (tsc checks it): the client's types said `lastSeen?: number`.
        const presence: Presence[] = await c.presence(['bob']);
        expect(presence).toEqual([{ user: 'bob', online: false, lastSeen: null }]);
      },
    );
  });

  it('asks for the presence of more users than one call takes in several calls, in order', async () => {
    const asked: number[] = [];
    await withRestStandIn(
      (request, _body, response) => {
        const users = new URL(request.url!, 'http://x').searchParams.get('users')!.split(',');
        asked.push(users.length);
        if (users.length > MAX_PRESENCE_USERS)
          return json(response, 400, { error: { code: 'invalid_request' } });
        json(response, 200, { presence: users.map((user) => ({ user, online: false, lastSeen: null })) });
      },
      async (c) => {
        const users = Array.from({ length: 450 }, (_, i) => `u${i}`);
        expect((await c.presence(users)).map((p: Presence) => p.user)).toEqual(users);
        expect(asked).toEqual([200, 200, 50]);
        expect(await c.presence([])).toEqual([]);
      },
    );
  });
});

/**
 * A stand-in for GET /v1/messages and REST acks over a store that really stores: pending frames by
 * position, pages of at most `pageSize` after the cursor (persistence-ms ends a page once its frames
 * reach 1 MiB: 16 messages of 64 KiB), an ack removes what it names.
 */
function syncStandIn(count: number, pageSize: number) {
  const pending = new Map(
    Array.from({ length: count }, (_, i) => [
      i + 1,
      { type: 'message', mid: `bob:m${i}`, from: 'bob', body: i },
    ]),
  );
  const pagesAsked: Array<string | null> = [];
  const answer = (request: IncomingMessage, body: string, response: ServerResponse) => {
    const url = new URL(request.url!, 'http://x');
    if (request.method === 'POST' && url.pathname === '/v1/send') {
      const acked = new Set((JSON.parse(body) as { mids: string[] }).mids);
      for (const [seq, frame] of pending) if (acked.has(frame.mid)) pending.delete(seq);
      return json(response, 200, { accepted: true });
    }
    const after = url.searchParams.get('after');
    pagesAsked.push(after);
    const limit = Math.min(pageSize, Number(url.searchParams.get('limit')));
    const rows = [...pending].filter(([seq]) => seq > Number(after ?? 0));
    const page = rows.slice(0, limit);
    const next = rows.length > limit ? String(page[page.length - 1][0]) : null;
    json(response, 200, { messages: page.map(([, frame]) => frame), next });
  };
  return { pending, pagesAsked, answer };
}

describe('parley-client.js sync', () => {
  it('catches up on the whole backlog in one sync, however many pages it takes (not 50 pages, then silence)', async () => {
    // 700 messages in pages of 10: 70 pages (the old client stopped after 50, 500 messages).
    const server = syncStandIn(700, 10);
    await withRestStandIn(server.answer, async (c) => {
      const mids: string[] = [];
      c.addEventListener('message', (event) => mids.push((event as CustomEvent).detail.mid));
      expect(await c.sync()).toBe(700);
      expect(mids).toEqual(Array.from({ length: 700 }, (_, i) => `bob:m${i}`));
    });
    expect(server.pending.size).toBe(0); // all acked
    expect(server.pagesAsked).toHaveLength(70);
  });

  it('throws sync_stalled on a server whose cursor does not move on, or comes round again, rather than paging for ever', async () => {
    for (const cursors of [
      ['c1', 'c1'],
      ['c1', 'c2', 'c3', 'c1'],
    ]) {
      const asked: Array<string | null> = [];
      await withRestStandIn(
        (request, _body, response) => {
          if (request.method === 'POST') return json(response, 200, { accepted: true });
          asked.push(new URL(request.url!, 'http://x').searchParams.get('after'));
          const n = asked.length;
          const mid = `bob:m${n}`;
          json(response, 200, {
            messages: [{ type: 'message', mid }],
            next: cursors[(n - 1) % cursors.length],
          });
        },
        async (c) => {
          await expect(c.sync()).rejects.toMatchObject({ code: 'sync_stalled' });
        },
      );
      expect(asked).toEqual([null, ...cursors.slice(0, -1)]);
    }
  });

  it('stops at close(): a page answered after it is neither handed to the app nor acked, and stays stored', async () => {
    const server = syncStandIn(50, 10);
    let client: ParleyClient | undefined;
    await withRestStandIn(
      (request, body, response) => {
        // Signed out while the second page is on its way.
        if (request.method === 'GET' && server.pagesAsked.length === 1) client!.close();
        server.answer(request, body, response);
      },
      async (c) => {
        client = c;
        const mids: string[] = [];
        c.addEventListener('message', (event) => mids.push((event as CustomEvent).detail.mid));
        expect(await c.sync()).toBe(10);
        expect(mids).toHaveLength(10);
      },
    );
    expect(server.pending.size).toBe(40);
    expect(server.pagesAsked).toHaveLength(2);
  });
});
