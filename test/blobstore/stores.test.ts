import { ListMultipartUploadsCommand, S3Client } from '@aws-sdk/client-s3';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readdir, readlink, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BlobStore } from '../../src/blobstore/blobStore.js';
import { FsBlobStore } from '../../src/blobstore/fs.js';
import { mergeListings } from '../../src/blobstore/mergeListings.js';
import { S3BlobStore } from '../../src/blobstore/s3.js';
import { MIN_PART_SIZE } from '../../src/blobstore/s3Limits.js';
import { ShardedBlobStore } from '../../src/blobstore/sharded.js';
import { QuorumError } from '../../src/errors.js';
import { tempDir } from '../helpers/nix.js';
import { startS3rver, type RunningS3rver } from '../helpers/s3rver.js';

const MiB = 1024 * 1024;
/** The smallest part size S3 allows, so a 40 MiB body goes up in 8 parts. */
const PART_SIZE = MIN_PART_SIZE;

// ---- bodies --------------------------------------------------------------------------------

/** A binary stream of `data` in chunks, never one buffer (stores must cope with any chunking). */
function streamOf(data: Buffer, chunkSize = 64 * 1024): Readable {
  return Readable.from(
    (function* () {
      for (let offset = 0; offset < data.length; offset += chunkSize) yield data.subarray(offset, offset + chunkSize);
    })(),
  );
}

/** Yields the first `failAt` bytes of `data`, then throws `error` (a client that broke off, a verifier that refused). */
function failingStream(data: Buffer, failAt: number, error: Error): Readable {
  return Readable.from(
    (async function* () {
      for (let offset = 0; offset < failAt; offset += MiB) yield data.subarray(offset, Math.min(offset + MiB, failAt));
      throw error;
    })(),
  );
}

/** Sends the first `abortAt` bytes, then is destroyed without an error (an aborted request). */
function abortedStream(data: Buffer, abortAt: number): Readable {
  let offset = 0;
  return new Readable({
    read() {
      if (offset >= abortAt) return void this.destroy();
      const end = Math.min(offset + MiB, abortAt);
      this.push(data.subarray(offset, end));
      offset = end;
    },
  });
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

async function getBytes(store: BlobStore, key: string, range?: { start: number; end?: number }): Promise<Buffer | null> {
  const read = await store.get(key, range);
  return read === null ? null : readAll(read.body);
}

async function listAll(store: BlobStore, prefix?: string): Promise<Array<{ key: string; size: number }>> {
  const out: Array<{ key: string; size: number }> = [];
  for await (const entry of store.list(prefix)) out.push(entry);
  return out;
}

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');
const sorted = (keys: string[]) => [...keys].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));

// ---- the conformance suite -----------------------------------------------------------------

interface Backend {
  /** A store holding no keys yet. */
  fresh(): Promise<BlobStore>;
  /** What failed puts may leave behind anywhere in the backend: temp files, open multipart uploads. */
  litter(): Promise<string[]>;
}

