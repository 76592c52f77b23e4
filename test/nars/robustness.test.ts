import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, readlinkSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { connect } from 'node:net';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { crc32 } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { decompressStream, type CompressionMethod } from '../../src/blobstore/compression.js';
import { uploadAuthHeader } from '../../src/http/builderAuth.js';
import { narHashFromDigest, parseNarHash, sha256, type NarHash } from '../../src/nix/hash.js';
import { generateSecretKey, type SecretKey } from '../../src/nix/keys.js';
import { hashPartOf, type StorePath } from '../../src/nix/storePath.js';
import { startServer, type RunningServer } from '../../src/serve.js';
import { randomStorePath, signedAttestation, testConfig } from '../helpers/ledger.js';
import { chrootBuildFlags, describeNix, nix, nixEnv, tempDir } from '../helpers/nix.js';
import { addBuilder, revokeBuilder } from '../../src/app/builders.js';
import { postAttestations } from '../../bench/common.js';
import { metric as metricAt, narOf, treeNar as narTree, type Nar } from '../helpers/nars.js';

const temps: string[] = [];
afterAll(() => {
  for (const dir of temps) rmSync(dir, { recursive: true, force: true });
});

/** The NAR of a real directory in a temp folder removed after the tests. */
async function treeNar(dataBytes: number): Promise<Nar> {
  const dir = tempDir('nar-src');
  temps.push(dir);
  return narTree(dir, dataBytes);
}

async function startWithBuilders(...keys: SecretKey[]): Promise<{ server: RunningServer; dir: string }> {
  const dir = tempDir('nars-http');
  temps.push(dir);
  const server = await startServer(testConfig(dir));
  for (const key of keys) addBuilder(server.service, key.publicKey);
  return { server, dir };
}

interface PutAnswer {
  status: number;
  body: { error?: string; code?: string; created?: boolean; fileHash?: string };
}

async function put(server: RunningServer, narHash: string, body: Buffer, authorization?: string): Promise<PutAnswer> {
  const res = await fetch(`${server.url}/api/v1/nars/${narHash}`, {
    method: 'PUT',
    body: new Uint8Array(body),
    headers: { 'content-type': 'application/octet-stream', ...(authorization ? { authorization } : {}) },
  });
  return { status: res.status, body: (await res.json()) as PutAnswer['body'] };
}

/** Sends exactly these bytes on a fresh connection (fetch refuses to lie about Content-Length); the response's status. */
function rawExchange(url: string, bytes: Buffer): Promise<number> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname);
    let received = '';
    socket.on('data', (d: Buffer) => (received += d.toString('latin1')));
    socket.on('error', reject);
    socket.on('close', () => resolve(Number(/^HTTP\/1\.1 (\d{3}) /.exec(received)?.[1])));
    socket.write(bytes);
  });
}

/**
 * Runs `during` while capturing the in-process server's JSON log lines (it logs to stderr), so
 * they can be checked and do not clutter the test output.
 */
async function captureLogs(during: () => Promise<void>): Promise<Array<Record<string, unknown>>> {
  const written: string[] = [];
  const spy = vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
    written.push(String(chunk));
    return true;
  });
  try {
    await during();
  } finally {
    spy.mockRestore();
  }
  return written.flatMap((w) => w.split('\n')).filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** Every file under the blob store's root (the fs store keeps keys in folders and temp files in .tmp). */
function filesUnder(root: string): string[] {
  return (readdirSync(root, { recursive: true, withFileTypes: true }) as Array<{ isFile(): boolean; parentPath: string; name: string }>)
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name).slice(root.length + 1))
    .sort();
}

function metric(server: RunningServer, series: string): Promise<number> {
  return metricAt(server.url, series);
}

