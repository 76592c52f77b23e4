import { createHash, type Hash } from 'node:crypto';
import { Transform, type Readable } from 'node:stream';
import { crc32 } from 'node:zlib';
import type { BlobStore } from '../blobstore/blobStore.js';
import { verifiedPut } from '../blobstore/verifiedPut.js';
import { compressStream, fileExtension, type CompressionMethod } from '../blobstore/compression.js';
import { QuorumError } from '../errors.js';
import { narHashFromDigest, narHashDigest, type NarHash } from '../nix/hash.js';
import { nix32Encode } from '../nix/nix32.js';
import { NarVerifier } from '../nix/nar/index.js';
import type { NarCatalog, NarRecord } from './catalog.js';
import { NarListings } from './listings.js';

/** Blob key of a stored NAR: content-addressed by narHash, so uploads dedupe. */
export function narBlobKey(narHash: NarHash, compression: CompressionMethod): string {
  return `nar/${nix32Encode(narHashDigest(narHash))}.nar${fileExtension(compression)}`;
}

/**
 * Passes the stored file's bytes through, counting them and computing their CRC-32 (checked on
 * downloads) and their SHA-256 (the narinfo's FileHash), unless they are the NAR itself, whose
 * hash the NAR verifier computes already.
 */
class FileDigest extends Transform {
  readonly hash: Hash | undefined;
  crc = 0;
  size = 0;

  constructor(storesTheNar: boolean) {
    super();
    this.hash = storesTheNar ? undefined : createHash('sha256');
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error | null, data?: Buffer) => void): void {
    this.hash?.update(chunk);
    this.crc = crc32(chunk, this.crc);
    this.size += chunk.length;
    done(null, chunk);
  }
}

export interface UploadRequest {
  narHash: NarHash;
  narSize: number;
  body: Readable;
  compression: CompressionMethod;
  uploadedBy: number | null;
  /** Where the NAR's files are recorded (for `.ls` and reproducibility diffs). */
  listings: NarListings;
}

/**
 * Streams an uploaded NAR through validation, hashing and compression into the blob store.
 * The bytes are parsed as a NAR while they arrive; if the NAR is malformed, or its hash or size
 * differ from the claim, the stream fails before the blob store commits, so nothing is kept.
 * The catalogue row is written only after the blob is durable, with the NAR's listing if asked for.
 */
export async function uploadNar(store: BlobStore, catalog: NarCatalog, req: UploadRequest): Promise<{ created: boolean; record: NarRecord }> {
  const existing = catalog.get(req.narHash);
  if (existing) {
    req.body.resume();
    return { created: false, record: existing };
  }
  const verifier = new NarVerifier({ listing: true });
  // Checks the claim when the NAR ends, before the compressor flushes, so a mismatch aborts the put.
  const claim = new Transform({
    transform: (chunk, _enc, done) => done(null, chunk),
    flush: (done) => {
      const got = verifier.result;
      if (!got) return done(new QuorumError('bad-nar', 'the NAR ended before it was complete'));
      if (got.narSize !== req.narSize) return done(new QuorumError('bad-nar-size', `the NAR has ${got.narSize} bytes, not the declared ${req.narSize}`, { field: 'narSize' }));
      if (got.narHash !== req.narHash) return done(new QuorumError('bad-nar-hash', `the NAR hashes to ${got.narHash}, not ${req.narHash}`, { field: 'narHash' }));
      done();
    },
  });
  const digest = new FileDigest(req.compression === 'none');
  const key = narBlobKey(req.narHash, req.compression);
  await verifiedPut(store, key, req.body, [verifier, claim, compressStream(req.compression), digest]);
  const record = {
    narHash: req.narHash,
    narSize: req.narSize,
    blobKey: key,
    compression: req.compression,
    // Uncompressed, the file is the NAR the verifier found to hash to narHash.
    fileHash: digest.hash ? narHashFromDigest(digest.hash.digest()) : req.narHash,
    fileSize: digest.size,
    fileCrc32: digest.crc,
  };
  const listing = verifier.listing;
  const encoded = listing && (await NarListings.encode(listing));
  // One transaction: a NAR is never catalogued without the listing it was uploaded with.
  try {
    req.listings.db.transaction(() => {
      catalog.add(record, req.uploadedBy);
      if (encoded) req.listings.put(req.narHash, listing.length, encoded);
    })();
  } catch (error) {
    // The database refused the row (a full disk): the blob goes too, unless another upload catalogued it meanwhile.
    if (catalog.get(req.narHash)?.blobKey !== key) await store.delete(key).catch(() => undefined);
    throw error;
  }
  return { created: true, record: catalog.get(req.narHash)! };
}
