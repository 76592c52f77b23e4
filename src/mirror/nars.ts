import { Readable } from 'node:stream';
import type { BlobStore } from '../blobstore/blobStore.js';
import { decompressStream, parseCompressionMethod, type CompressionMethod } from '../blobstore/compression.js';
import { QuorumError } from '../errors.js';
import type { NarCatalog } from '../nars/catalog.js';
import type { NarListings } from '../nars/listings.js';
import { uploadNar } from '../nars/upload.js';
import { parseNarInfo } from '../nix/narinfo.js';
import type { HashPart } from '../nix/storePath.js';
import type { QuorumPath } from '../substituter/narinfo.js';

/**
 * A mirror's NARs: the first time a path with quorum is asked for and its NAR is not held, it is
 * fetched from the primary and kept in the mirror's own blob store, so the mirror serves it when the
 * primary is gone. The primary is trusted for nothing: the bytes are stored only if, decompressed,
 * they are a NAR of the narHash and narSize the mirror's own verified decisions give (uploadNar
 * checks while streaming). A NAR the primary has an upstream cache serve is catalogued at that
 * absolute URL, as the primary does (Nix checks the hash there).
 */
export function narsFromPrimary(deps: { primary: string; blobs: BlobStore; catalog: NarCatalog; listings: NarListings; compression: CompressionMethod }): (hashPart: HashPart, path: QuorumPath) => Promise<boolean> {
  const base = deps.primary.endsWith('/') ? deps.primary : `${deps.primary}/`;
  return async (hashPart, path) => {
    const res = await fetch(new URL(`${hashPart}.narinfo`, base), { signal: AbortSignal.timeout(30_000) });
    if (res.status === 404) return false;
    if (!res.ok) throw new QuorumError('unavailable', `the primary answered ${res.status} for ${hashPart}.narinfo`);
    const info = parseNarInfo(await res.text());
    if (info.narHash !== path.narHash || info.narSize !== path.narSize) return false;
    const url = new URL(info.url, base);
    if (!url.href.startsWith(base) && info.fileHash !== undefined && info.fileSize !== undefined) {
      deps.catalog.add({ narHash: path.narHash, narSize: path.narSize, blobKey: url.href, compression: info.compression, fileHash: info.fileHash, fileSize: info.fileSize, fileCrc32: null }, null);
      return true;
    }
    const nar = await fetch(url, { signal: AbortSignal.timeout(30 * 60_000) });
    if (!nar.ok || !nar.body) throw new QuorumError('unavailable', `the primary answered ${nar.status} for ${url.pathname}`);
    const source = Readable.fromWeb(nar.body as import('node:stream/web').ReadableStream);
    const body = decompressStream(parseCompressionMethod(info.compression));
    source.on('error', (error) => body.destroy(error));
    source.pipe(body);
    try {
      await uploadNar(deps.blobs, deps.catalog, { narHash: path.narHash, narSize: path.narSize, body, compression: deps.compression, uploadedBy: null, listings: deps.listings });
    } catch (error) {
      // A refused upload leaves its body open (verifiedPut): this download stops here.
      source.destroy();
      throw error;
    }
    return true;
  };
}

/**
 * Fetches, in the background, the NARs of paths that reached quorum with no NAR held, a few at a
 * time, so the mirror can serve them once the primary is gone; a failure is left for the next
 * request of that path (or the next round) to retry.
 */
export class NarPrefetcher {
  private readonly queue: Array<{ hashPart: HashPart; path: QuorumPath }> = [];
  private active = 0;

  constructor(
    private readonly fetchNar: (hashPart: HashPart, path: QuorumPath) => Promise<boolean>,
    private readonly concurrency = 2,
  ) {}

  add(items: Array<{ hashPart: HashPart; path: QuorumPath }>): void {
    this.queue.push(...items);
    this.pump();
  }

  /** Resolves once the queue is empty (tests). */
  async idle(): Promise<void> {
    while (this.active > 0 || this.queue.length > 0) await new Promise((r) => setTimeout(r, 20));
  }

  private pump(): void {
    while (this.active < this.concurrency && this.queue.length > 0) {
      const next = this.queue.shift()!;
      this.active++;
      void this.fetchNar(next.hashPart, next.path)
        .catch(() => false)
        .finally(() => {
          this.active--;
          this.pump();
        });
    }
  }
}
