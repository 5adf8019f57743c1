import { randomBytes } from 'node:crypto';
import { RegisterDeviceBody } from '@parley/contracts';
import type { SqlDatabase } from '@parley/postgres';
import { testDatabases } from '@parley/postgres/testing';
import { createSqlDeviceStore, DeviceStore, MAX_DEVICES_PER_USER } from '../src/device-store';

describe.each(testDatabases())('device store on $name', (target) => {
  let db: SqlDatabase;
  let store: DeviceStore;
  beforeAll(async () => {
    db = await target.open();
    store = createSqlDeviceStore(db);
    await store.init();
    await store.init();
  });
  afterAll(() => target.dispose());

  it('registers, replaces and removes a user’s devices', async () => {
    await store.register('alice', 'phone', 'tok-1', 'android');
    await store.register('alice', 'tablet', 'tok-2', 'ios');
    await store.register('alice', 'phone', 'tok-3', 'android');
    expect(await store.devices('alice')).toEqual([
      { deviceId: 'phone', token: 'tok-3', platform: 'android' },
      { deviceId: 'tablet', token: 'tok-2', platform: 'ios' },
    ]);
    await store.remove('alice', 'tablet');
    await store.remove('bob', 'phone'); // someone else's device id: nothing happens to alice's
    expect((await store.devices('alice')).map((d) => d.deviceId)).toEqual(['phone']);
  });

  it('moves a token to the user who registered it last', async () => {
    await store.register('carol', 'shared', 'tok-shared', 'web');
    await store.register('dave', 'mine', 'tok-shared', 'web');
    expect(await store.devices('carol')).toEqual([]);
    expect(await store.devices('dave')).toEqual([{ deviceId: 'mine', token: 'tok-shared', platform: 'web' }]);
  });

  it('keeps a token with one owner when two accounts register it at the same moment', async () => {
    for (let round = 0; round < 10; round++) {
      const token = `tok-race-${round}`;
      await Promise.all(
        ['gus', 'hal', 'ivy', 'joy'].map((user) => store.register(user, `dev-${round}`, token, 'android')),
      );
      const owners = await Promise.all(['gus', 'hal', 'ivy', 'joy'].map((user) => store.devices(user)));
      expect(owners.flat().filter((d) => d.token === token)).toHaveLength(1);
    }
  });

  it('keeps the MAX_DEVICES_PER_USER devices registered last: one more drops the one not seen for longest', async () => {
    let clock = 1_000;
    const clocked = createSqlDeviceStore(db, () => clock++);
    const ids = Array.from({ length: MAX_DEVICES_PER_USER + 1 }, (_, i) => `d${String(i).padStart(2, '0')}`);
    for (const id of ids) await clocked.register('kim', id, `tok-kim-${id}`, 'android');
    expect((await clocked.devices('kim')).map((d) => d.deviceId)).toEqual(ids.slice(1));
    await clocked.register('kim', 'd01', 'tok-kim-d01', 'android'); // the app on d01 started again
    await clocked.register('kim', 'new', 'tok-kim-new', 'ios');
    const kept = (await clocked.devices('kim')).map((d) => d.deviceId);
    expect(kept).toHaveLength(MAX_DEVICES_PER_USER);
    expect(kept).toContain('d01');
    expect(kept).toContain('new');
    expect(kept).not.toContain('d02');
  });

  it('keeps at most MAX_DEVICES_PER_USER devices when the user registers several at the same moment', async () => {
    for (let i = 0; i < MAX_DEVICES_PER_USER; i++)
      await store.register('lea', `old-${i}`, `tok-lea-old-${i}`, 'android');
    // Each registration trims the others to the cap; at once, none saw the others' new rows.
    for (let round = 0; round < 5; round++) {
      await Promise.all(
        Array.from({ length: 8 }, (_, i) =>
          store.register('lea', `new-${round}-${i}`, `tok-lea-new-${round}-${i}`, 'android'),
        ),
      );
      expect(await store.devices('lea')).toHaveLength(MAX_DEVICES_PER_USER);
    }
  });

  it('registers, moves and forgets a token as long as the API takes (4,096 characters)', async () => {
    // Random printable ASCII: too varied to compress into an index entry, as a real token is.
    const token = [...randomBytes(RegisterDeviceBody.properties.token.maxLength!)]
      .map((byte) => String.fromCharCode(33 + (byte % 94)))
      .join('');
    await store.register('lou', 'phone', token, 'android');
    expect(await store.devices('lou')).toEqual([{ deviceId: 'phone', token, platform: 'android' }]);
    await store.register('max', 'phone', token, 'android'); // the phone signed in as max
    expect(await store.devices('lou')).toEqual([]);
    expect(await store.removeTokens('max', [token])).toBe(1);
  });

  it('forgets invalid tokens of that user only', async () => {
    await store.register('erin', 'a', 'tok-e1', 'android');
    await store.register('erin', 'b', 'tok-e2', 'android');
    await store.register('frank', 'a', 'tok-f1', 'android');
    expect(await store.removeTokens('erin', ['tok-e1', 'tok-f1'])).toBe(1);
    expect((await store.devices('erin')).map((d) => d.token)).toEqual(['tok-e2']);
    expect((await store.devices('frank')).map((d) => d.token)).toEqual(['tok-f1']);
    expect(await store.removeTokens('erin', [])).toBe(0);
  });

  it('forgets every device of an erased user, and nobody else’s', async () => {
    await store.register('gina', 'phone', 'tok-g1', 'android');
    await store.register('gina', 'web', 'tok-g2', 'web');
    await store.register('hugo', 'phone', 'tok-h1', 'ios');
    expect(await store.removeUser('gina')).toBe(2);
    expect(await store.devices('gina')).toEqual([]);
    expect(await store.devices('hugo')).toEqual([{ deviceId: 'phone', token: 'tok-h1', platform: 'ios' }]);
    expect(await store.removeUser('gina')).toBe(0);
  });
});