/** The promises of the BlobStore interface, run against every backend. */
function conformance(backend: () => Backend): void {
  let store: BlobStore;
  beforeAll(async () => {
    store = await backend().fresh();
  });

  it('answers null for a missing key, and deletes it without complaint', async () => {
    expect(await store.get('nar/missing.nar')).toBeNull();
    expect(await store.get('nar/missing.nar', { start: 0, end: 3 })).toBeNull();
    expect(await store.head('nar/missing.nar')).toBeNull();
    await store.delete('nar/missing.nar');
  });

  it('stores, reads, heads and deletes', async () => {
    const data = randomBytes(300_000);
    await store.put('nar/roundtrip.nar', streamOf(data));
    expect(await store.head('nar/roundtrip.nar')).toEqual({ size: data.length });
    const read = (await store.get('nar/roundtrip.nar'))!;
    expect({ size: read.size, start: read.start, end: read.end }).toEqual({ size: data.length, start: 0, end: data.length - 1 });
    expect((await readAll(read.body)).equals(data)).toBe(true);
    await store.delete('nar/roundtrip.nar');
    expect(await store.head('nar/roundtrip.nar')).toBeNull();
    expect(await store.get('nar/roundtrip.nar')).toBeNull();
    await store.delete('nar/roundtrip.nar');
  });

  it('stores an empty blob', async () => {
    await store.put('nar/empty', streamOf(Buffer.alloc(0)), { size: 0 });
    expect(await store.head('nar/empty')).toEqual({ size: 0 });
    const read = (await store.get('nar/empty'))!;
    expect(read.size).toBe(0);
    expect((await readAll(read.body)).length).toBe(0);
  });

  it('reads byte ranges as HTTP does (inclusive end, open end, end clamped)', async () => {
    const data = randomBytes(10_000);
    await store.put('nar/ranges', streamOf(data, 777));
    const cases: Array<[{ start: number; end?: number }, number, number]> = [
      [{ start: 0, end: 1 }, 0, 1],
      [{ start: 10, end: 19 }, 10, 19],
      [{ start: 9_000 }, 9_000, 9_999],
      [{ start: 9_990, end: 20_000 }, 9_990, 9_999],
      [{ start: 9_999 }, 9_999, 9_999],
    ];
    for (const [range, start, end] of cases) {
      const read = (await store.get('nar/ranges', range))!;
      expect({ size: read.size, start: read.start, end: read.end }).toEqual({ size: data.length, start, end });
      expect((await readAll(read.body)).equals(data.subarray(start, end + 1))).toBe(true);
    }
    await expect(store.get('nar/ranges', { start: 10_000 })).rejects.toMatchObject({ code: 'bad-range' });
    await expect(store.get('nar/ranges', { start: 20, end: 10 })).rejects.toMatchObject({ code: 'bad-range' });
    await expect(store.get('nar/ranges', { start: -1 })).rejects.toMatchObject({ code: 'bad-range' });
  });

  it('overwrites a key with the new content as a whole', async () => {
    await store.put('nar/overwrite', streamOf(Buffer.from('first version, longer than the second')));
    await store.put('nar/overwrite', streamOf(Buffer.from('second')));
    expect((await getBytes(store, 'nar/overwrite'))!.toString()).toBe('second');
    expect(await store.head('nar/overwrite')).toEqual({ size: 6 });
  });

  it('takes concurrent puts, and a raced key ends up as one of the writes, whole', async () => {
    const bodies = Array.from({ length: 8 }, () => randomBytes(200_000));
    await Promise.all(bodies.map((body, i) => store.put(`nar/concurrent-${i}`, streamOf(body))));
    for (const [i, body] of bodies.entries()) expect((await getBytes(store, `nar/concurrent-${i}`))!.equals(body)).toBe(true);
    await Promise.all(bodies.map((body) => store.put('nar/raced', streamOf(body))));
    const winner = (await getBytes(store, 'nar/raced'))!;
    expect(bodies.some((body) => body.equals(winner))).toBe(true);
  });

  it('rejects bad key names before touching the backend', async () => {
    for (const key of ['', '../etc/passwd', 'nar/../x', '/abs', 'nar//x', 'nar/', '.hidden', 'nar/.tmp', 'a b', 'nar/x?y', 'ü']) {
      await expect(store.put(key, streamOf(Buffer.from('x'))), key).rejects.toMatchObject({ code: 'bad-key-name' });
      await expect(store.get(key), key).rejects.toMatchObject({ code: 'bad-key-name' });
      await expect(store.head(key), key).rejects.toMatchObject({ code: 'bad-key-name' });
      await expect(store.delete(key), key).rejects.toMatchObject({ code: 'bad-key-name' });
    }
    await expect(listAll(store, '../')).rejects.toMatchObject({ code: 'bad-key-name' });
  });

  describe('atomicity: a failed put leaves nothing visible and no litter', () => {
    const data = randomBytes(12 * MiB);

    it('when the body errors early (a single-request upload)', async () => {
      const error = new QuorumError('bad-nar-hash', 'the verifier refused the body');
      await expect(store.put('nar/fails-early', failingStream(data, 100_000, error))).rejects.toBe(error);
      expect(await store.head('nar/fails-early')).toBeNull();
      expect(await store.get('nar/fails-early')).toBeNull();
      expect(await backend().litter()).toEqual([]);
    });

    it('when the body errors after several parts (a multipart upload)', async () => {
      const error = new Error('client went away');
      await expect(store.put('nar/fails-late', failingStream(data, 2 * PART_SIZE + 12_345, error))).rejects.toBe(error);
      expect(await store.head('nar/fails-late')).toBeNull();
      expect(await backend().litter()).toEqual([]);
    });

    it('when the body is destroyed without an error (an aborted request)', async () => {
      await expect(store.put('nar/aborted', abortedStream(data, 2 * PART_SIZE + 1))).rejects.toThrow();
      await expect(store.put('nar/aborted-small', abortedStream(data, 1000))).rejects.toThrow();
      expect(await store.head('nar/aborted')).toBeNull();
      expect(await store.head('nar/aborted-small')).toBeNull();
      expect(await backend().litter()).toEqual([]);
    });

    it('when the body does not have its declared size', async () => {
      await expect(store.put('nar/short', streamOf(data.subarray(0, 1000)), { size: 1001 })).rejects.toMatchObject({ code: 'blob-size-mismatch' });
      await expect(store.put('nar/long', streamOf(data), { size: data.length - 1 })).rejects.toMatchObject({ code: 'blob-size-mismatch' });
      expect(await store.head('nar/short')).toBeNull();
      expect(await store.head('nar/long')).toBeNull();
      expect(await backend().litter()).toEqual([]);
    });

    it('keeping the previous version of an overwritten key', async () => {
      await store.put('nar/kept', streamOf(Buffer.from('the good old version')));
      await expect(store.put('nar/kept', failingStream(data, 3 * PART_SIZE, new Error('broke off')))).rejects.toThrow('broke off');
      expect((await getBytes(store, 'nar/kept'))!.toString()).toBe('the good old version');
      expect(await backend().litter()).toEqual([]);
    });
  });

  it('streams a 40 MiB blob in and out (multipart), with ranges across part boundaries', async () => {
    const data = randomBytes(40 * MiB);
    await store.put('nar/large.nar', streamOf(data, 256 * 1024), { size: data.length });
    expect(await store.head('nar/large.nar')).toEqual({ size: data.length });
    const read = (await store.get('nar/large.nar'))!;
    expect(read.size).toBe(data.length);
    expect(sha256(await readAll(read.body))).toBe(sha256(data));
    const start = PART_SIZE - 100;
    const end = 3 * PART_SIZE + 100;
    expect((await getBytes(store, 'nar/large.nar', { start, end }))!.equals(data.subarray(start, end + 1))).toBe(true);
    await store.delete('nar/large.nar');
  });

  it('lists keys in ascending order, by prefix, with sizes', async () => {
    const listed = await backend().fresh();
    // Keys that share beginnings with each other's folders ("na", "na/x", "nar") and characters
    // that sort before "/" ("-", ".") are where a tree walk most easily goes out of order.
    const keys = ['nar/0a.nar.br', 'nar/0a', 'nar/0b.nar', 'nar/zz', 'nar/a-b', 'nar/a.b', 'nar/a/b', 'nar-x/y', 'nar.x', 'na', 'na/x', 'nar', 'log/abc', 'a', 'Z', '_u'];
    await Promise.all(keys.map((key, i) => listed.put(key, streamOf(Buffer.alloc(i + 1, 7)))));
    const sizeOf = (key: string) => keys.indexOf(key) + 1;
    const expected = (prefix: string) => sorted(keys.filter((key) => key.startsWith(prefix))).map((key) => ({ key, size: sizeOf(key) }));
    for (const prefix of ['', 'nar/', 'nar', 'nar/0', 'nar/a', 'na', 'na/', 'log/abc', 'zzz']) {
      expect(await listAll(listed, prefix), `prefix ${JSON.stringify(prefix)}`).toEqual(expected(prefix));
    }
    expect(await listAll(listed)).toEqual(expected(''));
    await listed.delete('nar/a/b');
    expect((await listAll(listed, 'nar/a')).map((e) => e.key)).toEqual(['nar/a-b', 'nar/a.b']);
  });
}

