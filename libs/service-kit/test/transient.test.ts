import { DatabaseError } from 'pg';
import {
  KafkaJSConnectionError,
  KafkaJSNumberOfRetriesExceeded,
  KafkaJSProtocolError,
  KafkaJSSASLAuthenticationError,
} from 'kafkajs';
import { isTransient, TransientError } from '@parley/service-kit';

// ioredis does not export it from its index.
const MaxRetriesPerRequestError = require('ioredis/built/errors/MaxRetriesPerRequestError').default;

const sqlError = (code: string) => Object.assign(new DatabaseError('db says no', 0, 'error'), { code });
// What kafkajs raises for an error code the broker returns: retriable as the code says.
// kafkajs builds it with the broker's message; its type declares a constructor without one.
const SaslFailed = KafkaJSSASLAuthenticationError as unknown as new (message: string) => Error;
const kafkaRefusal = (type: string, code: number, retriable: boolean) =>
  new KafkaJSProtocolError(Object.assign(new Error(`broker says ${type}`), { type, code, retriable }));

describe('isTransient', () => {
  it('takes a dependency that is down for transient', () => {
    // What ioredis rejects a command with once Redis has been away for maxRetriesPerRequest reconnections.
    const redisDown = new MaxRetriesPerRequestError(20);
    const kafkaClosed = new KafkaJSConnectionError('Connection timeout', { broker: 'kafka-0:9092' });
    const cases: Array<[string, unknown]> = [
      ['redis away', redisDown],
      ['kafka connection lost', kafkaClosed],
      [
        'kafka retries exhausted',
        new KafkaJSNumberOfRetriesExceeded(kafkaClosed, { retryCount: 5, retryTime: 1 }),
      ],
      // What connect() fails with when the database's address stops answering (a failed-over IP).
      [
        'host unreachable',
        Object.assign(new Error('connect EHOSTUNREACH 10.0.0.7:5432'), { code: 'EHOSTUNREACH' }),
      ],
      ['network unreachable', Object.assign(new Error('connect ENETUNREACH'), { code: 'ENETUNREACH' })],
      ['postgres too many connections', sqlError('53300')],
      ['postgres shutting down', sqlError('57P01')],
      ['postgres connection failure', sqlError('08006')],
      ['postgres deadlock', sqlError('40P01')],
      ['redis loading', new Error('LOADING Redis is loading the dataset in memory')],
      ['redis full', new Error("OOM command not allowed when used memory > 'maxmemory'. script: 299e00")],
      ['redis snapshot failing', new Error('MISCONF Redis is configured to save RDB snapshots, but ...')],
      ['redis a replica now', new Error("READONLY You can't write against a read only replica.")],
      ['postgres read-only after a failover', sqlError('25006')],
      ['postgres statement timeout', sqlError('57014')],
      [
        'wrapped',
        new Error('handler failed', { cause: Object.assign(new Error('x'), { code: 'ECONNRESET' }) }),
      ],
      ['marked', new TransientError('gateway busy')],
      ['any of several', new AggregateError([new TypeError('x'), sqlError('08001')])],
      // What ioredis rejects a MULTI with when Redis refused its commands as it queued them.
      [
        'redis transaction refused for memory',
        Object.assign(new Error('EXECABORT Transaction discarded because of previous errors.'), {
          previousErrors: [new Error("OOM command not allowed when used memory > 'maxmemory'.")],
        }),
      ],
      [
        'redis transaction cut by a reconnect',
        Object.assign(new Error('EXECABORT Transaction discarded because of previous errors.'), {
          previousErrors: [
            Object.assign(new Error('Command aborted due to connection close'), { name: 'AbortError' }),
          ],
        }),
      ],
    ];
    expect(cases.filter(([, err]) => !isTransient(err)).map(([name]) => name)).toEqual([]);
  });

  it("takes a refusal of the service's credentials or grants for transient: no record causes it, the operator mends it", () => {
    // kafkajs marks these not retriable; as a record's fault each record would be parked on the DLQ.
    const cases: Array<[string, unknown]> = [
      ['kafka topic acl', kafkaRefusal('TOPIC_AUTHORIZATION_FAILED', 29, false)],
      ['kafka group acl', kafkaRefusal('GROUP_AUTHORIZATION_FAILED', 30, false)],
      ['kafka cluster acl', kafkaRefusal('CLUSTER_AUTHORIZATION_FAILED', 31, false)],
      ['kafka sasl', new SaslFailed('SASL SCRAM SHA512 authentication failed')],
      ['postgres password rotated', sqlError('28P01')],
      ['postgres role without the grant', sqlError('42501')],
      ['redis acl', new Error("NOPERM User parley has no permissions to run the 'evalsha' command")],
      ['redis password rotated', new Error('WRONGPASS invalid username-password pair or user is disabled.')],
      ['redis password needed', new Error('NOAUTH Authentication required.')],
    ];
    expect(cases.filter(([, err]) => !isTransient(err)).map(([name]) => name)).toEqual([]);
  });

  it('takes a fault of the record itself for poison', () => {
    const tooLarge = kafkaRefusal('MESSAGE_TOO_LARGE', 10, false);
    const cases: Array<[string, unknown]> = [
      ['bug', new TypeError("Cannot read properties of undefined (reading 'user')")],
      ['unique violation', sqlError('23505')],
      ['bad input to the database', sqlError('22P02')],
      ['a statement the database cannot parse', sqlError('42601')],
      ['record too large for kafka', tooLarge],
      ['nothing', undefined],
      [
        'redis transaction refused for a wrong command',
        Object.assign(new Error('EXECABORT Transaction discarded because of previous errors.'), {
          previousErrors: [new Error("ERR wrong number of arguments for 'hdel' command")],
        }),
      ],
    ];
    expect(cases.filter(([, err]) => isTransient(err)).map(([name]) => name)).toEqual([]);
  });
});
