import { fleetSuite } from './helpers';

describe('fleet: HOST=:: (every interface, IPv6 as well as IPv4)', () => {
  const { clients, fleet } = fleetSuite({ host: '::' });

  it('prints URLs that reach it, and its services reach each other: a message crosses it, a REST call reaches group-ms', async () => {
    const { urls, ports } = fleet();
    // `http://:::8081` is no URL: the services calling each other at it reached nothing.
    expect(urls.rest).toBe(`http://[::1]:${ports.restGateway}`);
    const alice = await clients.connect('alice');
    const bob = await clients.connect('bob');
    alice.send({ type: 'message', id: 'c1', to: 'bob', body: 'hi' });
    expect(await bob.next((f) => f.type === 'message')).toMatchObject({ mid: 'alice:c1', body: 'hi' });
    const created = await clients.rest('alice', 'POST', '/v1/groups', { name: 'Team', members: ['bob'] });
    expect(created.status).toBe(201);
  });
});