// ---- fs ------------------------------------------------------------------------------------

describe('fs blob store', () => {
  const roots: string[] = [];
  const backend: Backend = {
    async fresh() {
      const root = tempDir('fs-store');
      roots.push(root);
      return FsBlobStore.open(root);
    },
    async litter() {
      const left: string[] = [];
      for (const root of roots) for (const name of await readdir(join(root, '.tmp'))) left.push(join(root, '.tmp', name));
      return left;
    },
  };
  afterAll(async () => {
    for (const root of roots) await rm(root, { recursive: true, force: true });
  });

  conformance(() => backend);

  it('fans keys out into marked folders, so "a" and "a/b" can both exist', async () => {
    const root = tempDir('fs-layout');
    roots.push(root);
    const store = await FsBlobStore.open(root);
    await store.put('nar/1abc.nar.br', streamOf(Buffer.from('x')));
    await store.put('nar', streamOf(Buffer.from('y')));
    expect((await stat(join(root, 'nar', '@1a', '1abc.nar.br'))).size).toBe(1);
    expect((await stat(join(root, '@na', 'nar'))).size).toBe(1);
  });

  it('hands small reads over in memory as well as a stream, and streams large ones', async () => {
    const root = tempDir('fs-small');
    roots.push(root);
    const store = await FsBlobStore.open(root);
    const data = randomBytes(200_000);
    await store.put('nar/mixed.nar', streamOf(data));
    for (const [range, inMemory] of [
      [{ start: 0, end: 9_999 }, true],
      [{ start: 150_000 }, true],
      [undefined, false],
      [{ start: 1 }, false],
    ] as const) {
      const read = (await store.get('nar/mixed.nar', range))!;
      const expected = data.subarray(read.start, read.end + 1);
      expect(read.bytes?.equals(expected)).toBe(inMemory ? true : undefined);
      expect((await readAll(read.body)).equals(expected)).toBe(true);
    }
  });

  it('reads into chunks handed back (recycle), and closes the file however the read ends', async () => {
    const root = tempDir('fs-recycle');
    roots.push(root);
    const store = await FsBlobStore.open(root);
    const data = randomBytes(6 * MiB + 12_345);
    await store.put('nar/big.nar', streamOf(data));
    // Descriptors of this process open on the blob's file.
    const openOnBlob = async () => {
      let count = 0;
      for (const fd of await readdir('/proc/self/fd')) if ((await readlink(`/proc/self/fd/${fd}`).catch(() => '')).endsWith('/big.nar')) count++;
      return count;
    };

    const read = (await store.get('nar/big.nar'))!;
    const copies: Buffer[] = [];
    const memory = new Set<ArrayBufferLike>();
    for await (const chunk of read.body) {
      copies.push(Buffer.from(chunk as Buffer));
      memory.add((chunk as Buffer).buffer);
      read.recycle!(chunk as Buffer);
    }
    expect(Buffer.concat(copies).equals(data)).toBe(true);
    expect(memory.size).toBeLessThan(copies.length);
    expect(await openOnBlob()).toBe(0);

    const abandoned = (await store.get('nar/big.nar', { start: 1000 }))!;
    expect(await openOnBlob()).toBe(1);
    abandoned.body.once('data', () => abandoned.body.destroy());
    await new Promise((resolve) => abandoned.body.once('close', resolve));
    expect(await openOnBlob()).toBe(0);
  });

  it('removes temp files of crashed writes on open, and never lists or serves them', async () => {
    const root = tempDir('fs-crash');
    roots.push(root);
    const store = await FsBlobStore.open(root);
    await store.put('nar/kept', streamOf(Buffer.from('kept')));
    await mkdir(join(root, '.tmp'), { recursive: true });
    const stale = join(root, '.tmp', 'crashed-write');
    const live = join(root, '.tmp', 'write-in-progress');
    await writeFile(stale, 'half a NAR');
    await writeFile(live, 'another process is writing this');
    const dayAgo = new Date(Date.now() - 24 * 3600 * 1000);
    await utimes(stale, dayAgo, dayAgo);
    expect((await listAll(store)).map((e) => e.key)).toEqual(['nar/kept']);
    expect(await store.get('.tmp/crashed-write').catch((e: QuorumError) => e.code)).toBe('bad-key-name');

    await FsBlobStore.open(root);
    expect(await readdir(join(root, '.tmp'))).toEqual(['write-in-progress']);
  });
});

