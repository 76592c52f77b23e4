import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  type CompletedPart,
} from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import type { Readable } from 'node:stream';
import { QuorumError } from '../errors.js';
import {
  bufferChunks,
  checkRange,
  declaredSizeMismatch,
  parseBlobKey,
  parseBlobPrefix,
  storeFailure,
  unsatisfiable,
  type BlobRange,
  type BlobRead,
  type BlobStat,
  type BlobStore,
} from './blobStore.js';
import type { Listed } from './mergeListings.js';
import { DEFAULT_PART_SIZE, MAX_PART_SIZE, MAX_PARTS, MIN_PART_SIZE } from './s3Limits.js';

export interface S3BlobStoreOptions {
  /** Omit for AWS itself; any S3-compatible service otherwise, e.g. http://127.0.0.1:9000. */
  endpoint?: string;
  region: string;
  bucket: string;
  /** Omit both to use the SDK's default chain (environment, profile, instance role). */
  accessKeyId?: string;
  secretAccessKey?: string;
  /** Path-style URLs (endpoint/bucket/key), which most non-AWS services need. */
  forcePathStyle?: boolean;
  /** Prepended to every key, so several stores can share a bucket, e.g. "cache1/". */
  prefix?: string;
  /** Bodies larger than this go up as a multipart upload of parts this big. */
  partSize?: number;
}

/**
 * Blobs in an S3 bucket. A put of at most one part is a single PutObject; a larger one is a
 * multipart upload that reads part n+1 while part n is in flight (two parts in memory, never the
 * whole body), and is aborted on any failure so no parts are left behind. S3 makes the object
 * visible only on PutObject / CompleteMultipartUpload, which gives atomicity. If even the abort
 * fails (the service is gone) the parts stay invisible but billed: buckets should carry an
 * AbortIncompleteMultipartUpload lifecycle rule as a backstop.
 */
export class S3BlobStore implements BlobStore {
  readonly describe: string;
  private readonly client: S3Client;
  private readonly bucket: string;
  private readonly prefix: string;
  private readonly partSize: number;

  constructor(options: S3BlobStoreOptions) {
    this.bucket = options.bucket;
    this.prefix = parseBlobPrefix(options.prefix, 'prefix');
    this.partSize = options.partSize ?? DEFAULT_PART_SIZE;
    if (!Number.isSafeInteger(this.partSize) || this.partSize < MIN_PART_SIZE || this.partSize > MAX_PART_SIZE) {
      throw new QuorumError('bad-config', `partSize must be an integer between ${MIN_PART_SIZE} (5 MiB, S3's minimum) and ${MAX_PART_SIZE} bytes`, { field: 'partSize' });
    }
    this.describe = `s3:${options.bucket}${this.prefix ? `/${this.prefix}` : ''}@${options.endpoint ?? options.region}`;
    this.client = new S3Client({
      region: options.region,
      ...(options.endpoint === undefined ? {} : { endpoint: options.endpoint }),
      forcePathStyle: options.forcePathStyle ?? false,
      ...(options.accessKeyId === undefined || options.secretAccessKey === undefined
        ? {}
        : { credentials: { accessKeyId: options.accessKeyId, secretAccessKey: options.secretAccessKey } }),
      // The SDK's default CRC32 checksums are not understood by many S3-compatible services
      // (and not needed: NAR bytes are hash-checked end to end by us and by Nix).
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      // Without these a hung service hangs every request forever (the SDK's default is no timeout).
      requestHandler: { connectionTimeout: 10_000, socketTimeout: 120_000 },
    });
  }