async function until(what: string, condition: () => boolean | Promise<boolean>): Promise<void> {
  for (let i = 0; i < 1000; i++) {
    if (await condition()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`gave up waiting until ${what}`);
}

describe('PUT /api/v1/nars/<narHash>: rejected uploads leave nothing behind', () => {
  const alice = generateSecretKey('alice-1');
  const carol = generateSecretKey('carol-1');
  const mallory = generateSecretKey('mallory-1');
  let server: RunningServer;
  let storeRoot: string;
  let nar: Nar;

  beforeAll(async () => {
    let dir: string;
    ({ server, dir } = await startWithBuilders(alice, carol));
    revokeBuilder(server.service, 'carol-1');
    storeRoot = join(dir, 'nars');
    nar = await treeNar(64 * 1024);
  });
  afterAll(() => server.close());

  /** No catalogue row, no blob, no temp file: not even of an upload that was cut off. */
  async function expectNothingStored(): Promise<void> {
    expect(server.catalog.count()).toBe(0);
    const keys: string[] = [];
    for await (const { key } of server.blobs.list()) keys.push(key);
    expect(keys).toEqual([]);
    expect(filesUnder(storeRoot)).toEqual([]);
  }

  const auth = (key: SecretKey, n: Pick<Nar, 'narHash' | 'narSize'>) => uploadAuthHeader(key, n.narHash, n.narSize);
  const otherBytesSameSize = () => {
    const bytes = Buffer.from(nar.bytes);
    bytes[Math.floor(bytes.length / 2)]! ^= 0xff; // inside the data file's contents
    return bytes;
  };
  const cases: Array<[string, () => Promise<PutAnswer>, number, string, RegExp]> = [
    ['bytes that hash to something else', () => put(server, nar.narHash, otherBytesSameSize(), auth(alice, nar)), 400, 'bad-nar-hash', /the NAR hashes to sha256:\S+, not sha256:/],
    ['a declared size larger than the NAR (extra bytes after it)', async () => {
      const body = Buffer.concat([nar.bytes, Buffer.alloc(8)]);
      return put(server, nar.narHash, body, auth(alice, { narHash: nar.narHash, narSize: body.length }));
    }, 400, 'bad-nar', /bad NAR/],
    ['a declared size smaller than the NAR (the body ends where Content-Length says)', () => {
      const cut = nar.bytes.subarray(0, nar.narSize - 8);
      return put(server, nar.narHash, cut, auth(alice, { narHash: nar.narHash, narSize: cut.length }));
    }, 400, 'bad-nar', /bad NAR/],
    ['a malformed NAR', async () => {
      const junk = narOf(Buffer.from('this is not a NAR archive, only some text of honest size and hash\n'));
      return put(server, junk.narHash, junk.bytes, auth(alice, junk));
    }, 400, 'bad-nar', /bad NAR/],
    ['no Authorization', () => put(server, nar.narHash, nar.bytes), 401, 'unauthorized', /NixQuorum-Upload builder=/],
    ['an Authorization of another scheme', () => put(server, nar.narHash, nar.bytes, 'Bearer 0123'), 401, 'unauthorized', /NixQuorum-Upload builder=/],
    ['a signature by another key than the named builder', () => put(server, nar.narHash, nar.bytes, auth(mallory, nar).replace('builder=mallory-1', 'builder=alice-1')), 403, 'forbidden', /not a valid signature by alice-1/],
    ['a signature over another size', () => put(server, nar.narHash, nar.bytes, auth(alice, { narHash: nar.narHash, narSize: nar.narSize + 1 })), 403, 'forbidden', /not a valid signature by alice-1/],
    ['a stale signature', () => put(server, nar.narHash, nar.bytes, uploadAuthHeader(alice, nar.narHash, nar.narSize, Date.now() - 3600_000)), 403, 'forbidden', /timestamp/],
    ['an unregistered builder', () => put(server, nar.narHash, nar.bytes, auth(mallory, nar)), 403, 'forbidden', /mallory-1 is not an active registered builder/],
    ['a revoked builder', () => put(server, nar.narHash, nar.bytes, auth(carol, nar)), 403, 'forbidden', /carol-1 is not an active registered builder/],
    ['a bad hash in the URL', () => put(server, 'sha256:nothex', nar.bytes, auth(alice, nar)), 400, 'bad-hash', /narHash must be a SHA-256 hash/],
  ];
  for (const [what, send, status, code, message] of cases) {
    it(`answers ${status} ${code} for ${what}`, async () => {
      const res = await send();
      expect(res.status).toBe(status);
      expect(res.body.code).toBe(code);
      expect(res.body.error).toMatch(message);
      await expectNothingStored();
    });
  }

  it('answers 400 to a Content-Length smaller than the bytes sent, and keeps nothing once the server gives up', async () => {
    const rejectedBefore = await metric(server, 'nixquorum_nar_uploads_total{result="rejected"}');
    const declared = nar.narSize - 8;
    const head = [
      `PUT /api/v1/nars/${nar.narHash} HTTP/1.1`,
      'host: 127.0.0.1',
      `content-length: ${declared}`,
      `authorization: ${auth(alice, { narHash: nar.narHash, narSize: declared })}`,
      'connection: close',
      '',
      '',
    ].join('\r\n');
    // Bytes after the declared body break HTTP framing: Node's parser answers a bare 400 and drops
    // the connection, cutting the upload that already started.
    expect(await rawExchange(server.url, Buffer.concat([Buffer.from(head), nar.bytes]))).toBe(400);
    await until('the server gives up on the upload', async () => (await metric(server, 'nixquorum_nar_uploads_total{result="rejected"}')) > rejectedBefore);
    await expectNothingStored();
  });

  it('answers 400 bad-content-length to a chunked upload (no size declared)', async () => {
    const res = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = http.request(`${server.url}/api/v1/nars/${nar.narHash}`, { method: 'PUT', headers: { 'transfer-encoding': 'chunked', authorization: auth(alice, nar) } }, (r) => {
        let body = '';
        r.on('data', (d) => (body += d));
        r.on('end', () => resolve({ status: r.statusCode!, body }));
      });
      req.on('error', reject);
      req.end(nar.bytes);
    });
    expect(res.status).toBe(400);
    expect(JSON.parse(res.body)).toMatchObject({ code: 'bad-content-length', field: 'Content-Length' });
    await expectNothingStored();
  });

  it('keeps nothing of an upload whose client disappears mid-body, once the server notices', async () => {
    const big = await treeNar(8 * 1024 * 1024);
    const rejectedBefore = await metric(server, 'nixquorum_nar_uploads_total{result="rejected"}');
    const req = http.request(`${server.url}/api/v1/nars/${big.narHash}`, {
      method: 'PUT',
      headers: { 'content-length': String(big.narSize), authorization: auth(alice, big) },
    });
    req.on('error', () => undefined); // we cut it ourselves
    req.write(big.bytes.subarray(0, Math.floor(big.narSize / 2)));
    // The server is storing: its temp file holds compressed bytes of the first half.
    await until('the upload reaches the blob store', () => readdirSync(join(storeRoot, '.tmp')).some((f) => statSync(join(storeRoot, '.tmp', f)).size > 0));
    await captureLogs(async () => {
      req.destroy();
      await until('the server gives up on the upload', async () => (await metric(server, 'nixquorum_nar_uploads_total{result="rejected"}')) > rejectedBefore);
    });
    await expectNothingStored();
    expect((await fetch(`${server.url}/api/v1/nars/${big.narHash}`, { method: 'HEAD' })).status).toBe(404);
  });
});

