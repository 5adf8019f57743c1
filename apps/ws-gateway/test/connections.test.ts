import type { Duplex } from 'node:stream';
import type WebSocket from 'ws';
import { ClientConnection, ConnectionRegistry } from '../src/connections';
import { TokenBucket } from '@parley/service-kit';

const connection = (user: string, id: string) =>
  new ClientConnection(
    id,
    user,
    undefined,
    {} as WebSocket,
    new TokenBucket(1, 1),
    new TokenBucket(1, 1),
    undefined,
    1024,
    {} as Duplex,
  );
const ids = (conns: Iterable<ClientConnection>) => [...conns].map((c) => c.id).sort();

describe('ConnectionRegistry', () => {
  it('holds one socket or several per user, counts them, and forgets a user with none left', () => {
    const registry = new ConnectionRegistry();
    const [a1, a2, a3, b1] = [
      connection('ann', 'a1'),
      connection('ann', 'a2'),
      connection('ann', 'a3'),
      connection('bo', 'b1'),
    ];
    registry.add(a1);
    registry.add(b1);
    expect(ids(registry.of('ann'))).toEqual(['a1']);
    registry.add(a2);
    registry.add(a3);
    expect(registry.size).toBe(4);
    expect(ids(registry.of('ann'))).toEqual(['a1', 'a2', 'a3']);
    expect(ids(registry.of('ann', ['a3', 'a1', 'zz']))).toEqual(['a1', 'a3']);
    expect(ids(registry.all())).toEqual(['a1', 'a2', 'a3', 'b1']);

    registry.remove(a2);
    registry.remove(a2); // already gone: not counted twice
    registry.remove(a1);
    expect(registry.size).toBe(2);
    expect(ids(registry.of('ann'))).toEqual(['a3']);
    registry.remove(a3);
    expect(registry.of('ann')).toEqual([]);
    expect(ids(registry.all())).toEqual(['b1']);
    expect(registry.size).toBe(1);
  });

  it('replaces a connection added again under its id without counting it twice', () => {
    const registry = new ConnectionRegistry();
    const first = connection('cy', 'c1');
    const again = connection('cy', 'c1');
    registry.add(first);
    registry.add(connection('cy', 'c2'));
    registry.add(again);
    expect(registry.size).toBe(2);
    expect(registry.of('cy', ['c1'])[0]).toBe(again);
  });

  it('hands out lists that later changes leave alone', () => {
    const registry = new ConnectionRegistry();
    registry.add(connection('di', 'd1'));
    const held = registry.of('di');
    registry.add(connection('di', 'd2'));
    expect(ids(held)).toEqual(['d1']);
  });
});
