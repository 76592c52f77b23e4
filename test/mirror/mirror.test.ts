import Database from 'better-sqlite3';
import fc from 'fast-check';
import { cpSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { postAttestations } from '../../bench/common.js';
import { addBuilder, revokeBuilder } from '../../src/app/builders.js';
import { deletePolicy, setPolicy } from '../../src/app/policies.js';
import { uploadAuthHeader } from '../../src/http/builderAuth.js';
import { parseAttestation } from '../../src/ledger/attestation.js';
import { auditLog } from '../../src/ledger/audit.js';
import { narHashFromDigest, sha256 } from '../../src/nix/hash.js';
import { generateSecretKey, type SecretKey } from '../../src/nix/keys.js';
import { dumpNar } from '../../src/nix/nar/index.js';
import { parseNarInfo } from '../../src/nix/narinfo.js';
import { hashPartOf, type StorePath } from '../../src/nix/storePath.js';
import { startServer, type RunningServer } from '../../src/serve.js';
import { hostileProxy } from '../helpers/hostileProxy.js';
import { randomNarHash, randomStorePath, signedAttestation, testConfig } from '../helpers/ledger.js';
import { ledger202611, appendAttestations202611 } from '../helpers/ledger202611.js';
import { metric } from '../helpers/nars.js';
import { tempDir } from '../helpers/nix.js';
import { servedQuorum } from '../helpers/replay.js';
import { freePort } from '../helpers/server.js';

/** Every decision row, as comparable text: the mirror must hold exactly the primary's. */
function decisions(server: RunningServer): string[] {
  return (server.service.db.prepare('SELECT policy, out_path, status, nar_hash, nar_size, refs, deriver, sigs, agreeing FROM decisions ORDER BY policy, out_path').raw().all() as unknown[][]).map((r) => JSON.stringify(r));
}

/** Every conflict row, by builder name (a mirror numbers its builder rows itself). */
function conflicts(server: RunningServer): unknown[] {
  return server.service.db.prepare('SELECT b.name, c.out_path, c.first_leaf, c.second_leaf FROM conflicts c JOIN builders b ON b.id = c.builder_id ORDER BY 1, 2, 3, 4').raw().all();
}

/** A NAR of one file holding `text`, uploaded to `primary` by `key`: what a path attested with it serves. */
async function uploadNar(primary: RunningServer, key: SecretKey, dir: string, text: string): Promise<{ narHash: string; narSize: number; bytes: Buffer }> {
  const src = join(dir, 'src');
  writeFileSync(src, text);
  const chunks: Buffer[] = [];
  for await (const c of dumpNar(src)) chunks.push(c);
  const bytes = Buffer.concat(chunks);
  const narHash = narHashFromDigest(sha256(bytes));
  expect((await fetch(`${primary.url}/api/v1/nars/${narHash}`, { method: 'PUT', body: new Uint8Array(bytes), headers: { authorization: uploadAuthHeader(key, narHash as never, bytes.length) } })).status).toBe(201);
  return { narHash, narSize: bytes.length, bytes };
}

const follow = (primary: RunningServer, extra: Record<string, unknown> = {}) => ({ follow: { url: primary.url, logKey: primary.service.noteVerifierText, pollMs: 100_000, ...extra } });

describe('a mirror', () => {
  const dirs: string[] = [];
  const fresh = (name: string) => {
    const d = tempDir(name);
    dirs.push(d);
    return d;
  };
  afterAll(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });
  const [alice, bob, carol] = ['alice-1', 'bob-1', 'carol-1'].map(generateSecretKey) as [SecretKey, SecretKey, SecretKey];

  let primaryDir: string;
  /** The primary's address stays the same across its restarts: the mirror follows that URL. */
  let port: number;
  const startPrimary = () => startServer(testConfig(primaryDir, { listen: `127.0.0.1:${port}` }));
  let primary: RunningServer;
  let mirror: RunningServer;
  let served: { outPath: string; narHash: string; narSize: number; bytes: Buffer };

  beforeAll(async () => {
    primaryDir = fresh('primary');
    port = await freePort();
    primary = await startPrimary();
    for (const k of [alice, bob, carol]) addBuilder(primary.service, k.publicKey);
    served = { outPath: randomStorePath('served'), ...(await uploadNar(primary, alice, primaryDir, 'mirrored bytes\n')) };
    for (const k of [alice, bob]) expect((await postAttestations(primary.url, k, signedAttestation(k, served))).status).toBe(201);
    // Some dissent, an equivocation, a policy, a revocation: every kind of leaf.
    const other = randomStorePath('disputed');
    await primary.service.ingestor.submit([alice, bob, carol].map((k, i) => parseAttestation(signedAttestation(k, { outPath: other, narHash: i === 2 ? randomNarHash() : served.narHash }))));
    await primary.service.ingestor.submit([parseAttestation(signedAttestation(carol, { outPath: other, narHash: randomNarHash() }))]);
    setPolicy(primary.service, { name: 'lenient', threshold: 1, onConflict: 'ignore', builders: ['carol-1'] });
    primary.service.checkpoints.publish();
    mirror = await startServer(testConfig(fresh('mirror'), follow(primary)));
  }, 60_000);
  afterAll(async () => {
    await mirror?.close();
    await primary?.close();
  });

  it('verifies and applies the whole log: the same registry, policies and decisions as the primary, served read-only', async () => {
    await mirror.follower!.sync();
    expect(mirror.follower!.current()).toMatchObject({ verifiedSize: primary.service.log.size(), degraded: null });
    expect(decisions(mirror)).toEqual(decisions(primary));
    for (const path of ['builders', 'policies']) expect(await (await fetch(`${mirror.url}/api/v1/${path}`)).json()).toEqual(await (await fetch(`${primary.url}/api/v1/${path}`)).json());
    for (const policy of ['default', 'lenient']) expect(await servedQuorum(mirror.url, policy)).toEqual(await servedQuorum(primary.url, policy));
    expect(mirror.service.db.prepare('SELECT COUNT(*) FROM conflicts').pluck().get()).toBe(primary.service.db.prepare('SELECT COUNT(*) FROM conflicts').pluck().get());
    // The primary's checkpoint, as the primary signed it; an auditor's verify passes against the mirror.
    expect(await (await fetch(`${mirror.url}/api/v1/log/checkpoint`)).text()).toBe(await (await fetch(`${primary.url}/api/v1/log/checkpoint`)).text());
    expect((await auditLog(mirror.url, { verifierKey: primary.service.noteVerifierText })).problems).toEqual([]);
    // Writes belong to the primary.
    const refused = await postAttestations(mirror.url, alice, signedAttestation(alice, { outPath: randomStorePath(), narHash: randomNarHash() }));
    expect(refused.status).toBe(421);
    expect(await refused.json()).toMatchObject({ code: 'mirror-read-only', error: expect.stringContaining(primary.url) });
  });

  it('serves the NAR it fetched from the primary and checked, signed with its own cache key', async () => {
    const res = await fetch(`${mirror.url}/${hashPartOf(served.outPath as StorePath)}.narinfo`);
    expect(res.status).toBe(200);
    const info = parseNarInfo(await res.text());
    expect(info.narHash).toBe(served.narHash);
    expect(info.sigs.some((s) => s.startsWith(`${mirror.service.cacheKey.name}:`))).toBe(true);
    expect(mirror.catalog.get(served.narHash as never)).toBeDefined();
    expect((await fetch(new URL(info.url, `${mirror.url}/`))).status).toBe(200);
  });

  it('follows changes: a revocation and new attestations replicate', async () => {
    revokeBuilder(primary.service, 'bob-1');
    deletePolicy(primary.service, 'lenient');
    await primary.service.ingestor.submit([parseAttestation(signedAttestation(carol, { outPath: randomStorePath('later'), narHash: randomNarHash() }))]);
    primary.service.checkpoints.publish();
    await mirror.follower!.sync();
    expect(mirror.follower!.current().verifiedSize).toBe(primary.service.log.size());
    expect(decisions(mirror)).toEqual(decisions(primary));
    expect((await fetch(`${mirror.url}/${hashPartOf(served.outPath as StorePath)}.narinfo`)).status).toBe(404);
  });

  /**
   * The primary's history rewritten while it is down: `edit` changes attestation rows, the tree is
   * rebuilt over the rewritten leaves and a checkpoint signed over it at the next start. Returns
   * the primary as it was, to restore.
   */
  async function rewritePrimary(edit: (db: Database.Database) => void): Promise<() => Promise<void>> {
    const size = primary.service.log.size();
    await primary.close();
    const backup = fresh('backup');
    cpSync(primaryDir, backup, { recursive: true });
    const db = new Database(join(primaryDir, 'ledger.sqlite'));
    db.pragma('foreign_keys = OFF');
    edit(db);
    db.exec('DELETE FROM merkle_nodes; DELETE FROM checkpoints; DELETE FROM cosignatures');
    const { MerkleLog } = await import('../../src/ledger/log.js');
    const { leavesByIndex } = await import('../../src/ledger/queries.js');
    new MerkleLog(db).append(0, leavesByIndex(db, 0, size).map((l) => l.leaf));
    db.close();
    primary = await startPrimary();
    return async () => {
      await primary.close();
      rmSync(primaryDir, { recursive: true, force: true });
      cpSync(backup, primaryDir, { recursive: true });
      primary = await startPrimary();
    };
  }

  /** After a restore: new entries, and the mirror follows again. */
  async function expectResumed(): Promise<void> {
    await primary.service.ingestor.submit([parseAttestation(signedAttestation(alice, { outPath: randomStorePath('after'), narHash: randomNarHash() }))]);
    primary.service.checkpoints.publish();
    await mirror.follower!.sync();
    expect(mirror.follower!.current()).toMatchObject({ verifiedSize: primary.service.log.size(), degraded: null });
    expect(await (await fetch(`${mirror.url}/healthz`)).text()).toBe('ok\n');
    expect(await (await fetch(`${mirror.url}/transparency-log`)).text()).toContain('data-mirror="following"');
  }

  it('stops at the last verified size on a rewritten history, keeps the evidence, keeps serving; resumes once the primary is consistent again', async () => {
    const size = primary.service.log.size();
    const before = decisions(mirror);
    const restore = await rewritePrimary((db) => {
      const row = db.prepare('SELECT MAX(leaf_index) FROM attestations').pluck().get() as number;
      db.prepare('UPDATE attestations SET nar_size = nar_size + 1 WHERE leaf_index = ?').run(row);
    });
    await mirror.follower!.sync();
    const status = mirror.follower!.current();
    expect(status.verifiedSize).toBe(size);
    expect(status.degraded).toMatch(/another root than the tree this mirror verified: a fork/);
    expect(await (await fetch(`${mirror.url}/healthz`)).text()).toMatch(/^degraded: /);
    expect(mirror.service.db.prepare('SELECT kind, verified_note IS NOT NULL AS kept FROM mirror_evidence').all()).toEqual([{ kind: 'fork', kept: 1 }]);
    // The evidence is served, both signed notes of the same size with different roots: the API and the log page show it.
    const { evidence } = (await (await fetch(`${mirror.url}/api/v1/mirror`)).json()) as { evidence: Array<{ kind: string; verifiedNote: string; offeredNote: string }> };
    expect(evidence).toHaveLength(1);
    const [verifiedLines, offeredLines] = [evidence[0]!.verifiedNote, evidence[0]!.offeredNote].map((n) => n.split('\n'));
    expect(offeredLines![1]).toBe(verifiedLines![1]);
    expect(offeredLines![2]).not.toBe(verifiedLines![2]);
    const page = await (await fetch(`${mirror.url}/transparency-log`)).text();
    expect(page).toContain('data-mirror="degraded"');
    expect(page).toContain('<details class="evidence" data-kind="fork">');
    expect(decisions(mirror)).toEqual(before);
    await restore();
    await expectResumed();
  }, 60_000);

  /** `count` attestations by alice, each of a path of its own, submitted to the primary. */
  async function bulk(count: number, label: string): Promise<void> {
    const many = Array.from({ length: count }, (_, i) => parseAttestation(signedAttestation(alice, { outPath: randomStorePath(`${label}-${i}`), narHash: randomNarHash() })));
    for (let i = 0; i < many.length; i += 2000) expect((await primary.service.ingestor.submit(many.slice(i, i + 2000))).every((r) => r.status === 'accepted')).toBe(true);
  }
  const attestationsFrom = (server: RunningServer, index: number) => server.service.db.prepare('SELECT COUNT(*) FROM attestations WHERE leaf_index >= ?').pluck().get(index) as number;
  /** A rewritePrimary edit: the signature of entry `index` forged, one flipped bit. */
  const forgeSignature = (index: number) => (db: Database.Database) => {
    const signature = db.prepare('SELECT signature FROM attestations WHERE leaf_index = ?').pluck().get(index) as Buffer;
    signature[10]! ^= 1;
    db.prepare('UPDATE attestations SET signature = ? WHERE leaf_index = ?').run(signature, index);
  };

  it('refuses a range holding a leaf whose signature does not verify, among thousands that do; serves nothing of it', async () => {
    const size = primary.service.log.size();
    const before = decisions(mirror);
    // More than one verification batch, so the bad one is found among batches verified concurrently.
    await bulk(4500, 'bulk');
    const restore = await rewritePrimary(forgeSignature(size + 3333));
    await mirror.follower!.sync();
    const status = mirror.follower!.current();
    expect(status.verifiedSize).toBe(size);
    expect(status.degraded).toMatch(new RegExp(`entry ${size + 3333}: the signature by \\S+ does not verify`));
    expect(mirror.service.log.size()).toBe(size);
    expect(decisions(mirror)).toEqual(before);
    await restore();
    await expectResumed();
  }, 120_000);

  it('applies a catch-up a segment at a time: stopped by a bad leaf part way, it serves the segments verified before it and resumes from there', async () => {
    const size = primary.service.log.size();
    // Three segments of 5,000 leaves; the forged signature is in the third.
    await bulk(12_000, 'segments');
    const restore = await rewritePrimary(forgeSignature(size + 11_000));
    await mirror.follower!.sync();
    const status = mirror.follower!.current();
    expect(status.degraded).toMatch(new RegExp(`entry ${size + 11_000}: the signature by alice-1 does not verify`));
    // The two segments before it were proved in the primary's checkpoint (consistency proofs) and verified: served.
    expect(status).toMatchObject({ verifiedSize: size, appliedSize: size + 10_000 });
    expect(mirror.service.log.size()).toBe(size + 10_000);
    expect(attestationsFrom(mirror, size)).toBe(10_000);
    expect(mirror.service.log.root(size + 10_000)).toEqual(primary.service.log.root(size + 10_000));
    expect(await (await fetch(`${mirror.url}/api/v1/mirror`)).json()).toMatchObject({ verifiedSize: size, appliedSize: size + 10_000 });
    expect(await (await fetch(`${mirror.url}/transparency-log`)).text()).toMatch(/applied so far towards the primary's newest checkpoint/);
    await restore();
    await expectResumed();
    expect(attestationsFrom(mirror, size)).toBe(attestationsFrom(primary, size));
  }, 120_000);

  it('in bulk, stopped by a bad leaf part way, serves the segments before it with their decisions and equivocations derived', async () => {
    const size = primary.service.log.size();
    await bulk(12_000, 'bulk-segments');
    const restore = await rewritePrimary(forgeSignature(size + 11_000));
    // Two new mirrors from empty: one applying in bulk, one leaf by leaf (the primary's log is below the default bulkCatchUp).
    const inBulk = await startServer(testConfig(fresh('mirror-in-bulk'), follow(primary, { bulkCatchUp: 1000 })));
    const leafByLeaf = await startServer(testConfig(fresh('mirror-leaf-by-leaf'), follow(primary)));
    try {
      await Promise.all([inBulk.follower!.sync(), leafByLeaf.follower!.sync()]);
      const applied = Math.floor((size + 11_000) / 5000) * 5000;
      for (const m of [inBulk, leafByLeaf]) expect(m.follower!.current()).toMatchObject({ appliedSize: applied, degraded: expect.stringMatching(new RegExp(`entry ${size + 11_000}: the signature`)) });
      expect(inBulk.service.db.prepare("SELECT value FROM meta WHERE key = 'mirror_bulk_from'").get()).toBeUndefined();
      expect(decisions(inBulk)).toEqual(decisions(leafByLeaf));
      expect(conflicts(inBulk)).toEqual(conflicts(leafByLeaf));
      expect(conflicts(inBulk)).not.toEqual([]);
      await restore();
      await expectResumed();
      await inBulk.follower!.sync();
      expect(inBulk.follower!.current()).toMatchObject({ verifiedSize: primary.service.log.size(), degraded: null });
      expect(decisions(inBulk)).toEqual(decisions(primary));
      expect(conflicts(inBulk)).toEqual(conflicts(primary));
    } finally {
      await inBulk.close();
      await leafByLeaf.close();
    }
  }, 180_000);

  it('refuses leaves the primary cannot prove are in its checkpoint: a consistency proof that does not lead to the checkpoint\'s root', async () => {
    // A primary whose pages are honest but whose consistency proofs are not: a new mirror behind it, from empty.
    const proxy = await hostileProxy(primary.url, (path, body) => {
      if (path !== '/api/v1/log/proof/consistency') return undefined;
      const proof = JSON.parse(body.toString()) as { hashes: string[] };
      const first = Buffer.from(proof.hashes[0]!, 'base64');
      first[0]! ^= 1;
      return { body: JSON.stringify({ ...proof, hashes: [first.toString('base64'), ...proof.hashes.slice(1)] }) };
    });
    const behind = await startServer(testConfig(fresh('mirror-behind-proxy'), follow(primary, { url: proxy.url })));
    try {
      expect(primary.service.log.size()).toBeGreaterThan(5000);
      await behind.follower!.sync();
      expect(behind.follower!.current()).toMatchObject({ verifiedSize: 0, appliedSize: 0, degraded: expect.stringMatching(/entries up to 4999 are not a tree its checkpoint's tree extends/) });
      expect(behind.service.db.prepare('SELECT kind FROM mirror_evidence').pluck().all()).toEqual(['root-mismatch']);
      expect(behind.service.log.size()).toBe(0);
      proxy.rewrite = () => undefined;
      await behind.follower!.sync();
      expect(behind.follower!.current()).toMatchObject({ verifiedSize: primary.service.log.size(), appliedSize: primary.service.log.size(), degraded: null });
      expect(decisions(behind)).toEqual(decisions(primary));
    } finally {
      await behind.close();
      await proxy.close();
    }
  }, 120_000);

  it('reads no more than 16 MiB of any answer of the primary: a larger one is its failure, retried, and nothing of it applied', async () => {
    const proxy = await hostileProxy(primary.url, (path) => (path === '/api/v1/log/entries' ? { body: `{"entries":[${'"x",'.repeat(5 << 20)}"x"]}` } : undefined));
    const behind = await startServer(testConfig(fresh('mirror-endless-primary'), follow(primary, { url: proxy.url })));
    try {
      await behind.follower!.sync();
      expect(behind.follower!.current()).toMatchObject({ appliedSize: 0, degraded: null, unreachable: expect.stringMatching(/larger than 16777216 bytes/) });
      expect(behind.service.log.size()).toBe(0);
    } finally {
      await behind.close();
      await proxy.close();
    }
  }, 60_000);
});

/** A new mirror of `primary` in `dir`, after its first round. */
async function mirrorAfterOneRound(primary: RunningServer, dir: string, extra: Record<string, unknown> = {}): Promise<RunningServer> {
  const mirror = await startServer(testConfig(dir, { logLevel: 'error', ...follow(primary, extra) }));
  await mirror.follower!.sync();
  return mirror;
}

async function closeAndRemove(servers: Array<RunningServer | undefined>, dirs: string[]): Promise<void> {
  for (const s of servers) await s?.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
}

describe('a mirror catching up in bulk', () => {
  /** The indexes a database holds, by name. */
  const indexes = (db: Database.Database) => db.prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL ORDER BY name").pluck().all();

  it('ends with the primary\'s indexes, decisions and equivocations, signs a path when it first serves it, and finishes after a crash', async () => {
    const [pdir, mdir] = [tempDir('bulk-primary'), tempDir('bulk-mirror')];
    const [alice, bob, carol] = ['alice-1', 'bob-1', 'carol-1'].map(generateSecretKey) as [SecretKey, SecretKey, SecretKey];
    const primary = await startServer(testConfig(pdir, { logLevel: 'error' }));
    let mirror: RunningServer | undefined;
    try {
      for (const k of [alice, bob, carol]) addBuilder(primary.service, k.publicKey);
      const served = { outPath: randomStorePath('served'), ...(await uploadNar(primary, alice, pdir, 'bulk bytes\n')) };
      const paths = [served, ...Array.from({ length: 40 }, (_, i) => ({ outPath: randomStorePath(`agreed-${i}`), narHash: randomNarHash() }))];
      await primary.service.ingestor.submit([alice, bob].flatMap((k) => paths.map((p) => parseAttestation(signedAttestation(k, p)))));
      // carol signs three contents of one path: two equivocations, each kept with the first leaf it contradicts.
      for (let i = 0; i < 3; i++) await primary.service.ingestor.submit([parseAttestation(signedAttestation(carol, { outPath: paths[1]!.outPath, narHash: randomNarHash() }))]);
      primary.service.checkpoints.publish();
      expect(conflicts(primary)).toHaveLength(2);
      const ofPrimary = { indexes: indexes(primary.service.db), decisions: decisions(primary), conflicts: conflicts(primary) };

      mirror = await mirrorAfterOneRound(primary, mdir, { bulkCatchUp: 10 });
      expect(mirror.follower!.current()).toMatchObject({ verifiedSize: primary.service.log.size(), degraded: null });
      const ofMirror = () => ({ indexes: indexes(mirror!.service.db), decisions: decisions(mirror!), conflicts: conflicts(mirror!) });
      expect(ofMirror()).toEqual(ofPrimary);
      expect(mirror.service.db.prepare("SELECT value FROM meta WHERE key = 'mirror_bulk_from'").get()).toBeUndefined();
      expect(await metric(mirror.url, 'nixquorum_mirror_equivocations_total')).toBe(2);
      // Decisions derived in bulk are not signed ahead: the substituter signs one as it first serves it.
      expect(mirror.service.db.prepare("SELECT COUNT(*) FROM decisions WHERE status = 'quorum' AND cache_sig IS NOT NULL").pluck().get()).toBe(0);
      const res = await fetch(`${mirror.url}/${hashPartOf(served.outPath as StorePath)}.narinfo`);
      expect(res.status).toBe(200);
      const info = parseNarInfo(await res.text());
      expect(info.narHash).toBe(served.narHash);
      expect(info.sigs.some((s) => s.startsWith(`${mirror!.service.cacheKey.name}:`))).toBe(true);

      // A crash after the leaves were applied, before the end of the bulk catch-up: its indexes gone, no decisions, no conflicts.
      await mirror.close();
      const db = new Database(join(mdir, 'ledger.sqlite'));
      db.exec("DROP INDEX attestations_path; DROP INDEX attestations_drv; DROP INDEX decisions_quorum_nar; DELETE FROM decisions; DELETE FROM conflicts; INSERT INTO meta (key, value) VALUES ('mirror_bulk_from', '0')");
      db.close();
      // The primary gone: the mirror finishes the catch-up all the same, from what it holds.
      await primary.close();
      mirror = await mirrorAfterOneRound(primary, mdir, { bulkCatchUp: 10 });
      expect(mirror.follower!.current().unreachable).not.toBeNull();
      expect(ofMirror()).toEqual(ofPrimary);
      expect(mirror.service.db.prepare("SELECT value FROM meta WHERE key = 'mirror_bulk_from'").get()).toBeUndefined();
    } finally {
      await closeAndRemove([mirror, primary.service.db.open ? primary : undefined], [pdir, mdir]);
    }
  }, 120_000);
});

describe('a mirror of a ledger upgraded from before registry leaves', () => {
  it('verifies attestations logged before the registry leaves that bind their names, over several segments, and ends with the primary\'s decisions', async () => {
    const pdir = tempDir('upgraded-primary');
    const mdir = tempDir('upgraded-mirror');
    const [alice, bob] = ['alice-1', 'bob-1'].map(generateSecretKey) as [SecretKey, SecretKey];
    const db = ledger202611(join(pdir, 'ledger.sqlite'));
    db.prepare('INSERT INTO builders (name, public_key, added_at) VALUES (?, ?, 1), (?, ?, 2)').run(alice.name, alice.publicKey.raw, bob.name, bob.publicKey.raw);
    db.exec("INSERT INTO policies (name, threshold, on_conflict, all_builders, updated_at) VALUES ('default', 2, 'block', 1, 100)");
    // 12,000 attestations (more than two segments) before the registry leaves that the upgrade appends.
    const paths = Array.from({ length: 6000 }, (_, i) => ({ outPath: randomStorePath(`old-${i}`), narHash: randomNarHash() }));
    for (const [id, key] of [[1, alice], [2, bob]] as const) appendAttestations202611(db, id, paths.map((p) => parseAttestation({ ...signedAttestation(key, p), narinfoSignature: null })));
    db.close();
    const primary = await startServer(testConfig(pdir, { logLevel: 'error' }));
    let mirror: RunningServer | undefined;
    try {
      primary.service.checkpoints.publish();
      expect(primary.service.log.size()).toBe(12_003);
      mirror = await mirrorAfterOneRound(primary, mdir);
      expect(mirror.follower!.current()).toMatchObject({ verifiedSize: 12_003, appliedSize: 12_003, degraded: null });
      expect(mirror.service.db.prepare('SELECT COUNT(*) FROM mirror_staging').pluck().get()).toBe(0);
      expect(decisions(mirror)).toHaveLength(6000);
      expect(decisions(mirror)).toEqual(decisions(primary));
    } finally {
      await closeAndRemove([mirror, primary], [pdir, mdir]);
    }
  }, 120_000);
});

describe('a mirror\'s decisions', () => {
  it('equal the primary\'s for every path, over random logs', async () => {
    const names = ['b0', 'b1', 'b2', 'b3'];
    const keys = names.map((n) => generateSecretKey(`${n}-1`));
    const step = fc.oneof(
      fc.record({ kind: fc.constant('attest' as const), key: fc.nat(3), path: fc.nat(4), content: fc.nat(2) }),
      fc.record({ kind: fc.constant('revoke' as const), key: fc.nat(3) }),
      fc.record({ kind: fc.constant('policy' as const), threshold: fc.integer({ min: 1, max: 3 }), onConflict: fc.constantFrom('block' as const, 'ignore' as const), all: fc.boolean() }),
    );
    await fc.assert(
      // `inBulk`: the mirror catches up in bulk (every decision derived at the end, see finishBulk), or leaf by leaf.
      fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 25 }), fc.boolean(), async (steps, inBulk) => {
        const pdir = tempDir('mp');
        const mdir = tempDir('mm');
        const primary = await startServer(testConfig(pdir, { logLevel: 'error' }));
        let mirror: RunningServer | undefined;
        try {
          for (const k of keys) addBuilder(primary.service, k.publicKey);
          const paths = Array.from({ length: 5 }, (_, i) => randomStorePath(`p${i}`));
          const contents = Array.from({ length: 3 }, () => randomNarHash());
          const revoked = new Set<number>();
          for (const s of steps) {
            if (s.kind === 'attest' && !revoked.has(s.key)) await primary.service.ingestor.submit([parseAttestation(signedAttestation(keys[s.key]!, { outPath: paths[s.path]!, narHash: contents[s.content]! }))]);
            if (s.kind === 'revoke' && !revoked.has(s.key)) {
              revokeBuilder(primary.service, keys[s.key]!.name);
              revoked.add(s.key);
            }
            if (s.kind === 'policy') {
              const live = keys.filter((_, i) => !revoked.has(i)).map((k) => k.name);
              if (s.all || live.length >= s.threshold) setPolicy(primary.service, { name: 'p', threshold: s.threshold, onConflict: s.onConflict, builders: s.all ? null : live.slice(0, Math.max(s.threshold, 1)) });
            }
          }
          primary.service.checkpoints.publish();
          mirror = await mirrorAfterOneRound(primary, mdir, inBulk ? { bulkCatchUp: 1 } : {});
          expect(mirror.follower!.current().degraded).toBeNull();
          expect(decisions(mirror)).toEqual(decisions(primary));
          expect(conflicts(mirror)).toEqual(conflicts(primary));
        } finally {
          await closeAndRemove([mirror, primary], [pdir, mdir]);
        }
      }),
      { numRuns: 25 },
    );
  }, 300_000);
});