/** GETs `url` and reports whether the whole declared body arrived. */
function download(url: string): Promise<{ status: number; declared: number; received: Buffer; complete: boolean }> {
  return new Promise((resolve, reject) => {
    http
      .get(url, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (d: Buffer) => chunks.push(d));
        res.on('error', () => undefined); // "aborted": judged by `complete` below
        res.on('close', () => resolve({ status: res.statusCode!, declared: Number(res.headers['content-length']), received: Buffer.concat(chunks), complete: res.complete }));
      })
      // A blob that fits in one read fails before any byte (or header) leaves: the connection drops.
      .on('error', (error: NodeJS.ErrnoException) => (error.code === 'ECONNRESET' ? resolve({ status: 0, declared: NaN, received: Buffer.alloc(0), complete: false }) : reject(error)));
  });
}

async function decompress(bytes: Buffer, method: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of Readable.from([bytes]).pipe(decompressStream(method as CompressionMethod))) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** The file behind a blob key in the fs store (found by name: the layout is the store's business). */
function blobFile(storeRoot: string, key: string): string {
  const name = key.slice(key.lastIndexOf('/') + 1);
  const found = filesUnder(storeRoot).filter((f) => f.endsWith(`/${name}`) && !f.startsWith('.tmp/'));
  expect(found).toHaveLength(1);
  return join(storeRoot, found[0]!);
}

async function attest(server: RunningServer, keys: SecretKey[], fields: { outPath: string; narHash: string; narSize: number; references?: string[]; drvPath?: string }): Promise<void> {
  for (const key of keys) {
    const res = await postAttestations(server.url, key, signedAttestation(key, fields));
    expect(res.status).toBe(201);
  }
}

async function narUrlOf(server: RunningServer, outPath: string): Promise<string> {
  const res = await fetch(`${server.url}/${hashPartOf(outPath as StorePath)}.narinfo`);
  expect(res.status).toBe(200);
  const url = /^URL: (.+)$/m.exec(await res.text())![1]!;
  return new URL(url, `${server.url}/`).href;
}

// A file of 300 KiB of random bytes stays about that size compressed, so its blob is streamed from
// the fs store; one of 1 KiB is read into memory at once. Both must be checked the same way.
for (const [size, dataBytes] of [['streamed', 300 * 1024], ['read at once', 1024]] as const) {
  describe(`a stored, advertised NAR (${size})`, () => {
    const alice = generateSecretKey('alice-1');
    const bob = generateSecretKey('bob-1');
    let server: RunningServer;
    let storeRoot: string;
    let nar: Nar;
    let key: string;
    let narUrl: string;

    beforeAll(async () => {
      let dir: string;
      ({ server, dir } = await startWithBuilders(alice, bob));
      storeRoot = join(dir, 'nars');
      nar = await treeNar(dataBytes);
      const res = await put(server, nar.narHash, nar.bytes, uploadAuthHeader(alice, nar.narHash, nar.narSize));
      expect(res.status).toBe(201);
      key = server.catalog.get(nar.narHash)!.blobKey;
      const outPath = randomStorePath('served');
      await attest(server, [alice, bob], { outPath, narHash: nar.narHash, narSize: nar.narSize });
      narUrl = await narUrlOf(server, outPath);
    });
    afterAll(() => server.close());

    it('was stored as uploaded: 201, HEAD 200, a second PUT is a 200 no-op, the blob decompresses to the NAR', async () => {
      const head = await fetch(`${server.url}/api/v1/nars/${nar.narHash}`, { method: 'HEAD' });
      expect(head.status).toBe(200);
      expect(head.headers.get('x-nar-size')).toBe(String(nar.narSize));
      const record = server.catalog.get(nar.narHash)!;
      const again = await put(server, nar.narHash, nar.bytes, uploadAuthHeader(alice, nar.narHash, nar.narSize));
      expect(again).toMatchObject({ status: 200, body: { created: false, fileHash: record.fileHash } });
      const stored = readFileSync(blobFile(storeRoot, key));
      expect(stored.length).toBe(record.fileSize);
      expect(narHashFromDigest(sha256(stored))).toBe(record.fileHash);
      expect(record.fileCrc32).toBe(crc32(stored));
      expect((await decompress(stored, record.compression)).equals(nar.bytes)).toBe(true);
      // And the substituter serves it whole.
      const got = await download(narUrl);
      expect(got).toMatchObject({ status: 200, complete: true, declared: record.fileSize });
      expect(got.received.equals(stored)).toBe(true);
    });

    // Rows from before CRCs were recorded (NULL) are checked against FileHash instead.
    for (const checked of ['CRC-32', 'SHA-256 (a row without a CRC)'] as const) {
      for (const [what, damage] of [
        ['a flipped byte in the middle', (file: string) => {
          const bytes = readFileSync(file);
          bytes[Math.floor(bytes.length / 2)]! ^= 0x01;
          writeFileSync(file, bytes);
        }],
        ['a truncated file', (file: string) => truncateSync(file, Math.floor(statSync(file).size / 2))],
      ] as const) {
        it(`is never served whole after ${what} in the store, checked by ${checked}: the download breaks, the server stays up, metrics and log say why`, async () => {
          const file = blobFile(storeRoot, key);
          const original = readFileSync(file);
          const crc = server.catalog.get(nar.narHash)!.fileCrc32;
          const setCrc = server.service.db.prepare('UPDATE nars SET file_crc32 = ? WHERE nar_hash = ?');
          if (checked !== 'CRC-32') setCrc.run(null, nar.narHash);
          const before = await metric(server, 'nixquorum_blobstore_errors_total{op="corrupt"}');
          try {
            damage(file);
            let got: Awaited<ReturnType<typeof download>> | undefined;
            const lines = await captureLogs(async () => {
              got = await download(narUrl);
              await until('the server counts the corrupt read', async () => (await metric(server, 'nixquorum_blobstore_errors_total{op="corrupt"}')) > before);
            });
            // Either the headers went out and the body breaks off before its end, or the connection drops.
            expect(got!.complete).toBe(false);
            if (got!.status !== 0) expect(got!.received.length).toBeLessThan(got!.declared);
            expect(await metric(server, 'nixquorum_blobstore_errors_total{op="corrupt"}')).toBe(before + 1);
            expect(lines).toContainEqual(expect.objectContaining({ level: 'error', msg: 'blob store returned corrupted NAR bytes', key }));
            expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
          } finally {
            writeFileSync(file, original);
            setCrc.run(crc, nar.narHash);
          }
          expect((await download(narUrl)).complete).toBe(true);
        });
      }
    }
  });
}

describe('a client that stops reading a large NAR and goes away', () => {
  const alice = generateSecretKey('alice-1');
  const bob = generateSecretKey('bob-1');

  it('makes the server stop reading and close the file; it keeps serving', async () => {
    const { server, dir } = await startWithBuilders(alice, bob);
    try {
      // Several 1 MiB reads and more than loopback socket buffers take, so the server waits on the client.
      const nar = await treeNar(24 * 1024 * 1024);
      expect((await put(server, nar.narHash, nar.bytes, uploadAuthHeader(alice, nar.narHash, nar.narSize))).status).toBe(201);
      const outPath = randomStorePath('big');
      await attest(server, [alice, bob], { outPath, narHash: nar.narHash, narSize: nar.narSize });
      const url = new URL(await narUrlOf(server, outPath));
      const file = blobFile(join(dir, 'nars'), server.catalog.get(nar.narHash)!.blobKey);
      // This process is the server: its descriptors open on the blob's file.
      const openOnBlob = () => readdirSync('/proc/self/fd').filter((fd) => { try { return readlinkSync(`/proc/self/fd/${fd}`) === file; } catch { return false; } }).length;

      const socket = connect(Number(url.port), url.hostname);
      socket.write(`GET ${url.pathname} HTTP/1.1\r\nHost: ${url.host}\r\n\r\n`);
      socket.pause();
      await until('the server has the file open', () => openOnBlob() === 1);
      await new Promise((r) => setTimeout(r, 200));
      expect(openOnBlob()).toBe(1);
      socket.destroy();
      await until('the server closes the file', () => openOnBlob() === 0);

      const again = await download(url.href);
      expect(again).toMatchObject({ status: 200, complete: true });
      expect(openOnBlob()).toBe(0);
    } finally {
      await server.close();
    }
  });
});

/** Runs a command without blocking the event loop (the server under test lives in this process). */
function run(cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stderr }));
  });
}

