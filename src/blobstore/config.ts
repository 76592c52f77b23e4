import { resolve } from 'node:path';
import { z } from 'zod';
import type { BlobStore } from './blobStore.js';
import { DEFAULT_PART_SIZE, MAX_PART_SIZE, MIN_PART_SIZE } from './s3Limits.js';

/** Where the embedded default keeps NARs, relative to the data directory. */
export const DEFAULT_FS_PATH = 'nars';

/** A strict object whose "unknown field" error lists the fields that are allowed. */
function strictObject<Shape extends z.ZodRawShape>(what: string, shape: Shape) {
  const allowed = Object.keys(shape).join(', ');
  return z.strictObject(shape, {
    error: (issue) => (issue.code === 'unrecognized_keys' ? `${what} has unknown field(s) ${issue.keys.join(', ')}; allowed: ${allowed}` : undefined),
  });
}

const prefix = z
  .string()
  .regex(/^([A-Za-z0-9_][A-Za-z0-9._-]*\/)*$/, 'prefix must be empty or "/"-separated segments of A-Z a-z 0-9 . _ - ending in "/", e.g. "cache1/"');

export const fsBlobStoreConfig = strictObject('an fs blob store', {
  type: z.literal('fs'),
  /** Relative paths are resolved against the data directory; default `<dataDir>/nars`. */
  path: z.string().min(1, 'path must name a folder (absolute, or relative to the data directory)').optional(),
});

export const s3BlobStoreConfig = strictObject('an s3 blob store', {
  type: z.literal('s3'),
  endpoint: z.url({ protocol: /^https?$/, error: 'endpoint must be the http(s) URL of an S3-compatible service, e.g. http://127.0.0.1:9000 (omit it for AWS)' }).optional(),
  region: z.string().min(1, 'region must not be empty; S3-compatible services usually accept us-east-1').default('us-east-1'),
  bucket: z
    .string({ error: 'bucket is required: the name of an existing bucket' })
    .regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, 'bucket must be a valid S3 bucket name: 3-63 characters of a-z 0-9 . -, starting and ending with a letter or digit'),
  accessKeyId: z.string().min(1, 'accessKeyId must not be empty; omit it to use the AWS SDK default credentials').optional(),
  secretAccessKey: z.string().min(1, 'secretAccessKey must not be empty; omit it to use the AWS SDK default credentials').optional(),
  /** Defaults to true when an endpoint is given (most S3-compatible services need path-style URLs). */
  forcePathStyle: z.boolean('forcePathStyle must be true or false').optional(),
  prefix: prefix.default(''),
  partSize: z
    .number()
    .int()
    .min(MIN_PART_SIZE, `partSize must be at least ${MIN_PART_SIZE} bytes (5 MiB, S3's minimum part size)`)
    .max(MAX_PART_SIZE, `partSize must be at most ${MAX_PART_SIZE} bytes (5 GiB, S3's maximum part size)`)
    .default(DEFAULT_PART_SIZE),
}).refine((config) => (config.accessKeyId === undefined) === (config.secretAccessKey === undefined), {
  message: 'give accessKeyId and secretAccessKey together, or neither (to use the AWS SDK default credentials)',
  path: ['secretAccessKey'],
});

const childStoreConfig = z.discriminatedUnion('type', [fsBlobStoreConfig, s3BlobStoreConfig], {
  error: (issue) => (issue.code === 'invalid_union' ? 'type of a sharded child must be "fs" or "s3"' : undefined),
});

export const shardedBlobStoreConfig = strictObject('a sharded blob store', {
  type: z.literal('sharded'),
  replicas: z.number().int('replicas must be a whole number').min(1, 'replicas must be at least 1').default(2),
  stores: z.array(childStoreConfig).min(2, 'stores must list at least two child stores (fs or s3) to shard over'),
  unhealthyMs: z.number().int().min(0, 'unhealthyMs must be >= 0').default(30_000),
}).superRefine((config, ctx) => {
  if (config.replicas > config.stores.length) {
    ctx.addIssue({ code: 'custom', path: ['replicas'], message: `replicas (${config.replicas}) must not exceed the number of stores (${config.stores.length})` });
  }
  config.stores.forEach((store, index) => {
    if (store.type === 'fs' && store.path === undefined) {
      ctx.addIssue({ code: 'custom', path: ['stores', index, 'path'], message: 'every fs child of a sharded store needs its own path' });
    }
  });
});

/**
 * Where NARs are written: `fs` (default, `<dataDir>/nars`), `s3`, or `sharded` over fs/s3 children.
 * Upstream caches are read-only and configured apart (see upstream.ts): they cannot take uploads.
 */
export const blobStoreConfig = z.discriminatedUnion('type', [fsBlobStoreConfig, s3BlobStoreConfig, shardedBlobStoreConfig], {
  error: (issue) => (issue.code === 'invalid_union' ? 'type must be "fs", "s3" or "sharded"' : undefined),
});

export type BlobStoreConfig = z.output<typeof blobStoreConfig>;
type ChildStoreConfig = z.output<typeof childStoreConfig>;

/**
 * Opens the configured store; relative fs paths are resolved against `dataDir`. Backends are imported
 * here, not at the top: config validation runs in every command, the post-build hook included, and
 * only `serve` opens a store (the AWS SDK alone takes a quarter second to load).
 */
export async function createBlobStore(config: BlobStoreConfig, dataDir: string): Promise<BlobStore> {
  switch (config.type) {
    case 'sharded': {
      const { ShardedBlobStore } = await import('./sharded.js');
      return new ShardedBlobStore(await Promise.all(config.stores.map((child) => openChild(child, dataDir))), {
        replicas: config.replicas,
        unhealthyMs: config.unhealthyMs,
      });
    }
    default:
      return openChild(config, dataDir);
  }
}

async function openChild(config: ChildStoreConfig, dataDir: string): Promise<BlobStore> {
  switch (config.type) {
    case 'fs': {
      const { FsBlobStore } = await import('./fs.js');
      return FsBlobStore.open(resolve(dataDir, config.path ?? DEFAULT_FS_PATH));
    }
    case 's3': {
      const { S3BlobStore } = await import('./s3.js');
      return new S3BlobStore({
        ...config,
        forcePathStyle: config.forcePathStyle ?? config.endpoint !== undefined,
      });
    }
  }
}
