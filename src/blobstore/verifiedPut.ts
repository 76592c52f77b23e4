import { PassThrough, type Readable, type Transform } from 'node:stream';
import { finished, pipeline } from 'node:stream/promises';
import { QuorumError } from '../errors.js';
import type { BlobStore } from './blobStore.js';

/**
 * Streams `body` through `checks` (transforms that fail the stream on bad input) into the blob
 * store under `key`; when anything fails, nothing stays under the key. The error that explains a
 * failure best is thrown: a check's QuorumError, else the store's own (a failed put also tears the
 * pipeline down, which would only say "premature close"), else the stream's.
 *
 * A failure leaves `body` open: an HTTP upload refused half-way (a full disk) still answers why on
 * its connection, which the route then closes (src/http/body.ts). Other callers destroy their body
 * themselves.
 */
export async function verifiedPut(store: BlobStore, key: string, body: Readable, checks: Transform[], options?: { size?: number }): Promise<void> {
  const source = new PassThrough();
  // pipe() unpipes when `source` is torn down; a body that fails or stops short fails the put.
  body.pipe(source);
  finished(body).catch((error: unknown) => source.destroy(error as Error));
  const out = new PassThrough();
  const [flowed, stored] = await Promise.allSettled([pipeline([source, ...checks, out]), store.put(key, out, options)]);
  // The rest of the body is discarded until the caller closes it; left paused, a request the server
  // had read whole would hold its keep-alive connection until the client gave up on it.
  if (flowed.status === 'rejected') body.unpipe(source).resume();
  // Defence in depth: a store must abort on a failed body, but bytes that failed checks never stay.
  if (flowed.status === 'rejected' && stored.status === 'fulfilled') await store.delete(key);
  if (flowed.status === 'rejected' && flowed.reason instanceof QuorumError) throw flowed.reason;
  if (stored.status === 'rejected') throw stored.reason;
  if (flowed.status === 'rejected') throw flowed.reason;
}
