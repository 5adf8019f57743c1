import { ClientPool, type Target } from '../src/clients';
import { startRelay } from '../src/relay';

/** An unsigned JWT-shaped token: the relay reads `sub` and checks nothing. */
const token = async (user: string) =>
  `x.${Buffer.from(JSON.stringify({ sub: user })).toString('base64url')}.x`;

/** Blocks this process's event loop for `ms`: the load generator falling behind its schedule. */
const stall = (ms: number) => {
  const until = Date.now() + ms;
  while (Date.now() < until);
};

describe('ClientPool (open-loop load against the raw ws relay)', () => {
  let relay: { url: string; close(): Promise<void> };
  let pool: ClientPool;

  beforeAll(async () => {
    relay = await startRelay();
    const target: Target = { name: 'relay', wsUrl: relay.url, token };
    pool = new ClientPool(target, { bodyBytes: 16, ackEveryMs: 50 });
    await pool.connect(Array.from({ length: 10 }, (_, i) => ({ user: `u${i}`, partner: `u${i ^ 1}` })));
  });

  afterAll(async () => {
    await pool.close();
    await relay.close();
  });

  /**
   * Waits for every reply, up to 10 s. Not the bench's 500 ms of quiet: on a loaded machine this
   * process (relay and clients both) can go that long without a turn, and stop waiting with replies
   * still on the way (715 of 1,000 in a full run beside other work).
   */
  const settle = (done: () => boolean) => pool.settle(done, 10_000, 10_000);

  it('measures latency from the intended send time: a stall of the generator shows (no coordinated omission)', async () => {
    const c = pool.beginStep();
    // 1,000/s for 1 s; the generator's own loop is blocked for 300 ms a third of the way in, so
    // about 300 messages go out up to 300 ms after they were due.
    setTimeout(() => stall(300), 300);
    const r = await pool.runRate(1000, 1000);
    await settle(() => c.received >= c.sent);
    expect(c.received).toBe(c.sent);
    const latency = pool.latency();
    expect(latency.p99).toBeGreaterThanOrEqual(200);
    expect(r.maxLagMs).toBeGreaterThanOrEqual(200);
  });

  it('adds no lag of its own when the loop keeps up', async () => {
    const c = pool.beginStep();
    const r = await pool.runRate(500, 500);
    await settle(() => c.received >= c.sent);
    expect(c.received).toBe(c.sent);
    // Well under the stall the test above makes (300 ms), and above a pause of a busy CI machine.
    expect(r.maxLagMs).toBeLessThan(250);
  });
});
