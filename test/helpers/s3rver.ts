import { readdir, readFile, rm } from 'node:fs/promises';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import S3rver from 's3rver';
import { tempDir } from './nix.js';

export interface RunningS3rver {
  /** http://127.0.0.1:<port>; use path-style addressing. */
  endpoint: string;
  port: number;
  /** s3rver's fixed credentials and a region the SDK accepts. */
  accessKeyId: string;
  secretAccessKey: string;
  region: string;
  /** Stops the server (dropping open connections) and deletes its data. Safe to call twice. */
  stop(): Promise<void>;
}

/**
 * Starts s3rver in-process on 127.0.0.1 and a free port, with `buckets` created and its data in a
 * temp folder.
 *
 * s3rver 3.7.1 departs from S3 where blob store tests look; this closes the gaps over s3rver's own
 * store, so tests check our code against S3's behaviour rather than s3rver's bugs:
 * - ListObjectsV2 lists in readdir order (S3: ascending key order, which paging and merging rely
 *   on) and cannot page at all on Node >= 17 (its continuation tokens use DES, gone from
 *   OpenSSL 3). It is served here, sorted, with plain continuation tokens.
 * - AbortMultipartUpload and ListMultipartUploads are missing. They are served here from the
 *   folder where s3rver keeps uploads in progress (`<dir>/<bucket>/._S3rver_uploads/<id>/`).
 * - Two concurrent PUTs of one key write into the same file and interleave (S3 stores each PUT
 *   whole, the last one wins). They are serialized here per key.
 */
export async function startS3rver(options: { buckets: string[] }): Promise<RunningS3rver> {
  const directory = tempDir('s3rver');
  const server = new S3rver({
    port: 0,
    address: '127.0.0.1',
    silent: true,
    directory,
    configureBuckets: options.buckets.map((name) => ({ name })),
  });
  const store = (server as unknown as { store: FilesystemStore }).store;
  serializePutsPerKey(store);
  (server as unknown as { middleware: Middleware[] }).middleware.unshift(missingRoutes(store, directory));
  const address = (await server.run()) as AddressInfo;
  const http = (server as unknown as { httpServer: Server }).httpServer;
  let stopped = false;
  return {
    endpoint: `http://127.0.0.1:${address.port}`,
    port: address.port,
    accessKeyId: 'S3RVER',
    secretAccessKey: 'S3RVER',
    region: 'us-east-1',
    async stop() {
      if (stopped) return;
      stopped = true;
      const closed = new Promise<void>((resolve) => http.close(() => resolve()));
      http.closeAllConnections();
      await closed;
      await rm(directory, { recursive: true, force: true });
    },
  };
}

/** The parts of s3rver's FilesystemStore used here. */
interface FilesystemStore {
  listObjects(bucket: string, options: { prefix?: string; maxKeys: number }): Promise<{ objects: StoredObject[] }>;
  putObject(object: { bucket: string; key: string }): Promise<unknown>;
}
interface StoredObject {
  key: string;
  size: number;
  lastModifiedDate: Date;
  metadata: { etag?: string };
}
interface KoaContext {
  method: string;
  path: string;
  query: Record<string, string | string[] | undefined>;
  status: number;
  type: string;
  body: unknown;
}
type Middleware = (ctx: KoaContext, next: () => Promise<void>) => Promise<void>;

function serializePutsPerKey(store: FilesystemStore): void {
  const put = store.putObject.bind(store);
  const last = new Map<string, Promise<unknown>>();
  store.putObject = (object) => {
    const id = `${object.bucket}/${object.key}`;
    const previous = last.get(id) ?? Promise.resolve();
    const result = previous.catch(() => undefined).then(() => put(object));
    last.set(id, result);
    return result;
  };
}

const byKey = (a: StoredObject, b: StoredObject) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0);

function missingRoutes(store: FilesystemStore, directory: string): Middleware {
  return async (ctx, next) => {
    const [bucket, ...keyParts] = ctx.path.split('/').filter(Boolean).map(decodeURIComponent);
    if (bucket === undefined) return next();
    const uploads = join(directory, bucket, '._S3rver_uploads');
    const query = (name: string) => (typeof ctx.query[name] === 'string' ? (ctx.query[name] as string) : undefined);

    if (ctx.method === 'GET' && keyParts.length === 0 && query('list-type') === '2') {
      const prefix = query('prefix') ?? '';
      const after = query('continuation-token') ? Buffer.from(query('continuation-token')!, 'base64url').toString() : (query('start-after') ?? '');
      const maxKeys = Math.min(1000, Number(query('max-keys') ?? 1000));
      const { objects } = await store.listObjects(bucket, { prefix, maxKeys: Infinity });
      const rest = objects.sort(byKey).filter((object) => object.key > after);
      const page = rest.slice(0, maxKeys);
      const truncated = rest.length > page.length;
      return xml(
        ctx,
        `<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>${bucket}</Name><Prefix>${escapeXml(prefix)}</Prefix>` +
          `<KeyCount>${page.length}</KeyCount><MaxKeys>${maxKeys}</MaxKeys><IsTruncated>${truncated}</IsTruncated>` +
          (truncated ? `<NextContinuationToken>${Buffer.from(page[page.length - 1]!.key).toString('base64url')}</NextContinuationToken>` : '') +
          page
            .map((o) => `<Contents><Key>${escapeXml(o.key)}</Key><LastModified>${o.lastModifiedDate.toISOString()}</LastModified><ETag>${escapeXml(o.metadata.etag ?? '')}</ETag><Size>${o.size}</Size><StorageClass>STANDARD</StorageClass></Contents>`)
            .join('') +
          '</ListBucketResult>',
      );
    }
    if (ctx.method === 'GET' && keyParts.length === 0 && 'uploads' in ctx.query) {
      const ids = await readdir(uploads).catch(() => [] as string[]);
      const entries = await Promise.all(ids.map(async (id) => ({ id, key: await readFile(join(uploads, id, 'key'), 'utf8') })));
      return xml(
        ctx,
        `<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Bucket>${bucket}</Bucket><IsTruncated>false</IsTruncated>` +
          entries.map((e) => `<Upload><Key>${escapeXml(e.key)}</Key><UploadId>${e.id}</UploadId></Upload>`).join('') +
          '</ListMultipartUploadsResult>',
      );
    }
    const uploadId = query('uploadId');
    if (ctx.method === 'DELETE' && keyParts.length > 0 && uploadId !== undefined) {
      await rm(join(uploads, uploadId.replace(/[^0-9a-f]/g, '')), { recursive: true, force: true });
      ctx.status = 204;
      return;
    }
    return next();
  };
}

function xml(ctx: KoaContext, body: string): void {
  ctx.status = 200;
  ctx.type = 'application/xml';
  ctx.body = `<?xml version="1.0" encoding="UTF-8"?>\n${body}`;
}

function escapeXml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}