  async put(key: string, body: Readable, options: { size?: number } = {}): Promise<void> {
    const objectKey = this.objectKey(key);
    const parts = readParts(body, this.partSize);
    try {
      const first = await parts.next();
      const firstPart = first.done ? Buffer.alloc(0) : first.value;
      const second = first.done ? first : await parts.next();
      if (second.done) {
        if (options.size !== undefined && firstPart.length !== options.size) throw declaredSizeMismatch(key, options.size, firstPart.length);
        await this.send(`put ${key}`, () => this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: objectKey, Body: firstPart, ContentLength: firstPart.length })));
        return;
      }
      await this.putMultipart(key, objectKey, parts, firstPart, second.value, options.size);
    } catch (err) {
      body.destroy();
      throw err;
    }
  }

  private async putMultipart(key: string, objectKey: string, parts: AsyncGenerator<Buffer>, first: Buffer, second: Buffer, declaredSize: number | undefined): Promise<void> {
    const created = await this.send(`start a multipart upload of ${key}`, () => this.client.send(new CreateMultipartUploadCommand({ Bucket: this.bucket, Key: objectKey })));
    const uploadId = created.UploadId;
    if (!uploadId) throw storeFailure(this.describe, `start a multipart upload of ${key}`, 'the service returned no UploadId');
    try {
      const completed: CompletedPart[] = [];
      let size = 0;
      let current = first;
      let reading: Promise<IteratorResult<Buffer>> = Promise.resolve({ done: false, value: second });
      for (;;) {
        const number = completed.length + 1;
        const part = current;
        const uploading = this.send(`upload part ${number} of ${key}`, () =>
          this.client.send(new UploadPartCommand({ Bucket: this.bucket, Key: objectKey, UploadId: uploadId, PartNumber: number, Body: part, ContentLength: part.length })),
        );
        // Both settle before either error is thrown, so neither promise is left unobserved.
        const [uploaded, next] = await Promise.allSettled([uploading, reading]);
        if (next.status === 'rejected') throw next.reason;
        if (uploaded.status === 'rejected') throw uploaded.reason;
        completed.push({ PartNumber: number, ETag: uploaded.value.ETag });
        size += part.length;
        if (next.value.done) break;
        if (completed.length === MAX_PARTS) throw new QuorumError('blob-too-large', `blob ${key} needs more than ${MAX_PARTS} parts of ${this.partSize} bytes; raise partSize`);
        current = next.value.value;
        reading = parts.next();
      }
      if (declaredSize !== undefined && size !== declaredSize) throw declaredSizeMismatch(key, declaredSize, size);
      await this.send(`complete the multipart upload of ${key}`, () =>
        this.client.send(new CompleteMultipartUploadCommand({ Bucket: this.bucket, Key: objectKey, UploadId: uploadId, MultipartUpload: { Parts: completed } })),
      );
    } catch (err) {
      await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: objectKey, UploadId: uploadId })).catch(() => undefined);
      throw err;
    }
  }

  async get(key: string, range?: BlobRange): Promise<BlobRead | null> {
    const objectKey = this.objectKey(key);
    checkRange(range);
    let response;
    try {
      response = await this.client.send(
        new GetObjectCommand({ Bucket: this.bucket, Key: objectKey, ...(range ? { Range: `bytes=${range.start}-${range.end ?? ''}` } : {}) }),
      );
    } catch (err) {
      if (isNotFound(err)) return null;
      if (statusOf(err) === 416 && range) throw unsatisfiable(range, undefined);
      throw storeFailure(this.describe, `get ${key}`, err);
    }
    const body = response.Body as Readable;
    const length = response.ContentLength ?? 0;
    if (!range) return { body, size: length, start: 0, end: length - 1 };
    const span = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(response.ContentRange ?? '');
    if (!span) {
      body.destroy();
      throw storeFailure(this.describe, `get ${key}`, `a ranged GET answered without a usable Content-Range (${JSON.stringify(response.ContentRange)})`);
    }
    return { body, size: Number(span[3]), start: Number(span[1]), end: Number(span[2]) };
  }

  async head(key: string): Promise<BlobStat | null> {
    const objectKey = this.objectKey(key);
    try {
      const response = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: objectKey }));
      return { size: response.ContentLength ?? 0 };
    } catch (err) {
      if (isNotFound(err)) return null;
      throw storeFailure(this.describe, `head ${key}`, err);
    }
  }

  async delete(key: string): Promise<void> {
    const objectKey = this.objectKey(key);
    await this.send(`delete ${key}`, () => this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: objectKey })));
  }

  async *list(prefix?: string): AsyncGenerator<Listed> {
    const want = this.prefix + parseBlobPrefix(prefix);
    let token: string | undefined;
    do {
      const page = await this.send(`list ${want}`, () =>
        this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: want, ...(token ? { ContinuationToken: token } : {}) })),
      );
      for (const object of page.Contents ?? []) {
        const key = object.Key?.slice(this.prefix.length);
        // Objects someone else put under our prefix are not ours to report (or to collect).
        if (key === undefined || !isValidKey(key)) continue;
        yield { key, size: object.Size ?? 0 };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  async presignGet(key: string, expiresSeconds: number): Promise<string | null> {
    if ((await this.head(key)) === null) return null;
    return getSignedUrl(this.client, new GetObjectCommand({ Bucket: this.bucket, Key: this.objectKey(key) }), { expiresIn: expiresSeconds });
  }

  private objectKey(key: string): string {
    return this.prefix + parseBlobKey(key);
  }

  private async send<T>(action: string, request: () => Promise<T>): Promise<T> {
    try {
      return await request();
    } catch (err) {
      throw storeFailure(this.describe, action, err);
    }
  }
}

/**
 * The body cut into Buffers of exactly `partSize` bytes, the last one shorter (and none for an
 * empty body). Errors of the body propagate unchanged.
 */
async function* readParts(body: Readable, partSize: number): AsyncGenerator<Buffer> {
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  for await (const chunk of bufferChunks(body)) {
    pending.push(chunk);
    pendingBytes += chunk.length;
    while (pendingBytes >= partSize) {
      const joined = Buffer.concat(pending, pendingBytes);
      yield joined.subarray(0, partSize);
      const rest = joined.subarray(partSize);
      pending = rest.length ? [rest] : [];
      pendingBytes = rest.length;
    }
  }
  if (pendingBytes > 0) yield Buffer.concat(pending, pendingBytes);
}

function statusOf(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } } | undefined)?.$metadata?.httpStatusCode;
}

/** A missing key. NoSuchBucket (a 404 too) is a misconfiguration and stays an error. */
function isNotFound(err: unknown): boolean {
  const name = (err as { name?: string } | undefined)?.name;
  return name === 'NoSuchKey' || name === 'NotFound';
}

function isValidKey(key: string): boolean {
  try {
    parseBlobKey(key);
    return true;
  } catch {
    return false;
  }
}
