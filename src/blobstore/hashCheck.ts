import { createHash } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import { Transform, type Readable, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { narHashFromDigest } from '../nix/hash.js';

/** Bytes from a blob store that are not what the catalogue recorded. */
export class CorruptBlob extends Error {}

/**
 * Passes bytes through, holding the last chunk back until the whole has `size` bytes hashing to
 * `sha256` (`sha256:<nix32>`); otherwise fails with CorruptBlob, so a reader piping it into an HTTP
 * response never completes a download of bytes the blob store changed.
 */
export class HashCheck extends Transform {
  private readonly hash = createHash('sha256');
  private seen = 0;
  private held: Buffer | undefined;

  constructor(
    private readonly sha256: string,
    private readonly size: number,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.hash.update(chunk);
    this.seen += chunk.length;
    const previous = this.held;
    this.held = chunk;
    done(null, previous);
  }

  override _flush(done: TransformCallback): void {
    const got = narHashFromDigest(this.hash.digest());
    if (got !== this.sha256 || this.seen !== this.size) return done(new CorruptBlob(`the blob store returned ${this.seen} bytes hashing to ${got}, not the ${this.size} bytes hashing to ${this.sha256} that were stored`));
    done(null, this.held);
  }
}

/**
 * Pipes `stages` (a blob's body, a HashCheck, maybe a decompressor) into an HTTP response. A failure
 * breaks the response off, so the client sees a short body; `corrupt` hears of bytes the store changed.
 */
export async function sendChecked(res: ServerResponse, stages: Array<Readable | Transform>, corrupt: (problem: string) => void): Promise<void> {
  try {
    await pipeline([...stages, res]);
  } catch (error) {
    if (error instanceof CorruptBlob) corrupt(error.message);
    res.destroy();
  }
}
