import Database from 'better-sqlite3';
import { createPrivateKey, createPublicKey, sign, verify } from 'node:crypto';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addBuilder, revokeBuilder } from '../../src/app/builders.js';
import { parseAttestation } from '../../src/ledger/attestation.js';
import { createLogger } from '../../src/log.js';
import { formatPublicKey, generateSecretKey } from '../../src/nix/keys.js';
import { hashPartOf, type StorePath } from '../../src/nix/storePath.js';
import { startServer, type RunningServer } from '../../src/serve.js';
import { openService } from '../../src/service.js';
import { randomNarHash, randomStorePath, signedAttestation, testConfig } from '../helpers/ledger.js';
import { tempDir } from '../helpers/nix.js';
import { runCli } from '../helpers/server.js';

// ---- Ed25519 points, from RFC 8032 section 5.1, written here independently of src/nix/ed25519Point.ts ----
const p = 2n ** 255n - 19n;
const L = 2n ** 252n + 27742317777372353535851937790883648493n;
const m = (a: bigint) => ((a % p) + p) % p;
const pow = (b: bigint, e: bigint): bigint => {
  let r = 1n;
  for (b = m(b); e > 0n; e >>= 1n, b = (b * b) % p) if (e & 1n) r = (r * b) % p;
  return r;
};
const inv = (a: bigint) => pow(a, p - 2n);
const d = m(-121665n * inv(121666n));
type Point = [x: bigint, y: bigint];
const add = ([x1, y1]: Point, [x2, y2]: Point): Point => {
  const t = m(d * x1 * x2 * y1 * y2);
  return [m((x1 * y2 + x2 * y1) * inv(1n + t)), m((y1 * y2 + x1 * x2) * inv(1n - t))];
};
const times = (n: bigint, P: Point): Point => {
  let r: Point = [0n, 1n];
  for (let q = P; n > 0n; n >>= 1n, q = add(q, q)) if (n & 1n) r = add(r, q);
  return r;
};
const isIdentity = ([x, y]: Point) => x === 0n && y === 1n;
/** x for y with the given sign, or undefined when y is no point's. */
function recoverX(y: bigint, sign: bigint): bigint | undefined {
  const x2 = m((y * y - 1n) * inv(d * y * y + 1n));
  let x = pow(x2, (p + 3n) / 8n);
  if (m(x * x) !== x2) x = m(x * pow(2n, (p - 1n) / 4n));
  if (m(x * x) !== x2) return undefined;
  return (x & 1n) === sign ? x : m(-x);
}
/** The 32-byte encoding of y with a sign bit, spelled as given (y may be >= p). */
function encode(y: bigint, sign: bigint): Buffer {
  const b = Buffer.alloc(32);
  let v = y | (sign << 255n);
  for (let i = 0; i < 32; i++, v >>= 8n) b[i] = Number(v & 0xffn);
  return b;
}
/** The eight points of small order: the torsion part L*Q of a point Q, and its multiples. */
function smallOrderPoints(): Point[] {
  for (let y = 2n; ; y++) {
    const x = recoverX(y, 0n);
    if (x === undefined) continue;
    const t = times(L, [x, y]);
    if (isIdentity(times(4n, t))) continue; // not of order 8
    return Array.from({ length: 8 }, (_, k) => times(BigInt(k), t));
  }
}

const named = (name: string, raw: Buffer) => `${name}:${raw.toString('base64')}`;

