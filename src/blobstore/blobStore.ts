import type { Readable } from 'node:stream';
import { QuorumError } from '../errors.js';
import { asStorageFull } from '../faults/storageFull.js';

export interface BlobStat {
  size: number;
}

/** A byte range as in HTTP `Range: bytes=start-end`: `end` is inclusive; absent means "to the end". */
export interface BlobRange {
  start: number;
  end?: number;
}

export interface BlobRead {
  body: Readable;
  /** Size of the whole object, not of the range. */
  size: number;
  start: number;
  /** Inclusive; `start - 1` for an empty object read without a range. */
  end: number;
  /**
   * The same bytes as `body`, when the store read them into memory at once (small fs blobs), so a
   * caller can send them without a stream. `body` still yields them.
   */
  bytes?: Buffer;
  /**
   * Hands a chunk of `body` back once the caller no longer needs it, so that the store reads later
   * bytes into it instead of a new buffer (fs store). Callers may ignore it; a chunk handed back
   * must not be touched again.
   */
  recycle?: (chunk: Buffer) => void;
}

/**
 * Where NAR bytes (and other opaque blobs) live. Every backend keeps the same promises, checked by
 * one conformance suite (test/blobstore/conformance.ts):
 * - `put` is atomic: once it resolves the whole object is durable; if the body errors, is destroyed
 *   or does not match `options.size`, the previous state stays (no partial object, no litter).
 *   `put` consumes the body and destroys it when it fails, so the producer stops. Errors thrown by
 *   the body reach the caller unchanged, so an upload route can map its own verification errors
 *   to 4xx.
 * - `get`/`head` return null for an absent key; a failing backend throws, never "absent".
 * - `list` yields keys in ascending byte order (the S3 ListObjectsV2 order), so listings of
 *   several stores merge in one pass.
 * Keys are validated by `parseBlobKey`.
 */
export interface BlobStore {
  /** For logs and metrics, e.g. "fs:/data/nars", "s3:bucket@endpoint". */
  readonly describe: string;
  put(key: string, body: Readable, options?: { size?: number }): Promise<void>;
  get(key: string, range?: BlobRange): Promise<BlobRead | null>;
  head(key: string): Promise<BlobStat | null>;
  /** Idempotent: deleting an absent key succeeds. */
  delete(key: string): Promise<void>;
  list(prefix?: string): AsyncIterable<{ key: string; size: number }>;
  /** Removes what interrupted puts left behind (the fs store's temp files); returns how many. Stores that leave nothing lack it. */
  removeLeftovers?(): Promise<number>;
  /** A time-limited URL a client can GET directly; null when the object is absent. S3-backed stores only. */
  presignGet?(key: string, expiresSeconds: number): Promise<string | null>;
}

/**
 * Failures caused by the caller's input rather than by a backend. A sharded store must not fail
 * over or mark a child unhealthy on these: every replica would answer the same.
 */
const CALLER_ERROR_CODES = new Set(['bad-key-name', 'bad-range', 'blob-size-mismatch', 'bad-blob-body']);

export function isCallerError(err: unknown): boolean {
  return err instanceof QuorumError && CALLER_ERROR_CODES.has(err.code);
}

const SEGMENT = /^[A-Za-z0-9_][A-Za-z0-9._-]*$/;
const PREFIX = /^[A-Za-z0-9._/-]*$/;
const MAX_KEY_LENGTH = 512;
const MAX_SEGMENTS = 16;

/**
 * Keys are `/`-separated segments of `A-Z a-z 0-9 . _ -`, none starting with `.` (so no `.`/`..`
 * traversal, and names starting with `.` stay free for a backend's own bookkeeping), no leading,
 * trailing or doubled `/`. The same key must map to the same object on every backend, so the
 * charset is what every filesystem and S3 implementation treats literally.
 */
export function parseBlobKey(key: string, field = 'key'): string {
  const problem = keyProblem(key);
  if (problem) {
    throw new QuorumError(
      'bad-key-name',
      `${field} ${JSON.stringify(String(key).slice(0, 120))} ${problem}; a blob key is "/"-separated segments of A-Z a-z 0-9 . _ - that do not start with "." (e.g. nar/<nix32>.nar.br)`,
      { field },
    );
  }
  return key;
}

