import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { createLogger, logUnhandledRejections, type Service } from '@parley/service-kit';

type ToThread = { type: 'stop' } | { type: 'gc' };
/** What an error says besides its message: a listen's `code`, `address` and `port` (a port taken). */
type ErrorDetails = { code?: string; address?: string; port?: number };
type FromThread =
  | { type: 'started' }
  | { type: 'stopped' }
  | ({ type: 'failed'; message: string; stack?: string } & ErrorDetails);

export interface ThreadServiceOptions {
  /** Called once when the thread fails or exits after it started; by default the error is thrown here. */
  onCrash?: (err: Error) => void;
}

export interface ThreadService extends Service {
  /** Asks the thread for a full GC, where the process runs with --expose-gc (memory benchmarks). */
  collectGarbage(): void;
}

/**
 * A service that runs on a worker thread of its own, so that a fleet in one process can use a
 * second core. `entry` is a module (TypeScript, or a bundle's JavaScript) that calls
 * `serveOnThisThread`; `data` (anything structured-cloneable) is what it builds the service from.
 * `start()` resolves once the service has started there, and `stop()` stops it as the service
 * itself stops, then ends the thread.
 *
 * After the start, a thread that fails takes the process down with it by default (`onCrash`), as
 * the same error would have if the service had run on the main thread.
 */
export function threadService(
  name: string,
  entry: string,
  data: unknown,
  options: ThreadServiceOptions = {},
): ThreadService {
  const crash =
    options.onCrash ??
    ((err: Error) => {
      throw err;
    });
  // A TypeScript entry: the thread registers tsx itself, so this works under Jest as well. A
  // JavaScript one is a bundle (tools/bench/src/bundle.ts), loaded as it is.
  const boot = entry.endsWith('.ts')
    ? `require(${JSON.stringify(require.resolve('tsx/cjs/api'))}).register(); require(${JSON.stringify(entry)});`
    : `require(${JSON.stringify(entry)});`;
  let worker: Worker | undefined;
  let exited = false;
  let stopping: Promise<void> | undefined;

  const watch = (thread: Worker) => {
    let crashed = false;
    const report = (err: Error) => {
      if (crashed || stopping) return;
      crashed = true;
      crash(err);
    };
    thread.on('error', (err) => report(new Error(`${name} thread failed: ${err.message}`, { cause: err })));
    thread.on('exit', (code) => {
      exited = true;
      report(new Error(`${name} thread exited with ${code}`));
    });
  };

  const stopThread = async (thread: Worker) => {
    if (!exited) {
      const replied = new Promise<FromThread | undefined>((resolve) => {
        thread.on('message', (message: FromThread) => {
          if (message.type !== 'started') resolve(message);
        });
        thread.once('exit', () => resolve(undefined));
      });
      thread.postMessage({ type: 'stop' } satisfies ToThread);
      const reply = await replied;
      await thread.terminate();
      if (!reply) throw new Error(`${name} thread exited while it was stopping`);
      if (reply.type === 'failed') throw threadError(name, reply);
    }
  };

  return {
    async start() {
      const thread = new Worker(boot, { eval: true, workerData: data, name });
      worker = thread;
      exited = false;
      stopping = undefined;
      await new Promise<void>((resolve, reject) => {
        const settle = (err?: Error) => {
          thread.off('message', onMessage).off('error', settle).off('exit', onExit);
          if (err) reject(err);
          else resolve();
        };
        const onMessage = (message: FromThread) => {
          if (message.type === 'started') settle();
          else if (message.type === 'failed') settle(threadError(name, message));
        };
        const onExit = (code: number) =>
          settle(new Error(`${name} thread exited with ${code} before it started`));
        thread.on('message', onMessage).on('error', settle).on('exit', onExit);
      }).catch(async (err) => {
        worker = undefined;
        await thread.terminate();
        throw err;
      });
      watch(thread);
    },
    stop() {
      const thread = worker;
      if (!thread) return stopping ?? Promise.resolve();
      worker = undefined;
      stopping = stopThread(thread);
      return stopping;
    },
    collectGarbage() {
      worker?.postMessage({ type: 'gc' } satisfies ToThread);
    },
  };
}

/**
 * The thread side of `threadService`: builds the service from the thread's data, starts it, and
 * stops it when asked; `name` names its logs. Call it at the top level of the entry module.
 */
export function serveOnThisThread<T>(name: string, build: (data: T) => Promise<Service>): void {
  const port = parentPort;
  if (isMainThread || !port) throw new Error('serveOnThisThread runs on a worker thread');
  // A thread has its own process events: without this, one such rejection would end the fleet.
  logUnhandledRejections(createLogger(name));
  const post = (message: FromThread) => port.postMessage(message);
  const failed = (err: unknown): FromThread => {
    const { code, address, port } = (err ?? {}) as ErrorDetails;
    return {
      type: 'failed',
      message: err instanceof Error ? err.message : String(err),
      stack: err instanceof Error ? err.stack : undefined,
      code,
      address,
      port,
    };
  };
  const service = build(workerData as T).then(async (built) => {
    try {
      await built.start();
    } catch (err) {
      await built.stop().catch(() => undefined); // release what it opened before it failed
      throw err;
    }
    return built;
  });
  service.then(
    () => post({ type: 'started' }),
    (err) => post(failed(err)),
  );
  port.on('message', (message: ToThread) => {
    if (message.type === 'gc') return (globalThis as { gc?: () => void }).gc?.();
    service
      .then((built) => built.stop())
      .then(
        () => post({ type: 'stopped' }),
        (err) => post(failed(err)),
      );
  });
}

/** The thread's error on this side, with its details: npm start names a port taken in plain words. */
function threadError(
  name: string,
  { message, stack, code, address, port }: { message: string; stack?: string } & ErrorDetails,
): Error {
  const err = Object.assign(new Error(`${name} thread: ${message}`), { code, address, port });
  if (stack) err.stack = `${err.message}\n(on the thread) ${stack}`;
  return err;
}