describe('one key, one builder', () => {
  let dir: string;
  let server: RunningServer;
  const admin = (path: string, body?: unknown, method = 'POST') =>
    fetch(`${server.url}/api/v1/${path}`, { method, headers: { authorization: `Bearer ${server.service.adminToken}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });

  beforeAll(async () => {
    dir = tempDir('identity');
    server = await startServer(testConfig(dir));
  });
  afterAll(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('refuses a key registered under another name, before and after revocation, with 409 naming that name; a retry of the same add is answered 200', async () => {
    const alice = generateSecretKey('alice-1');
    expect((await admin('builders', { publicKey: formatPublicKey(alice.publicKey) })).status).toBe(201);
    const again = await admin('builders', { publicKey: formatPublicKey(alice.publicKey) });
    expect(again.status).toBe(200);
    const leaves = server.service.log.size();
    const alias = await admin('builders', { publicKey: named('alice-2', alice.publicKey.raw) });
    expect(alias.status).toBe(409);
    expect(await alias.json()).toMatchObject({ code: 'key-registered', field: 'publicKey', error: expect.stringMatching(/already registered as alice-1/) });
    expect((await admin('builders/alice-1/revoke')).status).toBe(200);
    const comeback = await admin('builders', { publicKey: named('alice-3', alice.publicKey.raw) });
    expect(comeback.status).toBe(409);
    expect(await comeback.json()).toMatchObject({ code: 'key-revoked', error: expect.stringMatching(/registered as alice-1 and revoked/) });
    const reused = await admin('builders', { publicKey: formatPublicKey(alice.publicKey) });
    expect(reused.status).toBe(409);
    expect(await reused.json()).toMatchObject({ code: 'builder-exists', error: expect.stringMatching(/revoked; names are never reused/) });
    // Only the revocation was logged.
    expect(server.service.log.size()).toBe(leaves + 1);
    expect((await admin('builders/nobody-1/revoke')).status).toBe(404);
  });

  it('refuses all eight small-order points and non-canonical encodings, by the API and the CLI', async () => {
    const points = smallOrderPoints();
    expect(new Set(points.map(([x, y]) => `${x},${y}`)).size).toBe(8);
    for (const P of points) expect(isIdentity(times(8n, P))).toBe(true);
    const bad: Array<[string, Buffer]> = points.map(([x, y], i) => [`small-order ${i}`, encode(y, x & 1n)]);
    // Second spellings: y + p for each y < 19 (of small-order points and others), and "negative zero" x.
    for (let y = 0n; y < 19n; y++) if (recoverX(y, 0n) !== undefined) bad.push([`y = ${y} + p`, encode(y + p, 0n)]);
    bad.push(['negative zero at y = 1', encode(1n, 1n)], ['negative zero at y = -1', encode(p - 1n, 1n)]);
    expect(bad.length).toBeGreaterThanOrEqual(12);
    for (const [what, raw] of bad) {
      const res = await admin('builders', { publicKey: named('evil-1', raw) });
      expect(res.status, what).toBe(400);
      expect(await res.json(), what).toMatchObject({ code: 'bad-key', field: 'publicKey', error: expect.stringMatching(/small order|not canonically encoded|not a point/) });
    }
    for (const [, raw] of [bad[0]!, bad[bad.length - 1]!]) {
      const cli = await runCli(['builder', 'add', 'evil-1', named('evil-1', raw), '--server', server.url, '--admin-token', server.service.adminToken]);
      expect(cli.code).toBe(1);
      expect(cli.stderr.trim().split('\n')).toHaveLength(1);
      expect(cli.stderr).toMatch(/^nix-quorum: .*(small order|not canonically encoded)/);
    }
    expect(server.service.registry.get('evil-1')).toBeUndefined();
  });

  it('accepts the keys of RFC 8032 section 7.1 and checks their signatures as the RFC gives them', async () => {
    const vectors = [
      ['9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60', 'd75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a', '', 'e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b'],
      ['4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb', '3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c', '72', '92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00'],
      ['c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7', 'fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025', 'af82', '6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a'],
    ];
    for (const [i, [seed, pub, msg, sig]] of vectors.entries()) {
      const privateKey = createPrivateKey({ key: Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), Buffer.from(seed!, 'hex')]), format: 'der', type: 'pkcs8' });
      expect(createPublicKey(privateKey).export({ format: 'der', type: 'spki' }).subarray(12).toString('hex')).toBe(pub);
      expect(sign(null, Buffer.from(msg!, 'hex'), privateKey).toString('hex')).toBe(sig);
      expect(verify(null, Buffer.from(msg!, 'hex'), createPublicKey(privateKey), Buffer.from(sig!, 'hex'))).toBe(true);
      const res = await admin('builders', { publicKey: named(`rfc8032-${i + 1}`, Buffer.from(pub!, 'hex')) });
      expect(res.status).toBe(201);
    }
  });
});

describe('quorum counts keys, never names', () => {
  it('never reaches quorum through an alias written into the database, while running and after a restart', async () => {
    const dir = tempDir('alias');
    const logged: string[] = [];
    const [alice, bob] = [generateSecretKey('alice-1'), generateSecretKey('bob-1')];
    const outPath = randomStorePath('aliased');
    const narHash = randomNarHash();
    let server = await startServer(testConfig(dir));
    try {
      addBuilder(server.service, alice.publicKey);
      addBuilder(server.service, bob.publicKey);
      expect((await server.service.ingestor.submit([parseAttestation(signedAttestation(alice, { outPath, narHash }))]))[0]!.status).toBe('accepted');
      // Another process writes alice's key under a second name, "registered" by a made-up leaf number,
      // with an attestation by it (the statement does not name the builder: alice's signature is valid),
      // a NAR, and a policy that names both.
      const db = new Database(join(dir, 'ledger.sqlite'));
      const insertAlias = () => db.prepare('INSERT INTO builders (name, public_key, added_at, added_leaf) VALUES (?, ?, 0, 999999)').run('alice-alias-1', alice.publicKey.raw).lastInsertRowid;
      // The schema refuses a second registered row of one key; whoever edits the file can drop the index too.
      expect(insertAlias).toThrow(/UNIQUE constraint failed: builders.public_key/);
      db.exec('DROP INDEX builders_key');
      const aliasId = insertAlias();
      const a = signedAttestation(alice, { outPath, narHash });
      db.prepare(
        "INSERT INTO attestations (leaf_index, builder_id, drv_path, output_name, out_path, nar_hash, nar_size, refs, signature, created_at) VALUES (999998, ?, ?, 'out', ?, ?, 1234, '', ?, 0)",
      ).run(aliasId, a.drvPath, outPath, narHash, Buffer.from(a.signature, 'base64'));
      db.prepare("INSERT INTO nars (nar_hash, nar_size, blob_key, compression, file_hash, file_size, created_at) VALUES (?, 1234, 'nar/x.nar', 'none', ?, 1234, 0)").run(narHash, narHash);
      db.exec("INSERT INTO policies (name, threshold, on_conflict, all_builders, updated_at) VALUES ('pair', 2, 'ignore', 0, 0)");
      db.exec("INSERT INTO policy_builders (policy, builder_name) VALUES ('pair', 'alice-1'), ('pair', 'alice-alias-1')");
      db.close();
      // Whatever re-decides the path now sees two rows of one key: one vote.
      server.service.decisions.recompute([outPath]);
      expect(server.service.db.prepare("SELECT status FROM decisions WHERE out_path = ? AND status = 'quorum'").all(outPath)).toEqual([]);
      expect((await fetch(`${server.url}/${hashPartOf(outPath as StorePath)}.narinfo`)).status).toBe(404);
      expect((await fetch(`${server.url}/policy/pair/${hashPartOf(outPath as StorePath)}.narinfo`)).status).toBe(404);
      // The alias cannot attest either.
      const [refused] = await server.service.ingestor.submit([parseAttestation({ ...signedAttestation(alice, { outPath: randomStorePath(), narHash }), builder: 'alice-alias-1' })]);
      expect(refused).toMatchObject({ status: 'rejected', code: 'unknown-builder' });
      await server.close();

      server = await startServer(testConfig(dir, { logLevel: 'warn' }), createLogger('warn', (line) => logged.push(line)));
      expect(logged.join('')).toMatch(/builder alice-alias-1: no registry leaf states it; it no longer counts/);
      expect(logged.join('')).toMatch(/policy pair: no policy leaf states it; removed/);
      expect((await fetch(`${server.url}/${hashPartOf(outPath as StorePath)}.narinfo`)).status).toBe(404);
    } finally {
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a revocation that commits while a submission is being verified wins: the submission is refused', async () => {
    const dir = tempDir('revoke-race');
    const service = openService(testConfig(dir), createLogger('error'));
    try {
      const bob = generateSecretKey('bob-1');
      addBuilder(service, bob.publicKey);
      const pending = service.ingestor.submit(Array.from({ length: 50 }, () => parseAttestation(signedAttestation(bob, { outPath: randomStorePath(), narHash: randomNarHash() }))));
      // The signatures are in the verify pool now; the revocation commits first.
      revokeBuilder(service, 'bob-1');
      const results = await pending;
      expect(results.every((r) => r.status === 'rejected' && r.code === 'revoked-builder')).toBe(true);
      expect(service.db.prepare('SELECT COUNT(*) FROM attestations').pluck().get()).toBe(0);
    } finally {
      service.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
