import { startedWith } from '../src/bootstrap';

// A started service logged only fastify's 'Server listening at ...' (once per start attempt): no
// line said the start was over, nor which Kafka, Redis or Postgres it had reached.
describe('startedWith (the fields of the `started` line)', () => {
  it('names the ports and the dependencies reached, with the passwords in their URLs replaced', () => {
    const fields = startedWith(
      {
        HOST: '0.0.0.0',
        PORT: 9105,
        KAFKA_BROKERS: 'kafka-0:9093,kafka-1:9093',
        DATABASE_URL: 'postgres://parley:S3cret-pw@db.internal:5432/parley?sslmode=verify-full',
        INTERNAL_SECRET: 'an-internal-secret-of-ours',
      },
      ['PORT', 'DATABASE_URL', 'PGLITE_DATA_DIR', 'INTERNAL_SECRET'],
    );
    expect(fields).toEqual({
      host: '0.0.0.0',
      port: 9105,
      kafka: 'kafka-0:9093,kafka-1:9093',
      database: 'postgres://parley:***@db.internal:5432/parley?sslmode=verify-full',
    });
    expect(JSON.stringify(fields)).not.toMatch(/S3cret|an-internal-secret/);
  });

  it('says what stands in for an optional store left unset, and leaves out what the app lacks', () => {
    expect(startedWith({ PORT: 9103, KAFKA_BROKERS: 'k:9092' }, ['PORT', 'REDIS_URL'])).toEqual({
      port: 9103,
      kafka: 'k:9092',
      redis: 'in-process store',
    });
    expect(
      startedWith({ PORT: 9103, REDIS_URL: 'rediss://:pw-only@redis.internal:6380/2' }, [
        'PORT',
        'REDIS_URL',
      ]),
    ).toEqual({ port: 9103, redis: 'rediss://:***@redis.internal:6380/2' });
    expect(startedWith({ PORT: 8080, INTERNAL_PORT: 9080 })).toEqual({ port: 8080, internalPort: 9080 });
  });
});
