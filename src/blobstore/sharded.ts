import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { PassThrough, type Readable } from 'node:stream';
import { QuorumError } from '../errors.js';
import {
  checkRange,
  isCallerError,
  parseBlobKey,
  parseBlobPrefix,
  type BlobRange,
  type BlobRead,
  type BlobStat,
  type BlobStore,
} from './blobStore.js';
import { mergeListings, type Listed } from './mergeListings.js';

export interface ShardedBlobStoreOptions {
  /** Copies of each blob (r). */
  replicas: number;
  /** How long a child that failed is tried only after the healthy ones. */
  unhealthyMs?: number;
}

const DEFAULT_UNHEALTHY_MS = 30_000;

/**
 * Blobs spread over several child stores by rendezvous (highest-random-weight) hashing: each key
 * ranks the children by SHA-256(child id, key), and its r copies go to the first r healthy ones
 * in that order. Adding or removing a child moves only the keys whose top r changes. The child
 * id is its `describe`, so changing a child's bucket, prefix or path re-ranks its keys.
 *
 * Writes stream once: the body is teed to the first r candidates at once; a candidate that fails
 * is replaced by the next in rank order, filled by copying from a replica that succeeded (the body
 * cannot be read twice, so if all r fail the put fails; those children are unhealthy by then, and
 * a retry goes to others). Reads try children in rank order (healthy first) until one has the key,
 * so copies placed further down by an earlier failover are found too. A child that errs (as
 * opposed to answering "absent") is marked unhealthy for a short while.
 *
 * Every read, list and delete stays correct while fewer than r children fail (each blob has r
 * copies, so one is on a child that answers). Limits: a read that fails after its body started
 * streaming cannot fail over (the caller sees a stream error). A put that ends with fewer than r
 * copies throws but keeps the copies it wrote: they are complete objects, and deleting them could
 * destroy an earlier good upload of the same content-addressed key; a retry or the GC settles them.
 */
export class ShardedBlobStore implements BlobStore {
  readonly describe: string;
  readonly presignGet?: (key: string, expiresSeconds: number) => Promise<string | null>;
  private readonly replicas: number;
  private readonly unhealthyMs: number;
  private readonly unhealthyUntil = new Map<BlobStore, number>();

  constructor(
    private readonly stores: BlobStore[],
    options: ShardedBlobStoreOptions,
  ) {
    const ids = stores.map((store) => store.describe);
    const duplicate = ids.find((id, index) => ids.indexOf(id) !== index);
    if (duplicate) throw new QuorumError('bad-config', `sharded store lists ${duplicate} twice; every child must be a different store`, { field: 'stores' });
    if (!Number.isInteger(options.replicas) || options.replicas < 1 || options.replicas > stores.length) {
      throw new QuorumError('bad-config', `replicas must be an integer from 1 to the number of stores (${stores.length}), got ${options.replicas}`, { field: 'replicas' });
    }
    this.replicas = options.replicas;
    this.unhealthyMs = options.unhealthyMs ?? DEFAULT_UNHEALTHY_MS;
    this.describe = `sharded(r=${this.replicas}):[${ids.join(', ')}]`;
    if (stores.every((store) => store.presignGet)) this.presignGet = (key, expiresSeconds) => this.presign(key, expiresSeconds);
  }

  /** Children in the order a key should use them: rendezvous rank, healthy ones first. */
  private candidates(key: string): BlobStore[] {
    const now = Date.now();
    const ranked = this.stores
      .map((store) => ({ store, weight: createHash('sha256').update(store.describe).update('\0').update(key).digest().readUIntBE(0, 6) }))
      .sort((a, b) => b.weight - a.weight)
      .map(({ store }) => store);
    const healthy = (store: BlobStore) => (this.unhealthyUntil.get(store) ?? 0) <= now;
    return [...ranked.filter(healthy), ...ranked.filter((store) => !healthy(store))];
  }

  private failed(store: BlobStore, err: unknown): void {
    if (!isCallerError(err)) this.unhealthyUntil.set(store, Date.now() + this.unhealthyMs);
  }

  async put(key: string, body: Readable, options: { size?: number } = {}): Promise<void> {
    parseBlobKey(key);
    const candidates = this.candidates(key);
    const first = candidates.slice(0, this.replicas);
    const branches = first.map(() =>
      // A child reads its branch's error through iteration; the listener only keeps an error that
      // arrives before the child starts reading from crashing the process.
      new PassThrough({ highWaterMark: 1024 * 1024 }).on('error', () => undefined),
    );
    // The handler is attached now: the body may fail while the children are still busy, and an
    // unobserved rejection would take the process down.
    const pumping = pumpInto(body, branches).then(
      () => undefined,
      (err: unknown) => ({ err }),
    );
    const results = await Promise.allSettled(
      first.map((store, index) =>
        store.put(key, branches[index]!, options).catch((err: unknown) => {
          branches[index]!.destroy();
          throw err;
        }),
      ),
    );
    const bodyError = await pumping;
    // The body failed: every branch failed with it and nothing was written; the error is the caller's.
    if (bodyError) throw bodyError.err;
    const written: BlobStore[] = [];
    const errors: string[] = [];
    for (const [index, result] of results.entries()) {
      const store = first[index]!;
      if (result.status === 'fulfilled') {
        written.push(store);
        continue;
      }
      if (isCallerError(result.reason)) throw result.reason;
      this.failed(store, result.reason);
      errors.push(describeFailure(store, result.reason));
    }
    for (const store of candidates.slice(this.replicas)) {
      if (written.length >= this.replicas || written.length === 0) break;
      try {
        await this.copy(key, written, store);
        written.push(store);
      } catch (err) {
        this.failed(store, err);
        errors.push(describeFailure(store, err));
      }
    }
    if (written.length < this.replicas) {
      throw new QuorumError('blob-store-unavailable', `blob ${key}: only ${written.length} of ${this.replicas} copies could be written (${errors.join('; ')})`);
    }
  }

