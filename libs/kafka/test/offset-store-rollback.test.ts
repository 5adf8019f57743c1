import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { OffsetStore } from '../src/broker/log/offset-store';

// offsets.log is read by brokers on both sides of offset retention (the commit says "compatible both
// ways"). A broker from before it, run on a newer file (a rollback), appends commit lines without
// `t` and never writes `e: null` when members come back; the newer broker, started on that file
// again, must not take the group's stale empty time for how long it has been empty.

const logger = pino({ level: 'silent' });
const DAY = 24 * 60 * 60 * 1000;
const dirs: string[] = [];
afterAll(() => dirs.forEach((dir) => fs.rmSync(dir, { recursive: true, force: true })));

describe('offset store: a file an older broker appended to after a rollback', () => {
  it('keeps the offsets a group committed under the older broker, though its last empty time is past the retention', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'parley-offsets-rollback-'));
    dirs.push(dir);
    const eightDaysAgo = Date.now() - 8 * DAY;
    fs.writeFileSync(
      path.join(dir, 'offsets.log'),
      [
        // Written by the newer broker: committed, then empty, eight days ago.
        { g: 'router', c: [['parley.inbound.v1', 0, 5, null]], t: eightDaysAgo },
        { g: 'router', c: [], e: eightDaysAgo },
        // Rolled back: the older broker's consumer rejoined and committed (no `t`, no `e: null`).
        { g: 'router', c: [['parley.inbound.v1', 0, 9000, null]] },
      ]
        .map((line) => JSON.stringify(line) + '\n')
        .join(''),
    );
    // Upgraded again: the broker's start (startBroker: expire with no group holding members yet).
    const store = new OffsetStore(dir, logger);
    expect(store.expire(7 * DAY, () => false)).toEqual([]);
    expect(store.get('router', 'parley.inbound.v1', 0)?.offset).toBe(9000);
    store.close();
  });
});
