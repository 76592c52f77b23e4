import { rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { blobStoreConfig, createBlobStore } from '../../src/blobstore/config.js';
import { tempDir } from '../helpers/nix.js';

/** "path: message" for each zod issue, as the config loader reports them. */
function problems(input: unknown): string[] {
  const result = blobStoreConfig.safeParse(input);
  return result.success ? [] : result.error.issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`);
}

describe('blob store configuration', () => {
  const dataDir = tempDir('blob-config');
  afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

  it('fills in defaults', () => {
    expect(blobStoreConfig.parse({ type: 'fs' })).toEqual({ type: 'fs' });
    expect(blobStoreConfig.parse({ type: 's3', bucket: 'nars', endpoint: 'http://127.0.0.1:9000' })).toEqual({
      type: 's3',
      bucket: 'nars',
      endpoint: 'http://127.0.0.1:9000',
      region: 'us-east-1',
      prefix: '',
      partSize: 16 * 1024 * 1024,
    });
    expect(blobStoreConfig.parse({ type: 'sharded', stores: [{ type: 'fs', path: 'a' }, { type: 'fs', path: 'b' }] })).toMatchObject({ replicas: 2, unhealthyMs: 30_000 });
  });

  it('names the field and the fix for each mistake', () => {
    expect(problems({ type: 'ftp' })).toEqual(['type: type must be "fs", "s3" or "sharded"']);
    expect(problems({ type: 'fs', pth: 'x' })).toEqual([': an fs blob store has unknown field(s) pth; allowed: type, path']);
    expect(problems({ type: 's3' })).toEqual(['bucket: bucket is required: the name of an existing bucket']);
    expect(problems({ type: 's3', bucket: 'Bad_Name' })[0]).toMatch(/^bucket: bucket must be a valid S3 bucket name/);
    expect(problems({ type: 's3', bucket: 'nars', endpoint: 'localhost:9000' })[0]).toMatch(/^endpoint: endpoint must be the http\(s\) URL of an S3-compatible service/);
    expect(problems({ type: 's3', bucket: 'nars', partSize: 1024 })[0]).toMatch(/^partSize: partSize must be at least 5242880 bytes/);
    expect(problems({ type: 's3', bucket: 'nars', prefix: '/abs' })[0]).toMatch(/^prefix: prefix must be empty or/);
    expect(problems({ type: 's3', bucket: 'nars', accessKeyId: 'AK' })).toEqual(['secretAccessKey: give accessKeyId and secretAccessKey together, or neither (to use the AWS SDK default credentials)']);
    expect(problems({ type: 'sharded', replicas: 3, stores: [{ type: 'fs', path: 'a' }, { type: 'fs' }] })).toEqual([
      'replicas: replicas (3) must not exceed the number of stores (2)',
      'stores.1.path: every fs child of a sharded store needs its own path',
    ]);
    expect(problems({ type: 'sharded', stores: [{ type: 'sharded' }] })).toContain('stores.0.type: type of a sharded child must be "fs" or "s3"');
  });

  it('opens an fs store under the data directory by default, and a sharded store over fs children', async () => {
    const fs = await createBlobStore(blobStoreConfig.parse({ type: 'fs' }), dataDir);
    expect(fs.describe).toBe(`fs:${join(dataDir, 'nars')}`);
    await fs.put('nar/a', Readable.from([Buffer.from('a')]));
    expect(statSync(join(dataDir, 'nars', 'nar', '@a', 'a')).size).toBe(1);

    const sharded = await createBlobStore(blobStoreConfig.parse({ type: 'sharded', replicas: 2, stores: [{ type: 'fs', path: 's1' }, { type: 'fs', path: 's2' }, { type: 'fs', path: join(dataDir, 's3') }] }), dataDir);
    await sharded.put('nar/b', Readable.from([Buffer.from('bb')]));
    expect(await sharded.head('nar/b')).toEqual({ size: 2 });
    const copies = ['s1', 's2', 's3'].filter((name) => {
      try {
        return statSync(join(dataDir, name, 'nar', '@b', 'b')).size === 2;
      } catch {
        return false;
      }
    });
    expect(copies.length).toBe(2);
  });
});
