import { freePort, urlHost } from '../src/ports';

describe('freePort', () => {
  it('never hands out a port fetch refuses to reach ("bad port"), and draws again instead', async () => {
    await expect(fetch('http://127.0.0.1:10080/')).rejects.toMatchObject({ cause: { message: 'bad port' } });
    // freePort draws from 10,000 up, 22,000 wide: the first draw is 10080.
    const draws = [(10080 - 10_000 + 0.5) / 22_000];
    let drawn = 0;
    const random = () => (drawn++, draws.shift() ?? Math.random());
    const port = await freePort('127.0.0.1', random);
    expect(port).not.toBe(10080);
    expect(drawn).toBeGreaterThanOrEqual(2);
  });
});

describe('urlHost', () => {
  it('calls a wildcard on the loopback and brackets an IPv6 address for a URL', () => {
    expect(urlHost('127.0.0.1')).toBe('127.0.0.1');
    expect(urlHost('0.0.0.0')).toBe('127.0.0.1');
    expect(urlHost('::')).toBe('[::1]');
    expect(urlHost('::1')).toBe('[::1]');
    expect(urlHost('fd00::5')).toBe('[fd00::5]');
    expect(urlHost('localhost')).toBe('localhost');
  });
});