// ---- s3 ------------------------------------------------------------------------------------

let nextPrefix = 0;

function s3Store(server: RunningS3rver, prefix: string): S3BlobStore {
  return new S3BlobStore({
    endpoint: server.endpoint,
    region: server.region,
    bucket: 'nars',
    accessKeyId: server.accessKeyId,
    secretAccessKey: server.secretAccessKey,
    forcePathStyle: true,
    prefix,
    partSize: PART_SIZE,
  });
}

/** Open multipart uploads in the `nars` bucket of each server, as S3 reports them. */
async function openUploads(servers: RunningS3rver[]): Promise<string[]> {
  const left: string[] = [];
  for (const server of servers) {
    const client = new S3Client({ endpoint: server.endpoint, region: server.region, forcePathStyle: true, credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey } });
    const response = await client.send(new ListMultipartUploadsCommand({ Bucket: 'nars' }));
    for (const upload of response.Uploads ?? []) left.push(`${server.endpoint} ${upload.Key} ${upload.UploadId}`);
    client.destroy();
  }
  return left;
}

describe('s3 blob store on s3rver', () => {
  let server: RunningS3rver;
  beforeAll(async () => {
    server = await startS3rver({ buckets: ['nars'] });
  });
  afterAll(async () => {
    await server?.stop();
  });
  const backend: Backend = {
    fresh: async () => s3Store(server, `t${nextPrefix++}/`),
    litter: () => openUploads([server]),
  };

  conformance(() => backend);

  it('pages through listings longer than one ListObjectsV2 page (1,000 keys)', async () => {
    const store = s3Store(server, `t${nextPrefix++}/`);
    const keys = Array.from({ length: 1_050 }, (_, i) => `nar/${String(i).padStart(5, '0')}`);
    for (let i = 0; i < keys.length; i += 50) await Promise.all(keys.slice(i, i + 50).map((key) => store.put(key, streamOf(Buffer.from(key)))));
    const listed = await listAll(store, 'nar/');
    expect(listed.map((e) => e.key)).toEqual(keys);
    expect(listed.every((e) => e.size === 9)).toBe(true);
  });

  it('presigns GET URLs that serve the object without credentials', async () => {
    const store = s3Store(server, `t${nextPrefix++}/`);
    const data = randomBytes(5000);
    await store.put('nar/shared', streamOf(data));
    const url = (await store.presignGet('nar/shared', 60))!;
    const response = await fetch(url);
    expect(response.status).toBe(200);
    expect(Buffer.from(await response.arrayBuffer()).equals(data)).toBe(true);
    expect(await store.presignGet('nar/absent', 60)).toBeNull();
  });

  it('reports a missing bucket as a failure, not as an absent key', async () => {
    const store = new S3BlobStore({ endpoint: server.endpoint, region: server.region, bucket: 'no-such-bucket', accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey, forcePathStyle: true });
    await expect(store.get('nar/x')).rejects.toMatchObject({ code: 'blob-store-failed' });
  });
});

