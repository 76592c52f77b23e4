import { addBuilder } from '../../src/app/builders.js';
import { rmSync } from 'node:fs';
import { brotliCompressSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QuorumClient } from '../../src/builder/remote.js';
import { capLog } from '../../src/builder/buildLog.js';
import { parseAttestation } from '../../src/ledger/attestation.js';
import { MAX_LOG_BYTES, logBlobKey } from '../../src/logs/buildLogs.js';
import { logAuthHeader, logAuthText } from '../../src/http/builderAuth.js';
import { narHashFromDigest, sha256 } from '../../src/nix/hash.js';
import { generateSecretKey, verifyRaw, type SecretKey } from '../../src/nix/keys.js';
import { baseNameOf, type StorePath } from '../../src/nix/storePath.js';
import { Readable } from 'node:stream';
import { startServer, type RunningServer } from '../../src/serve.js';
import { randomNarHash, randomStorePath, signedAttestation, testConfig } from '../helpers/ledger.js';
import { tempDir } from '../helpers/nix.js';

describe('build logs: delivered by builders, fetched as from a binary cache', () => {
  let dir: string;
  let server: RunningServer;
  const alice = generateSecretKey('log-alice-1');
  const bob = generateSecretKey('log-bob-1');
  const mallory = generateSecretKey('log-mallory-1');
  const outPath = randomStorePath('logged-1.0');
  const drvPath = `${randomStorePath('logged-1.0')}.drv` as StorePath;
  const logText = Buffer.from(`building '${drvPath}'...\nhello from the builder\n`);

  const put = (key: SecretKey, body: Buffer, options: { drv?: string; as?: string; digest?: Buffer; encoding?: string; length?: number } = {}) => {
    const digest = options.digest ?? sha256(body);
    const drv = options.drv ?? drvPath;
    return fetch(`${server.url}/api/v1/logs/${encodeURIComponent(baseNameOf(drv as StorePath))}/${options.as ?? key.name}`, {
      method: 'PUT',
      headers: {
        'content-encoding': options.encoding ?? 'br',
        'content-digest': `sha-256=:${digest.toString('base64')}:`,
        authorization: logAuthHeader(key, drv, narHashFromDigest(digest), options.length ?? body.length),
      },
      body: new Uint8Array(body),
    });
  };

  beforeAll(async () => {
    dir = tempDir('logs');
    server = await startServer(testConfig(dir));
    for (const k of [alice, bob]) addBuilder(server.service, k.publicKey);
    const narHash = randomNarHash();
    await server.service.ingestor.submit([alice, bob].map((k) => parseAttestation(signedAttestation(k, { outPath, narHash, drvPath }))));
  });
  afterAll(async () => {
    await server?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('takes a builder\'s signed, compressed log once, and serves it plain or compressed with who signed it', async () => {
    const client = new QuorumClient(server.url);
    expect(await client.hasLog(drvPath, alice.name)).toBe(false);
    const compressed = brotliCompressSync(logText);
    await client.putLog(drvPath, alice, compressed);
    expect(await client.hasLog(drvPath, alice.name)).toBe(true);
    // A second upload is answered with the first, unread.
    const again = await put(alice, brotliCompressSync(Buffer.from('another log')));
    expect(again.status).toBe(200);

    const plain = await fetch(`${server.url}/log/${baseNameOf(drvPath)}`, { headers: { 'accept-encoding': 'identity' } });
    expect(plain.status).toBe(200);
    expect(plain.headers.get('content-type')).toBe('text/plain; charset=utf-8');
    expect(plain.headers.get('content-encoding')).toBeNull();
    expect(Buffer.from(await plain.arrayBuffer())).toEqual(logText);
    // Anyone can check the served bytes against the builder's key.
    const [, ts, sig] = /^ts=(\d+),sig=(.+)$/.exec(plain.headers.get('x-log-signature')!)!;
    expect(plain.headers.get('x-log-builder')).toBe(alice.name);
    expect(verifyRaw(alice.publicKey, logAuthText(drvPath, narHashFromDigest(sha256(compressed)), compressed.length, Number(ts)), Buffer.from(sig!, 'base64'))).toBe(true);

    const br = await fetch(`${server.url}/log/${baseNameOf(drvPath)}`, { headers: { 'accept-encoding': 'gzip, br' } });
    expect(br.headers.get('content-encoding')).toBe('br');
    expect(Buffer.from(await br.arrayBuffer())).toEqual(logText); // fetch decodes it
    expect((await fetch(`${server.url}/log/${baseNameOf(drvPath)}?builder=${bob.name}`)).status).toBe(404);
    expect((await fetch(`${server.url}/log/${baseNameOf(`${randomStorePath('x')}.drv` as StorePath)}`)).status).toBe(404);
    expect((await fetch(`${server.url}/policy/nope/log/${baseNameOf(drvPath)}`)).status).toBe(404);
  });

  it('refuses uploads by strangers, for others, of underived logs, or that do not check out, and keeps nothing', async () => {
    const body = brotliCompressSync(Buffer.from('bogus'));
    const cases: Array<[string, () => Promise<Response>, number, string]> = [
      ['an unregistered key', () => put(mallory, body), 403, 'forbidden'],
      ['someone else\'s name', () => put(alice, body, { as: bob.name }), 403, 'forbidden'],
      ['a derivation the key never attested', () => put(bob, body, { drv: `${randomStorePath('other')}.drv` }), 403, 'forbidden'],
      ['a body other than the signed one', () => put(bob, body, { digest: sha256(Buffer.from('x')) }), 400, 'bad-log-hash'],
      ['a signature over another size', () => put(bob, body, { length: body.length + 1 }), 403, 'forbidden'],
      ['no brotli', () => put(bob, Buffer.from('plain text, not brotli')), 400, 'bad-log'],
      ['another encoding', () => put(bob, body, { encoding: 'gzip' }), 415, 'unsupported-encoding'],
      ['a bomb', () => put(bob, brotliCompressSync(Buffer.alloc(MAX_LOG_BYTES + 1))), 413, 'too-large'],
    ];
    for (const [what, send, status, code] of cases) {
      const res = await send();
      expect(res.status, what).toBe(status);
      expect(((await res.json()) as { code: string }).code, what).toBe(code);
    }
    expect(await new QuorumClient(server.url).hasLog(drvPath, bob.name)).toBe(false);
    expect(await server.blobs.head(logBlobKey(drvPath, server.service.registry.get(bob.name)!.id))).toBeNull();
  });

  it('cuts a log that is too long to its end, saying so', () => {
    const log = Buffer.from('0123456789'.repeat(10));
    const cut = capLog(log, 80);
    expect(cut.length).toBe(80);
    expect(cut.toString()).toMatch(/^\[nix-quorum: the first \d+ bytes of this 100-byte log were left out\]\n/);
    expect(log.toString().endsWith(cut.toString().split('\n')[1]!)).toBe(true);
    expect(capLog(log, 100)).toBe(log);
  });

  it('breaks the download off when the blob store changed the stored bytes', async () => {
    const key = logBlobKey(drvPath, server.service.registry.get(alice.name)!.id);
    const stored = (await server.blobs.get(key))!;
    const chunks: Buffer[] = [];
    for await (const c of stored.body) chunks.push(c as Buffer);
    const bytes = Buffer.concat(chunks);
    bytes[bytes.length - 1]! ^= 1;
    await server.blobs.put(key, Readable.from([bytes]));
    await expect(fetch(`${server.url}/log/${baseNameOf(drvPath)}`).then((r) => r.arrayBuffer())).rejects.toThrow();
  });
});
