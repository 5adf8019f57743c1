/**
 * `work`, or `late()`'s error once `ms` have passed without it: for a caller that goes on without
 * an answer (a best-effort check) rather than wait out a dependency that does not answer. The
 * work abandoned at the deadline is left to finish; its failure then is no longer anyone's.
 */
export async function withDeadline<T>(work: Promise<T>, ms: number, late: () => Error): Promise<T> {
  work.catch(() => undefined);
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      work,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(late()), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