describeNix('a real Nix client and a corrupt blob store', () => {
  const alice = generateSecretKey('alice-1');
  const bob = generateSecretKey('bob-1');
  let server: RunningServer;
  let dataDir: string;
  let work: string;
  let outPath: string;
  let narHash: NarHash;

  beforeAll(async () => {
    ({ server, dir: dataDir } = await startWithBuilders(alice, bob));
    work = tempDir('nars-nix');
    temps.push(work);
    // A tiny real store path, built in a builder's chroot store.
    const builderStore = join(work, 'builder');
    const file = join(work, 'x.nix');
    writeFileSync(
      file,
      `derivation { name = "nq-corrupt"; salt = "${randomBytes(8).toString('hex')}"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "/bin/mkdir $out && /bin/echo hello > $out/data" ]; }\n`,
    );
    outPath = nix('nix-build', ['--store', builderStore, ...chrootBuildFlags, '--no-out-link', file]).trim();
    const [info] = JSON.parse(nix('nix', ['--store', builderStore, 'path-info', '--json', outPath])) as Array<{ narHash: string; narSize: number; references: string[] }>;
    const drvPath = nix('nix-store', ['--store', builderStore, '-q', '--deriver', outPath]).trim();
    // `nix store dump-path` reads through --store (nix-store --dump would read the host's /nix/store).
    const bytes = execFileSync('nix', ['--store', builderStore, 'store', 'dump-path', outPath], { env: nixEnv, maxBuffer: 1 << 26 });
    narHash = parseNarHash(info!.narHash);
    expect(narHashFromDigest(sha256(bytes))).toBe(narHash);
    expect((await put(server, narHash, bytes, uploadAuthHeader(alice, narHash, info!.narSize))).status).toBe(201);
    await attest(server, [alice, bob], { outPath, narHash, narSize: info!.narSize, references: info!.references, drvPath });
  });
  afterAll(() => server.close());

  const substitute = (client: string) =>
    run('nix-store', [
      '--store', join(work, client),
      '-r', outPath,
      '--option', 'substituters', server.url,
      '--option', 'trusted-public-keys', readFileSync(join(dataDir, 'cache-key.public'), 'utf8').trim(),
    ], { ...nixEnv, XDG_CACHE_HOME: join(work, `cache-${client}`) });

  it('substitutes the path while the blob is intact, and fails cleanly once it is corrupt', async () => {
    const good = await substitute('client-good');
    expect(good.stderr).not.toMatch(/error/);
    expect(good.code).toBe(0);
    expect(readFileSync(join(work, 'client-good', outPath.slice(1), 'data'), 'utf8')).toBe('hello\n');

    const file = blobFile(join(dataDir, 'nars'), server.catalog.get(narHash)!.blobKey);
    const bytes = readFileSync(file);
    bytes[Math.floor(bytes.length / 2)]! ^= 0x01;
    writeFileSync(file, bytes);
    const before = await metric(server, 'nixquorum_blobstore_errors_total{op="corrupt"}');

    let bad: Awaited<ReturnType<typeof substitute>> | undefined;
    const lines = await captureLogs(async () => {
      bad = await substitute('client-bad');
    });
    expect(bad!.code).not.toBe(0);
    expect(bad!.code).not.toBeNull(); // an exit, not a crash by signal
    expect(bad!.stderr).toMatch(/error/);
    expect(nix('nix-store', ['--store', join(work, 'client-bad'), '--check-validity', '--print-invalid', outPath]).trim()).toBe(outPath);
    // Nix retries a broken transfer; every attempt was cut and counted.
    const corrupt = lines.filter((l) => l.msg === 'blob store returned corrupted NAR bytes');
    expect(corrupt.length).toBeGreaterThan(0);
    expect(await metric(server, 'nixquorum_blobstore_errors_total{op="corrupt"}')).toBe(before + corrupt.length);
    expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
  });
});