  /** Fills `target` from the first of `sources` that can still be read. */
  private async copy(key: string, sources: BlobStore[], target: BlobStore): Promise<void> {
    for (const source of sources) {
      let read: BlobRead | null;
      try {
        read = await source.get(key);
      } catch (err) {
        this.failed(source, err);
        continue;
      }
      if (read === null) continue;
      await target.put(key, read.body, { size: read.size });
      return;
    }
    throw new QuorumError('blob-store-unavailable', `blob ${key}: no written copy could be read back to fill another replica`);
  }

  async get(key: string, range?: BlobRange): Promise<BlobRead | null> {
    parseBlobKey(key);
    checkRange(range);
    return this.first(key, 'get', (store) => store.get(key, range));
  }

  async head(key: string): Promise<BlobStat | null> {
    parseBlobKey(key);
    return this.first(key, 'head', (store) => store.head(key));
  }

  private async presign(key: string, expiresSeconds: number): Promise<string | null> {
    parseBlobKey(key);
    return this.first(key, 'presign', (store) => store.presignGet!(key, expiresSeconds));
  }

  /**
   * The first non-null answer in candidate order. Each blob has copies on r children, so while
   * fewer than r children fail, "absent" from all the others is the truth; with r failures it
   * cannot be told from an outage, and that throws.
   */
  private async first<T>(key: string, action: string, ask: (store: BlobStore) => Promise<T | null>): Promise<T | null> {
    const errors: string[] = [];
    for (const store of this.candidates(key)) {
      try {
        const answer = await ask(store);
        if (answer !== null) return answer;
      } catch (err) {
        if (isCallerError(err)) throw err;
        this.failed(store, err);
        errors.push(describeFailure(store, err));
      }
    }
    this.tolerate(errors, `${action} ${key}`);
    return null;
  }

  private tolerate(errors: string[], action: string): void {
    if (errors.length >= this.replicas) {
      throw new QuorumError('blob-store-unavailable', `${action}: ${errors.length} children failed, as many as there are copies (${this.replicas}), so the answer is unknown (${errors.join('; ')})`);
    }
  }

  /**
   * Deletes the key from every child, tolerating fewer than r failing children: a copy left on a
   * child that was down comes back when it does, and is collected again by the next GC pass
   * (which deletes what it lists but does not reference). Content-addressed keys make that
   * resurrection harmless, while refusing deletes would stall GC during any outage.
   */
  async delete(key: string): Promise<void> {
    parseBlobKey(key);
    const results = await Promise.allSettled(this.stores.map((store) => store.delete(key)));
    const errors: string[] = [];
    for (const [index, result] of results.entries()) {
      if (result.status === 'fulfilled') continue;
      const store = this.stores[index]!;
      this.failed(store, result.reason);
      errors.push(describeFailure(store, result.reason));
    }
    this.tolerate(errors, `delete ${key}`);
  }

  /** Each child's leftovers; a failing child keeps its own for the next pass. */
  async removeLeftovers(): Promise<number> {
    const removed = await Promise.allSettled(this.stores.map((store) => store.removeLeftovers?.() ?? 0));
    return removed.reduce((sum, r) => sum + (r.status === 'fulfilled' ? r.value : 0), 0);
  }

  /** Every key once, in ascending order; fewer than r failing children are skipped (see `first`). */
  async *list(prefix?: string): AsyncGenerator<Listed> {
    const want = parseBlobPrefix(prefix);
    const errors: string[] = [];
    yield* mergeListings(
      this.stores.map((store) => store.list(want)),
      (index, err) => {
        const store = this.stores[index]!;
        this.failed(store, err);
        errors.push(describeFailure(store, err));
        this.tolerate(errors, `list ${want}`);
      },
    );
  }
}

function describeFailure(store: BlobStore, err: unknown): string {
  return `${store.describe}: ${err instanceof Error ? err.message : String(err)}`;
}

/**
 * Copies `source` into every branch, at the pace of the slowest live one. A branch destroyed by
 * its consumer (its store failed) is dropped and the others go on; when none is left, reading
 * stops. Rejects with the source's own error, after destroying every branch with it.
 */
async function pumpInto(source: Readable, branches: PassThrough[]): Promise<void> {
  try {
    for await (const chunk of source) {
      const live = branches.filter((branch) => !branch.destroyed);
      if (live.length === 0) return; // leaving the loop destroys the source
      await Promise.all(live.map((branch) => (branch.write(chunk) ? undefined : drainedOrClosed(branch))));
    }
    for (const branch of branches) if (!branch.destroyed) branch.end();
  } catch (err) {
    for (const branch of branches) branch.destroy(err as Error);
    throw err;
  }
}

async function drainedOrClosed(branch: PassThrough): Promise<void> {
  const controller = new AbortController();
  await Promise.race([once(branch, 'drain', { signal: controller.signal }), once(branch, 'close', { signal: controller.signal })]).catch(() => undefined);
  controller.abort();
}
