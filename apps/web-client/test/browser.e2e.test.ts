/** @expectedSeconds 30 */
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { startFleet, Fleet } from '../../launcher/src/fleet';

/**
 * The web client in real headless Chromium (Debian's `chromium` package, driven by playwright-core)
 * against the whole fleet: two users, two browser contexts (each its own localStorage), through
 * the UI only.
 *
 * Without Chromium this suite fails loudly; `PARLEY_SKIP_BROWSER=1` skips it instead.
 * `PARLEY_CHROMIUM` points at another Chromium binary; `PARLEY_SCREENSHOT=docs/screenshot.png`
 * (relative to the repository root) saves the chat screenshot shown in the README.
 */
const CHROMIUM = process.env.PARLEY_CHROMIUM ?? '/usr/bin/chromium';
const SKIP = process.env.PARLEY_SKIP_BROWSER === '1';
const ROOT = path.join(__dirname, '..', '..', '..');
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const WAIT = { timeout: 15_000 };

(SKIP ? describe.skip : describe)('web client in headless Chromium', () => {
  let fleet: Fleet;
  let browser: Browser;
  let alice: BrowserContext;
  let bob: BrowserContext;
  const pageErrors: string[] = [];

  beforeAll(async () => {
    if (!existsSync(CHROMIUM)) {
      throw new Error(
        `Chromium not found at ${CHROMIUM}: install it (apt-get install -y chromium), set PARLEY_CHROMIUM, or set PARLEY_SKIP_BROWSER=1 to skip this suite`,
      );
    }
    const { chromium } = await import('playwright-core');
    [fleet, browser] = await Promise.all([
      startFleet({
        ports: 'random',
        logLevel: 'warn',
        ackTimeoutMs: 1000,
        maxAttempts: 2,
        fastConsumers: true,
      }),
      chromium.launch({ executablePath: CHROMIUM, args: ARGS }),
    ]);
    alice = await browser.newContext({ viewport: { width: 1100, height: 680 } });
    bob = await browser.newContext({ viewport: { width: 1100, height: 680 } });
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await fleet?.stop();
  });

  afterEach(() => expect(pageErrors).toEqual([]));

  /** Runs `use` in a browser context of its own (its own localStorage, as another browser), closed after. */
  async function inNewContext(use: (context: BrowserContext) => Promise<void>): Promise<void> {
    const context = await browser.newContext();
    try {
      await use(context);
    } finally {
      await context.close();
    }
  }

  /** A new tab on the page's sign-in form, its script errors collected for `user`. */
  async function openPage(context: BrowserContext, user: string): Promise<Page> {
    const page = await context.newPage();
    page.on('pageerror', (err) => pageErrors.push(`${user}: ${err.message}`));
    await page.goto(`${fleet.urls.rest}/?presenceMs=500`);
    return page;
  }

  async function signIn(context: BrowserContext, user: string): Promise<Page> {
    const page = await openPage(context, user);
    await page.fill('#login-user', user);
    await page.click('#login-form button');
    await page.locator('#conn-status[data-state="online"]').waitFor(WAIT);
    return page;
  }

  async function send(page: Page, text: string) {
    await page.fill('#composer-input', text);
    await page.press('#composer-input', 'Enter');
  }

  const ticks = (page: Page, text: string, status: string) =>
    page.locator('.msg.mine', { hasText: text }).locator(`.ticks[data-status="${status}"]`).waitFor(WAIT);
  const received = (page: Page, text: string) =>
    page.locator('.msg:not(.mine)', { hasText: text }).waitFor(WAIT);

  it('sends and receives 1:1 with ticks, typing and presence, a group message, and catches up after being offline', async () => {
    // Alice writes to Bob before Bob ever signed in: accepted (✓), stored for him.
    const a = await signIn(alice, 'alice');
    expect(await a.evaluate(() => fetch('config.json').then((r) => r.json()))).toEqual({
      wsUrl: fleet.urls.ws,
    });
    await a.fill('#new-chat-user', 'bob');
    await a.press('#new-chat-user', 'Enter');
    await send(a, 'Hi Bob! Are you around?');
    await ticks(a, 'Hi Bob!', 'accepted');
    expect(await a.getAttribute('#chat-sub', 'data-online')).toBe('false');

    // Bob signs in: the message arrives (✓✓ delivered for Alice), unread until he opens it (blue ✓✓).
    let b = await signIn(bob, 'bob');
    await b.locator('.conv[data-key="direct:alice"] .badge', { hasText: '1' }).waitFor(WAIT);
    await ticks(a, 'Hi Bob!', 'delivered');
    expect(await a.locator('.msg.mine .ticks').getAttribute('data-status')).toBe('delivered'); // not read yet
    await b.click('.conv[data-key="direct:alice"]');
    await received(b, 'Hi Bob! Are you around?');
    await ticks(a, 'Hi Bob!', 'read');
    await a.locator('#chat-sub[data-online="true"]').waitFor(WAIT); // presence dot (polled)

    // Typing indicator, then Bob's reply, read at once since Alice has the chat open.
    await b.type('#composer-input', 'Yes');
    await a.locator('#typing', { hasText: 'bob is typing' }).waitFor(WAIT);
    await b.fill('#composer-input', 'Yes! Just got here, what is up?');
    await b.press('#composer-input', 'Enter');
    await received(a, 'Just got here');
    await ticks(b, 'Just got here', 'read');

    // The socket drops: the client reconnects with backoff and goes on.
    await a.evaluate(() =>
      (
        globalThis as unknown as { parley: { client: { socket: { close(code: number): void } } } }
      ).parley.client.socket.close(4000),
    );
    await a.locator('#conn-status[data-state="online"]').waitFor(WAIT);

    // A group: Alice creates it (REST), Bob sees it appear and gets the message.
    await a.click('#new-group summary');
    await a.fill('#group-name', 'Weekend trip');
    await a.fill('#group-members', 'bob, carol');
    await a.click('#new-group-form button');
    await a.locator('#chat-sub', { hasText: 'bob' }).waitFor(WAIT);
    await send(a, 'Hello team, who is in for Saturday?');
    await ticks(a, 'Hello team', 'accepted');
    const group = b.locator('.conv', { hasText: 'Weekend trip' });
    await group.waitFor(WAIT);
    await group.click();
    await b
      .locator('.msg:not(.mine)', { hasText: 'Hello team' })
      .locator('.from', { hasText: 'alice' })
      .waitFor(WAIT);
    await send(b, 'Count me in!');
    await received(a, 'Count me in!');

    // Bob closes his tab; Alice writes; it stays accepted while he is away.
    await b.close();
    await a.click('.conv[data-key="direct:bob"]');
    await send(a, 'See you at 9 at the station');
    await ticks(a, 'See you at 9', 'accepted');
    await a.waitForTimeout(1500);
    expect(
      await a.locator('.msg.mine', { hasText: 'See you at 9' }).locator('.ticks').getAttribute('data-status'),
    ).toBe('accepted');

    // Bob comes back in a new tab: his history is there, he catches up (GET /v1/messages) and acks.
    const syncCall = bob.waitForEvent('response', {
      predicate: (r) => r.url().includes('/v1/messages'),
      ...WAIT,
    });
    b = await signIn(bob, 'bob');
    expect((await syncCall).status()).toBe(200);
    await b.locator('.conv[data-key="direct:alice"] .badge', { hasText: '1' }).waitFor(WAIT);
    await ticks(a, 'See you at 9', 'delivered');
    await b.click('.conv[data-key="direct:alice"]');
    await received(b, 'Hi Bob! Are you around?'); // from local storage
    await received(b, 'See you at 9 at the station'); // caught up
    await ticks(a, 'See you at 9', 'read');
    expect(await b.locator('.msg').count()).toBe(3); // each message once (dedup by mid)

    if (process.env.PARLEY_SCREENSHOT) {
      const file = path.resolve(ROOT, process.env.PARLEY_SCREENSHOT);
      mkdirSync(path.dirname(file), { recursive: true });
      await a.locator('#chat-sub[data-online="true"]').waitFor(WAIT);
      await b.fill('#composer-input', 'Great, I will bring the map'); // a typing indicator in the picture
      await a.locator('#typing', { hasText: 'bob is typing' }).waitFor(WAIT);
      await a.setViewportSize({ width: 1000, height: 520 });
      await a.screenshot({ path: file });
    }
  }, 60_000);

  type PageState = {
    parley: {
      client: {
        outbox: Map<string, unknown>;
        socket: { send(data: string): void };
        send(to: string, body: unknown, chat: string, id: string): unknown;
        rest(method: string, path: string): Promise<unknown>;
        dispatchEvent(event: Event): boolean;
        blocks(): Promise<string[]>;
        report(user: string, reason: string): Promise<unknown>;
      };
      state: {
        me: string;
        open: string;
        store: {
          messages: Record<string, Array<{ id?: string; mid?: string; text: string; sentAt: number }>>;
        };
      };
    };
  };

  it('keeps a read receipt the socket never carried and sends it after the page is opened again', async () => {
    const [carolContext, daveContext] = [await browser.newContext(), await browser.newContext()];
    try {
      const c = await signIn(carolContext, 'carol3');
      let d = await signIn(daveContext, 'dave3');
      await c.fill('#new-chat-user', 'dave3');
      await c.press('#new-chat-user', 'Enter');
      await send(c, 'Read me, please');
      await ticks(c, 'Read me', 'delivered');
      // Dave's connection dies without a close (a network gone): what the page sends goes nowhere,
      // and the client does not know yet (the ping finds out only later).
      await d.evaluate(() => {
        (globalThis as unknown as PageState).parley.client.socket.send = () => undefined;
      });
      await d.click('.conv[data-key="direct:carol3"]');
      await received(d, 'Read me, please');
      await d.waitForFunction(() => (globalThis as unknown as PageState).parley.client.outbox.size === 1);
      // Dave closes the tab before the read was accepted, and opens Parley again later.
      await d.close();
      d = await signIn(daveContext, 'dave3');
      await ticks(c, 'Read me', 'read');
    } finally {
      await carolContext.close();
      await daveContext.close();
    }
  }, 60_000);

  /** What the page's global scope offers beyond `PageState` (the test compiles without the DOM's types). */
  type PageGlobals = PageState & {
    requestAnimationFrame(next: () => void): number;
    getSelection(): { selectAllChildren(node: unknown): void; toString(): string };
  };

  /** Draws the page again (a typing notice from `peer` changes the list) and lets two frames pass. */
  const drawAgain = (page: Page, peer: string) =>
    page.evaluate(async (from) => {
      const scope = globalThis as unknown as PageGlobals;
      const typing = { type: 'typing', from, to: scope.parley.state.me, chat: 'direct' };
      scope.parley.client.dispatchEvent(new CustomEvent('typing', { detail: typing }));
      await new Promise<void>((done) => scope.requestAnimationFrame(() => scope.requestAnimationFrame(done)));
    }, peer);

  it('opens the conversation clicked, and keeps a selection, while the page draws again', async () => {
    await inNewContext(async (context) => {
      const g = await signIn(context, 'gina5');
      for (const peer of ['hank5', 'ivy5']) {
        await g.fill('#new-chat-user', peer);
        await g.press('#new-chat-user', 'Enter');
      }
      await g.locator('#chat-title', { hasText: 'ivy5' }).waitFor(WAIT);
      // Anything that changes the list (a message, a receipt, a presence poll) draws it again: here
      // between the press and the release of a click.
      const box = (await g.locator('.conv[data-key="direct:hank5"] .conv-name').boundingBox())!;
      await g.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
      await g.mouse.down();
      await drawAgain(g, 'ivy5');
      await g.mouse.up();
      await g.locator('#chat-title', { hasText: 'hank5' }).waitFor(WAIT);

      // A message's text selected (to copy it) stays selected while the page draws again.
      await send(g, 'Copy this address: 1 Main St');
      await ticks(g, 'Copy this', 'accepted');
      await g
        .locator('.msg.mine .text', { hasText: 'Copy this' })
        .evaluate((text) => (globalThis as unknown as PageGlobals).getSelection().selectAllChildren(text));
      await drawAgain(g, 'hank5');
      const selected = await g.evaluate(() =>
        (globalThis as unknown as PageGlobals).getSelection().toString(),
      );
      expect(selected).toBe('Copy this address: 1 Main St');
    });
  }, 60_000);

  it('keeps what one tab of a user sent when another tab of the same user stores its own conversations', async () => {
    await inNewContext(async (context) => {
      // One context: one localStorage, as two tabs of one browser have.
      const first = await signIn(context, 'kim6');
      const second = await signIn(context, 'kim6');
      await first.fill('#new-chat-user', 'lee6');
      await first.press('#new-chat-user', 'Enter');
      await send(first, 'Sent from the first tab');
      await ticks(first, 'Sent from the first tab', 'accepted');
      await first.waitForFunction(() =>
        (globalThis as unknown as { localStorage: { getItem(key: string): string | null } }).localStorage
          .getItem('parley:v1:kim6')
          ?.includes('Sent from the first tab'),
      );
      await first.close();
      // The second tab goes on (a presence poll, a typing notice): it stores what it holds.
      await drawAgain(second, 'lee6');
      await second.waitForTimeout(300); // past the save that follows a change (100 ms)
      // The user opens Parley again in a third tab: what the first tab sent is there.
      const third = await signIn(context, 'kim6');
      await third.click('.conv[data-key="direct:lee6"]');
      await ticks(third, 'Sent from the first tab', 'accepted');
      // And the second tab shows it too, without a reload.
      await second.click('.conv[data-key="direct:lee6"]');
      await ticks(second, 'Sent from the first tab', 'accepted');
    });
  }, 60_000);

  it('opens one connection when the sign-in button is pressed twice', async () => {
    await inNewContext(async (context) => {
      const page = await openPage(context, 'mo7');
      let sockets = 0;
      page.on('websocket', () => (sockets += 1));
      await page.fill('#login-user', 'mo7');
      await page.dblclick('#login-form button');
      await page.locator('#conn-status[data-state="online"]').waitFor(WAIT);
      await page.waitForTimeout(1000); // a second sign-in would have connected by now
      expect(sockets).toBe(1);
    });
  }, 60_000);

  it('blocks and unblocks the user of the open chat from its header, and remembers the block on the server', async () => {
    await inNewContext(async (context) => {
      let n = await signIn(context, 'nia7');
      await n.fill('#new-chat-user', 'otto7');
      await n.press('#new-chat-user', 'Enter');
      const blocks = (page: Page) =>
        page.evaluate(() => (globalThis as unknown as PageState).parley.client.blocks());
      await n.click('#block-toggle');
      await n.locator('#toast', { hasText: 'You blocked otto7' }).waitFor(WAIT);
      await n.locator('#block-toggle', { hasText: 'Unblock' }).waitFor(WAIT);
      expect(await blocks(n)).toEqual(['otto7']);

      // Opened again (another tab), the page asks the server and shows the block.
      await n.close();
      n = await signIn(context, 'nia7');
      await n.click('.conv[data-key="direct:otto7"]');
      await n.locator('#block-toggle', { hasText: 'Unblock' }).waitFor(WAIT);
      await n.click('#block-toggle');
      await n.locator('#block-toggle', { hasText: /^Block$/ }).waitFor(WAIT);
      expect(await blocks(n)).toEqual([]);

      // A chat with oneself (a note from another device) offers neither.
      await n.evaluate(() =>
        (globalThis as unknown as PageState).parley.client.send(
          'nia7',
          { text: 'note' },
          'direct',
          'self-note',
        ),
      );
      await n.click('.conv[data-key="direct:nia7"]');
      await n.locator('#messages .msg', { hasText: 'note' }).first().waitFor(WAIT);
      expect([await n.isVisible('#block-toggle'), await n.isVisible('#report-toggle')]).toEqual([
        false,
        false,
      ]);
    });
  }, 60_000);

  /** The reports `reporter` filed, as group-ms's moderator API (internal secret only) lists them. */
  async function reportsBy(reporter: string): Promise<Array<Record<string, unknown>>> {
    const response = await fetch(`http://127.0.0.1:${fleet.ports.groupMs}/internal/reports`, {
      headers: { 'x-parley-internal-secret': 'parley-dev-internal-secret' },
    });
    expect(response.status).toBe(200);
    const { reports } = (await response.json()) as { reports: Array<Record<string, unknown>> };
    return reports.filter((report) => report.reporter === reporter);
  }

  it('reports the user of the open chat from its header with a reason, a comment and their messages, kept through redraws', async () => {
    await inNewContext(async (pc) => {
      await inNewContext(async (qc) => {
        const q = await signIn(qc, 'quin9');
        await q.fill('#new-chat-user', 'pia9');
        await q.press('#new-chat-user', 'Enter');
        await send(q, 'Cheap watches, today only');
        await ticks(q, 'Cheap watches', 'accepted');
        // A body with more than text (another client's): the report quotes it whole, as received.
        await q.evaluate(() =>
          (globalThis as unknown as PageState).parley.client.send(
            'pia9',
            { text: 'Click here', link: 'https://watches.example' },
            'direct',
            'link1',
          ),
        );
        const p = await signIn(pc, 'pia9');
        await p.click('.conv[data-key="direct:quin9"]');
        await received(p, 'Click here');
        expect(await p.isHidden('#report-form')).toBe(true);

        await p.click('#report-toggle');
        await p.locator('#report-form', { hasText: 'Report quin9 to the moderators' }).waitFor(WAIT);
        await p.selectOption('#report-reason', 'spam');
        await p.fill('#report-comment', 'Sells watches.\nTwice today.');
        await p.locator('#report-evidence', { hasText: 'last 2 messages' }).waitFor(WAIT);
        // Half-filled, the chat is drawn again (a message arrives, a typing notice): the form stays as typed.
        await send(q, 'Last chance!');
        await received(p, 'Last chance!');
        await drawAgain(p, 'quin9');
        await p.locator('#report-evidence', { hasText: 'last 3 messages' }).waitFor(WAIT);
        expect(await p.inputValue('#report-reason')).toBe('spam');
        expect(await p.inputValue('#report-comment')).toBe('Sells watches.\nTwice today.');
        // Another chat hides it; back here, it is there as left.
        await p.fill('#new-chat-user', 'rex9');
        await p.press('#new-chat-user', 'Enter');
        await p.locator('#chat-title', { hasText: 'rex9' }).waitFor(WAIT);
        expect(await p.isHidden('#report-form')).toBe(true);
        await p.click('.conv[data-key="direct:quin9"]');
        await p.locator('#report-form').waitFor(WAIT);
        expect(await p.inputValue('#report-comment')).toBe('Sells watches.\nTwice today.');

        await p.click('#report-send');
        await p.locator('#toast', { hasText: 'Reported quin9 to the moderators' }).waitFor(WAIT);
        await p.locator('#report-form').waitFor({ state: 'hidden', ...WAIT });
        const quoted = await p.evaluate(() =>
          (globalThis as unknown as PageState).parley.state.store.messages['direct:quin9']!.map(
            ({ mid, sentAt }) => ({ mid, sentAt }),
          ),
        );
        expect(quoted.map(({ mid }) => mid)).toEqual([
          expect.stringMatching(/^quin9:/),
          'quin9:link1',
          expect.stringMatching(/^quin9:/),
        ]);
        expect(await reportsBy('pia9')).toEqual([
          {
            id: expect.any(String),
            position: expect.any(Number),
            reporter: 'pia9',
            user: 'quin9',
            reason: 'spam',
            comment: 'Sells watches.\nTwice today.',
            messages: [
              { ...quoted[0], body: { text: 'Cheap watches, today only' } },
              { ...quoted[1], body: { text: 'Click here', link: 'https://watches.example' } },
              { ...quoted[2], body: { text: 'Last chance!' } },
            ],
            at: expect.any(Number),
          },
        ]);
        // Opened again, the form is empty.
        await p.click('#report-toggle');
        expect(await p.inputValue('#report-reason')).toBe('');
        expect(await p.inputValue('#report-comment')).toBe('');
      });
    });
  }, 60_000);

  it("shows the server's refusal of a report in a toast, at once, and keeps what was typed", async () => {
    await inNewContext(async (context) => {
      const s = await signIn(context, 'sam9');
      await s.fill('#new-chat-user', 'tess9');
      await s.press('#new-chat-user', 'Enter');
      // The day's 20 reports, filed already.
      await s.evaluate(async () => {
        const { client } = (globalThis as unknown as PageState).parley;
        for (let i = 0; i < 20; i++) await client.report('tess9', 'other');
      });
      await s.click('#report-toggle');
      await s.selectOption('#report-reason', 'harassment');
      await s.fill('#report-comment', 'Once more');
      const started = Date.now();
      await s.click('#report-send');
      await s
        .locator('#toast', { hasText: /Could not report tess9: at most 20 reports a day; retry in \d+ s/ })
        .waitFor(WAIT);
      expect(Date.now() - started).toBeLessThan(5000); // not tried again for 90 s first
      expect(await s.inputValue('#report-comment')).toBe('Once more');
      expect(await reportsBy('sam9')).toHaveLength(20);
    });
  }, 60_000);

  it('counts a receipt that comes before its message was accepted (the mid is known before the first hello)', async () => {
    await inNewContext(async (context) => {
      const page = await openPage(context, 'gus8');
      // The socket stays closed: nothing is sent, no hello comes, only what the test hands the page.
      await page.evaluate(() => {
        const scope = globalThis as unknown as { WebSocket: unknown };
        scope.WebSocket = class {
          readyState = 0;
          send() {}
          close() {}
          addEventListener() {}
        };
      });
      await page.fill('#login-user', 'gus8');
      await page.click('#login-form button');
      await page.fill('#new-chat-user', 'hal8');
      await page.press('#new-chat-user', 'Enter');
      await send(page, 'Sent before any hello');
      await page.locator('.msg.mine .ticks[data-status="pending"]').waitFor(WAIT);
      // The message went out once on a socket now gone; its receipt comes before its `accepted`.
      await page.evaluate(() => {
        const { client, state } = (globalThis as unknown as PageState).parley;
        const msg = state.store.messages['direct:hal8']!.at(-1)!;
        const receipt = {
          type: 'receipt',
          mid: 'r1',
          mids: [`gus8:${msg.id}`],
          by: 'hal8',
          status: 'delivered',
        };
        client.dispatchEvent(new CustomEvent('receipt', { detail: receipt }));
      });
      await ticks(page, 'Sent before any hello', 'delivered');
    });
  }, 60_000);

  it('stores a receipt, and a refusal that comes as a deliverable, before the client acks them', async () => {
    type Sent = { frame: { type: string; id?: string; mids?: string[] }; stored: string | null };
    type Gateway = { sent: Sent[]; receive(frame: unknown): void };
    type Scope = { gateway: Gateway; localStorage: { getItem(key: string): string | null } };
    await inNewContext(async (context) => {
      const page = await openPage(context, 'kim10');
      // The test plays the gateway: each frame the page sends is kept with what the page had stored then.
      await page.evaluate(() => {
        const scope = globalThis as unknown as Scope & { WebSocket: unknown };
        scope.WebSocket = class {
          readyState = 1;
          onmessage?: (event: { data: string }) => void;
          sent: Sent[] = [];
          constructor() {
            scope.gateway = this;
          }
          send(data: string) {
            this.sent.push({
              frame: JSON.parse(data),
              stored: scope.localStorage.getItem('parley:v1:kim10'),
            });
          }
          close() {}
          receive(frame: unknown) {
            this.onmessage?.({ data: JSON.stringify(frame) });
          }
        };
      });
      const receive = (frames: unknown[]) =>
        page.evaluate((all) => {
          for (const frame of all) (globalThis as unknown as Scope).gateway.receive(frame);
        }, frames);
      await page.fill('#login-user', 'kim10');
      await page.click('#login-form button');
      await page.waitForFunction(() => 'gateway' in globalThis);
      await receive([{ type: 'hello', user: 'kim10', connId: 'c1' }]);
      await page.locator('#conn-status[data-state="online"]').waitFor(WAIT);
      await page.fill('#new-chat-user', 'lee10');
      await page.press('#new-chat-user', 'Enter');
      for (const text of ['Delivered soon', 'Refused later']) await send(page, text);
      const sentIds = await page.waitForFunction(
        () => {
          const { sent } = (globalThis as unknown as Scope).gateway;
          const ids = sent.filter((s) => s.frame.type === 'message').map((s) => s.frame.id!);
          return ids.length === 2 && ids;
        },
        undefined,
        WAIT,
      );
      const [delivered, refused] = (await sentIds.jsonValue()) as string[];
      await receive([delivered, refused].map((id) => ({ type: 'accepted', id, mid: `kim10:${id}` })));
      await page.waitForTimeout(300); // what the accepted changed is stored by now
      await receive([
        {
          type: 'receipt',
          mid: 'srv-r1',
          status: 'delivered',
          mids: [`kim10:${delivered}`],
          by: 'lee10',
          at: 1,
        },
        { type: 'error', mid: 'srv-e1', id: refused, code: 'forbidden', message: 'lee10 blocked you' },
      ]);
      const storedAtAck = await page.waitForFunction(
        () => {
          const { sent } = (globalThis as unknown as Scope).gateway;
          const ack = sent.find((s) => s.frame.type === 'ack' && s.frame.mids!.includes('srv-e1'));
          return ack && ack.stored;
        },
        undefined,
        WAIT,
      );
      type Stored = { messages: Record<string, Array<{ id: string; status: string }>> };
      const stored = JSON.parse((await storedAtAck.jsonValue()) as string) as Stored;
      const statusOf = (id: string) => stored.messages['direct:lee10']!.find((m) => m.id === id)?.status;
      expect({ delivered: statusOf(delivered), refused: statusOf(refused) }).toEqual({
        delivered: 'delivered',
        refused: 'failed',
      });
    });
  }, 60_000);

  it('keeps a group message read when its sender left and sent it again: the repeat is not routed, and a refusal of it would not undo the read', async () => {
    const [erinContext, frankContext] = [await browser.newContext(), await browser.newContext()];
    try {
      const e = await signIn(erinContext, 'erin4');
      const f = await signIn(frankContext, 'frank4');
      await e.click('#new-group summary');
      await e.fill('#group-name', 'Book club');
      await e.fill('#group-members', 'frank4');
      await e.click('#new-group-form button');
      await e.locator('#chat-sub', { hasText: 'frank4' }).waitFor(WAIT);
      // Not waiting for its 'accepted' tick: frank4 is online, so 'delivered' may replace it at once.
      await send(e, 'Chapter one tonight');
      const group = f.locator('.conv', { hasText: 'Book club' });
      await group.waitFor(WAIT);
      await group.click();
      await received(f, 'Chapter one tonight');
      await ticks(e, 'Chapter one', 'read');
      // Erin leaves; then the same message goes again (its accepted was lost, so the outbox sends it
      // once more). The router routed it within the hour: the repeat is not routed again, so it is
      // not refused not_member although Erin is no member now.
      await e.evaluate(async () => {
        const { client, state } = (globalThis as unknown as PageState).parley;
        const groupId = state.open.slice('group:'.length);
        await client.rest('DELETE', `/v1/groups/${groupId}/members/erin4`);
        const msg = state.store.messages[state.open]!.find((m) => m.text === 'Chapter one tonight')!;
        client.send(groupId, { text: msg.text }, 'group', msg.id!);
      });
      await e.waitForFunction(() => (globalThis as unknown as PageState).parley.client.outbox.size === 0);
      const status = () =>
        e.locator('.msg.mine', { hasText: 'Chapter one' }).locator('.ticks').getAttribute('data-status');
      await e.waitForTimeout(1000);
      expect(await e.locator('#toast', { hasText: 'not_member' }).count()).toBe(0);
      expect(await status()).toBe('read');
      // A router that did not route the first (a restart, a rebalance) refuses the repeat: what a
      // receipt showed read stays so.
      await e.evaluate(() => {
        const { client, state } = (globalThis as unknown as PageState).parley;
        const msg = state.store.messages[state.open]!.find((m) => m.text === 'Chapter one tonight')!;
        const refusal = { type: 'error', id: msg.id, code: 'not_member', message: 'not a member of group' };
        client.dispatchEvent(new CustomEvent('rejected', { detail: refusal }));
      });
      await e.locator('#toast', { hasText: 'not_member' }).waitFor(WAIT);
      await e.waitForTimeout(300); // the list is drawn again after the toast
      expect(await status()).toBe('read');
    } finally {
      await erinContext.close();
      await frankContext.close();
    }
  }, 60_000);
});
