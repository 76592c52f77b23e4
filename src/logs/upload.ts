import { createHash } from 'node:crypto';
import { Transform, type Readable, type TransformCallback } from 'node:stream';
import { createBrotliDecompress } from 'node:zlib';
import type { BlobStore } from '../blobstore/blobStore.js';
import { verifiedPut } from '../blobstore/verifiedPut.js';
import { QuorumError } from '../errors.js';
import { narHashFromDigest, type NarHash } from '../nix/hash.js';
import type { StorePath } from '../nix/storePath.js';
import { logBlobKey, MAX_LOG_BYTES, type BuildLog, type BuildLogs } from './buildLogs.js';

/**
 * Passes a compressed log through while checking it: `size` bytes hashing to `fileHash` (what the
 * builder signed), and brotli that decompresses to at most MAX_LOG_BYTES (a small body could
 * otherwise expand to gigabytes for every reader). Fails before the end of input otherwise.
 */
class LogCheck extends Transform {
  private readonly hash = createHash('sha256');
  private readonly inflater = createBrotliDecompress();
  private readonly inflated: Promise<void>;
  private seen = 0;
  logSize = 0;
  private failure: QuorumError | undefined;
  /** Settles the chunk the inflater is working on: a destroyed inflater never calls back. */
  private pending: (() => void) | undefined;

  constructor(
    private readonly fileHash: NarHash,
    private readonly size: number,
  ) {
    super();
    this.inflated = new Promise((resolve) => {
      this.inflater.on('data', (chunk: Buffer) => {
        this.logSize += chunk.length;
        if (this.logSize > MAX_LOG_BYTES) this.fail(new QuorumError('too-large', `the log decompresses to more than ${MAX_LOG_BYTES} bytes: send at most its last ${MAX_LOG_BYTES} bytes`, { field: 'body' }));
      });
      this.inflater.once('error', (e) => {
        if (!this.failure) this.fail(new QuorumError('bad-log', `the log is not brotli-compressed (Content-Encoding: br): ${e.message}`, { field: 'body' }));
      });
      // After its end, an error, or fail()'s destroy.
      this.inflater.once('close', () => resolve());
    });
  }

  private fail(error: QuorumError): void {
    this.failure ??= error;
    this.inflater.destroy();
    this.pending?.();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.hash.update(chunk);
    this.seen += chunk.length;
    if (this.seen > this.size) this.fail(new QuorumError('bad-log', `the body is longer than its Content-Length ${this.size}`, { field: 'body' }));
    if (this.failure) return done(this.failure);
    let settled = false;
    this.pending = () => {
      if (settled) return;
      settled = true;
      this.pending = undefined;
      done(this.failure ?? null, chunk);
    };
    this.inflater.write(chunk, this.pending);
  }

  override _flush(done: TransformCallback): void {
    if (this.failure) return done(this.failure);
    this.inflater.end();
    void this.inflated.then(() => {
      if (this.failure) return done(this.failure);
      const got = narHashFromDigest(this.hash.digest());
      if (got !== this.fileHash) return done(new QuorumError('bad-log-hash', `the body hashes to ${got}, not the signed ${this.fileHash}`, { field: 'Content-Digest' }));
      done();
    });
  }
}

export interface LogUpload {
  drvPath: StorePath;
  builderId: number;
  body: Readable;
  /** Content-Length: bytes of the compressed body. */
  size: number;
  /** SHA-256 of the compressed body, as signed. */
  fileHash: NarHash;
  signedAt: number;
  signature: Buffer;
}

/**
 * Stores a builder's compressed build log in the blob store, then its row, after the body checked
 * out (hash, size, decompressed size). A key's first log of a derivation stays: a second upload
 * is answered with the stored one, unread.
 */
export async function storeBuildLog(blobs: BlobStore, logs: BuildLogs, upload: LogUpload): Promise<{ created: boolean; log: BuildLog }> {
  const existing = logs.get(upload.drvPath, upload.builderId);
  if (existing) {
    upload.body.resume();
    return { created: false, log: existing };
  }
  const key = logBlobKey(upload.drvPath, upload.builderId);
  const check = new LogCheck(upload.fileHash, upload.size);
  await verifiedPut(blobs, key, upload.body, [check], { size: upload.size });
  logs.add({ drvPath: upload.drvPath, builderId: upload.builderId, blobKey: key, fileHash: upload.fileHash, fileSize: upload.size, logSize: check.logSize, signedAt: upload.signedAt, signature: upload.signature });
  return { created: true, log: logs.get(upload.drvPath, upload.builderId)! };
}
