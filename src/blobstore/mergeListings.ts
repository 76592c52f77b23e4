import { QuorumError } from '../errors.js';

export interface Listed {
  key: string;
  size: number;
}

/**
 * Merges listings that are each in ascending key order into one ascending listing in a single
 * pass, with memory for one entry per source. A key present in several sources is yielded once,
 * from the first source holding it. `onError(index, err)` decides about a failing source: return
 * to drop it and go on, throw to stop; without it the error propagates.
 */
export async function* mergeListings(
  sources: AsyncIterable<Listed>[],
  onError?: (index: number, err: unknown) => void,
): AsyncGenerator<Listed> {
  const iterators = sources.map((source) => source[Symbol.asyncIterator]());
  const live = iterators.map(() => true);

  async function advance(index: number, previous: string | undefined): Promise<Listed | undefined> {
    try {
      const next = await iterators[index]!.next();
      if (next.done) {
        live[index] = false;
        return undefined;
      }
      // Merging relies on the order; a backend that breaks it (s3rver lists in readdir order) would
      // otherwise yield duplicates or skip keys silently.
      if (previous !== undefined && next.value.key <= previous) {
        throw new QuorumError('blob-list-unsorted', `listing ${index} yielded ${next.value.key} after ${previous}: the backend does not list in ascending key order`);
      }
      return next.value;
    } catch (err) {
      live[index] = false;
      if (!onError) throw err;
      onError(index, err);
      return undefined;
    }
  }

  try {
    const heads = await Promise.all(iterators.map((_, index) => advance(index, undefined)));
    for (;;) {
      let smallest: Listed | undefined;
      for (const head of heads) if (head && (smallest === undefined || head.key < smallest.key)) smallest = head;
      if (smallest === undefined) return;
      const key = smallest.key;
      await Promise.all(
        heads.map(async (head, index) => {
          if (head?.key === key) heads[index] = await advance(index, key);
        }),
      );
      yield smallest;
    }
  } finally {
    // Stop sources the consumer no longer needs (an early break, or an error elsewhere).
    await Promise.allSettled(iterators.map((iterator, index) => (live[index] ? iterator.return?.() : undefined)));
  }
}