function keyProblem(key: string): string | undefined {
  if (typeof key !== 'string' || key.length === 0) return 'is empty';
  if (key.length > MAX_KEY_LENGTH) return `is longer than ${MAX_KEY_LENGTH} characters`;
  const segments = key.split('/');
  if (segments.length > MAX_SEGMENTS) return `has more than ${MAX_SEGMENTS} segments`;
  for (const segment of segments) {
    if (segment === '') return 'has an empty segment (leading, trailing or doubled "/")';
    if (segment.startsWith('.')) return `has a segment starting with "." (${JSON.stringify(segment)})`;
    if (!SEGMENT.test(segment)) return `has a character outside A-Z a-z 0-9 . _ - in ${JSON.stringify(segment)}`;
  }
  return undefined;
}

/** Whether `name` may be one segment of a key (used by the fs backend to tell keys from its own files). */
export function isKeySegment(name: string): boolean {
  return SEGMENT.test(name);
}

/** A list prefix is any beginning of a valid key ("" lists everything). */
export function parseBlobPrefix(prefix: string | undefined, field = 'prefix'): string {
  const text = prefix ?? '';
  if (typeof text !== 'string' || text.length > MAX_KEY_LENGTH || !PREFIX.test(text) || text.startsWith('/') || /(^|\/)\./.test(text) || text.includes('//')) {
    throw new QuorumError(
      'bad-key-name',
      `${field} ${JSON.stringify(String(text).slice(0, 120))} is not the beginning of a blob key: use A-Z a-z 0-9 . _ - and single "/" between segments, no leading "/", no segment starting with "."`,
      { field },
    );
  }
  return text;
}

/** Validates a range before any backend is asked. */
export function checkRange(range: BlobRange | undefined): void {
  if (range === undefined) return;
  const { start, end } = range;
  if (!Number.isSafeInteger(start) || start < 0 || (end !== undefined && (!Number.isSafeInteger(end) || end < start))) {
    throw new QuorumError('bad-range', `range ${JSON.stringify(range)} is invalid: start must be an integer >= 0 and end, if given, an integer >= start`, { field: 'range' });
  }
}

/**
 * The inclusive byte span a read of an object of `size` bytes returns, as HTTP does it: `end` past
 * the object is clamped; a range starting at or past the end is unsatisfiable (HTTP 416).
 */
export function resolveRange(range: BlobRange | undefined, size: number): { start: number; end: number } {
  if (range === undefined) return { start: 0, end: size - 1 };
  checkRange(range);
  if (range.start >= size) throw unsatisfiable(range, size);
  return { start: range.start, end: Math.min(range.end ?? size - 1, size - 1) };
}

export function unsatisfiable(range: BlobRange, size: number | undefined): QuorumError {
  const of = size === undefined ? '' : ` of a ${size}-byte object`;
  return new QuorumError('bad-range', `range ${range.start}-${range.end ?? ''}${of} is not satisfiable: start must be below the object size`, { field: 'range' });
}

export function declaredSizeMismatch(key: string, declared: number, actual: number): QuorumError {
  return new QuorumError('blob-size-mismatch', `blob ${key}: the body had ${actual} bytes but its declared size is ${declared}; nothing was stored`, { field: 'size' });
}

/** Wraps a backend failure (I/O, network, server error) in the error callers can count on. */
export function storeFailure(store: string, action: string, cause: unknown): QuorumError {
  if (cause instanceof QuorumError) return cause;
  const full = asStorageFull(cause, `${store}: ${action}`);
  if (full) return full;
  const reason = cause instanceof Error ? cause.message : String(cause);
  return new QuorumError('blob-store-failed', `${store}: ${action} failed: ${reason}`, { cause });
}

/** The chunks of a binary stream as Buffers; a stream in object or string mode is a caller bug. */
export async function* bufferChunks(body: Readable): AsyncGenerator<Buffer> {
  for await (const chunk of body) {
    if (!(chunk instanceof Uint8Array)) {
      throw new QuorumError('bad-blob-body', 'a blob body must be a binary stream (Buffer chunks), not strings or objects');
    }
    yield Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  }
}
