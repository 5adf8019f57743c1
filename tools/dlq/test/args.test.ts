import { parseCommand, UsageError } from '../src/args';
import { dlqNames } from '../src/dlq-tool';

describe('parseCommand', () => {
  it('reads list and replay with their options', () => {
    expect(parseCommand(['list', '--topic', 'parley.delivery.v1', '--max', '20'])).toEqual({
      command: 'list',
      topic: 'parley.delivery.v1',
      max: 20,
    });
    expect(
      parseCommand([
        'replay',
        '--topic',
        't.dlq',
        '--offsets',
        '3-9',
        '--error-contains',
        'timeout',
        '--dry-run',
      ]),
    ).toEqual({
      command: 'replay',
      topic: 't.dlq',
      offsets: { from: 3n, to: 9n },
      errorContains: 'timeout',
      dryRun: true,
      fromBeginning: false,
      force: false,
    });
  });

  it.each([
    ['7', { from: 7n, to: 7n }],
    ['7-', { from: 7n, to: undefined }],
    ['-7', { from: undefined, to: 7n }],
  ])('takes --offsets %s', (text, offsets) => {
    expect(parseCommand(['replay', '--topic', 't', `--offsets=${text}`])).toMatchObject({ offsets });
  });

  it('takes --offsets -TO as its own argument too, as the help writes it (not only --offsets=-TO)', () => {
    expect(parseCommand(['replay', '--topic', 't', '--offsets', '-7'])).toMatchObject({
      offsets: { from: undefined, to: 7n },
    });
    // A dashed word that is no offset is still an option, not the value.
    expect(() => parseCommand(['replay', '--topic', 't', '--offsets', '--force'])).toThrow(/--offsets/);
  });

  it.each([
    [[], /no command/],
    [['drop', '--topic', 't'], /unknown command 'drop'/],
    [['list'], /--topic is required/],
    [['list', '--topic'], /--topic/],
    [['list', '--topic', 't', '--max', '0'], /--max: '0'/],
    [['list', '--topic', 't', '--force'], /--force is for replay/],
    [['replay', '--topic', 't', '--max', '3'], /--max is for list/],
    [['replay', '--topic', 't', '--offsets', '9-3'], /9 is past 3/],
    [['replay', '--topic', 't', '--offsets', 'a-b'], /not FROM-TO/],
    [['replay', '--topic', 't', '--offsets', '-'], /not FROM-TO/],
    [['replay', '--topic', 't', '--bogus'], /^Unknown option '--bogus'$/],
    [['replay', '--topic', 't', 'extra'], /unexpected argument 'extra'/],
  ])('refuses %j in one line', (argv, message) => {
    let error: unknown;
    try {
      parseCommand(argv);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(UsageError);
    expect((error as Error).message).toMatch(message);
    expect((error as Error).message).not.toContain('\n');
  });
});

describe('dlqNames', () => {
  it('takes the source topic or its DLQ', () => {
    expect(dlqNames('parley.group.v1')).toEqual({ dlq: 'parley.group.v1.dlq', source: 'parley.group.v1' });
    expect(dlqNames('parley.group.v1.dlq')).toEqual({
      dlq: 'parley.group.v1.dlq',
      source: 'parley.group.v1',
    });
  });
});