describe('a narinfo lookup whose database read fails', () => {
  const alice = generateSecretKey('alice-1');
  const bob = generateSecretKey('bob-1');

  it('answers 500 without a stack trace, logs why, and the server keeps serving', async () => {
    const { server } = await startWithBuilders(alice, bob);
    try {
      const nar = await treeNar(64);
      expect((await put(server, nar.narHash, nar.bytes, uploadAuthHeader(alice, nar.narHash, nar.narSize))).status).toBe(201);
      const outPath = randomStorePath('served');
      await attest(server, [alice, bob], { outPath, narHash: nar.narHash, narSize: nar.narSize });
      // The substituter's read connection re-prepares its lookup and finds no table.
      server.service.db.exec('ALTER TABLE decisions RENAME TO decisions_away');
      let res: Response | undefined;
      const lines = await captureLogs(async () => {
        res = await fetch(`${server.url}/${hashPartOf(outPath as StorePath)}.narinfo`);
      });
      expect(res!.status).toBe(500);
      expect(await res!.json()).toEqual({ error: 'internal error', code: 'internal' });
      expect(lines).toContainEqual(expect.objectContaining({ level: 'error', msg: 'substituter request failed' }));
      server.service.db.exec('ALTER TABLE decisions_away RENAME TO decisions');
      expect((await fetch(`${server.url}/${hashPartOf(outPath as StorePath)}.narinfo`)).status).toBe(200);
    } finally {
      await server.close();
    }
  });
});