// ---- sharded -------------------------------------------------------------------------------

describe('sharded blob store over three s3rver instances, replication 2', () => {
  let servers: RunningS3rver[] = [];
  const up = () => servers.filter((_, i) => !stopped.has(i));
  const stopped = new Set<number>();
  beforeAll(async () => {
    servers = await Promise.all([0, 1, 2].map(() => startS3rver({ buckets: ['nars'] })));
  });
  afterAll(async () => {
    await Promise.all(servers.map((server) => server.stop()));
  });
  function sharded(): { store: ShardedBlobStore; children: S3BlobStore[] } {
    const prefix = `t${nextPrefix++}/`;
    const children = servers.map((server) => s3Store(server, prefix));
    return { store: new ShardedBlobStore(children, { replicas: 2 }), children };
  }
  const backend: Backend = {
    fresh: async () => sharded().store,
    litter: () => openUploads(up()),
  };

  describe('with all children up', () => {
    conformance(() => backend);

    it('keeps exactly two copies of each key, spread over all children', async () => {
      const { store, children } = sharded();
      const keys = Array.from({ length: 30 }, (_, i) => `nar/spread-${i}`);
      await Promise.all(keys.map((key) => store.put(key, streamOf(Buffer.from(key)))));
      const perChild = children.map(() => 0);
      for (const key of keys) {
        const holders = (await Promise.all(children.map((child) => child.head(key)))).map((stat) => stat !== null);
        expect(holders.filter(Boolean).length, key).toBe(2);
        holders.forEach((held, i) => (perChild[i]! += held ? 1 : 0));
      }
      expect(perChild.every((count) => count > 0)).toBe(true);
      expect(store.presignGet).toBeTypeOf('function');
      expect(await fetch((await store.presignGet!('nar/spread-0', 60))!).then((r) => r.text())).toBe('nar/spread-0');
    });
  });

  it('keeps reading and writing when a child stops in the middle', async () => {
    const { store, children } = sharded();
    const before = Array.from({ length: 24 }, (_, i) => `nar/before-${i}`);
    const after = Array.from({ length: 24 }, (_, i) => `nar/after-${i}`);
    const body = (key: string) => Buffer.from(`${key} `.repeat(1000));
    await Promise.all(before.map((key) => store.put(key, streamOf(body(key)))));

    await servers[0]!.stop();
    stopped.add(0);

    for (const key of before) {
      expect((await getBytes(store, key))?.equals(body(key)), key).toBe(true);
      expect(await store.head(key)).toEqual({ size: body(key).length });
    }
    await Promise.all(after.map((key) => store.put(key, streamOf(body(key)))));
    for (const key of after) {
      expect((await getBytes(store, key, { start: 5, end: 9 }))?.equals(body(key).subarray(5, 10)), key).toBe(true);
      // Both copies went to the children still up, the failed one replaced by the next in rank.
      const holders = await Promise.all(children.slice(1).map((child) => child.head(key)));
      expect(holders.every((stat) => stat !== null), key).toBe(true);
    }
    expect((await listAll(store)).map((e) => e.key)).toEqual(sorted([...before, ...after]));
    await store.delete('nar/before-0');
    expect(await store.get('nar/before-0')).toBeNull();
    expect(await store.get('nar/never-written')).toBeNull();
    expect(await openUploads(up())).toEqual([]);
  });

  describe('with one child stopped', () => {
    conformance(() => backend);

    it('fails, rather than answering "absent", once as many children are down as there are copies', async () => {
      const { store } = sharded();
      await store.put('nar/last', streamOf(Buffer.from('last')));
      await servers[1]!.stop();
      stopped.add(1);
      await expect(store.get('nar/never-written')).rejects.toMatchObject({ code: 'blob-store-unavailable' });
      await expect(store.put('nar/more', streamOf(Buffer.from('more')))).rejects.toMatchObject({ code: 'blob-store-unavailable' });
      await expect(listAll(store)).rejects.toMatchObject({ code: 'blob-store-unavailable' });
    });
  });
});

// ---- merging listings ----------------------------------------------------------------------

describe('mergeListings', () => {
  async function* listing(keys: string[]) {
    for (const key of keys) yield { key, size: key.length };
  }

  it('merges sorted listings into one, each key once', async () => {
    const merged: string[] = [];
    for await (const entry of mergeListings([listing(['a', 'c', 'e']), listing(['b', 'c', 'f']), listing([])])) merged.push(entry.key);
    expect(merged).toEqual(['a', 'b', 'c', 'e', 'f']);
  });

  it('refuses a listing that is out of order instead of yielding duplicates', async () => {
    const consume = async () => {
      for await (const entry of mergeListings([listing(['b', 'a']), listing(['a'])])) void entry;
    };
    await expect(consume()).rejects.toMatchObject({ code: 'blob-list-unsorted' });
  });
});
