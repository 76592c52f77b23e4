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
import { randomNarHash, randomStorePath, signedAttestation, testConfig } from '../helpers/ledger.js';
import { tempDir } from '../helpers/nix.js';
import { servedQuorum } from '../helpers/replay.js';
import { freePort } from '../helpers/server.js';

/** Every decision row, as comparable text: the mirror must hold exactly the primary's. */
function decisions(server: RunningServer): string[] {
  return (server.service.db.prepare('SELECT policy, out_path, status, nar_hash, nar_size, refs, deriver, sigs, agreeing FROM decisions ORDER BY policy, out_path').raw().all() as unknown[][]).map((r) => JSON.stringify(r));
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
    const src = join(primaryDir, 'src');
    writeFileSync(src, 'mirrored bytes\n');
    const chunks: Buffer[] = [];
    for await (const c of dumpNar(src)) chunks.push(c);
    const bytes = Buffer.concat(chunks);
    served = { outPath: randomStorePath('served'), narHash: narHashFromDigest(sha256(bytes)), narSize: bytes.length, bytes };
    expect((await fetch(`${primary.url}/api/v1/nars/${served.narHash}`, { method: 'PUT', body: new Uint8Array(bytes), headers: { authorization: uploadAuthHeader(alice, served.narHash as never, bytes.length) } })).status).toBe(201);
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

  it('refuses a range holding a leaf whose signature does not verify, among thousands that do; serves nothing of it', async () => {
    const size = primary.service.log.size();
    const before = decisions(mirror);
    // More than one verification batch, so the bad one is found among batches verified concurrently.
    const many = Array.from({ length: 4500 }, (_, i) => parseAttestation(signedAttestation(alice, { outPath: randomStorePath(`bulk-${i}`), narHash: randomNarHash() })));
    expect((await primary.service.ingestor.submit(many)).every((r) => r.status === 'accepted')).toBe(true);
    const restore = await rewritePrimary((db) => {
      // A signature of the new range, forged: one flipped byte.
      const index = size + 3333;
      const signature = db.prepare('SELECT signature FROM attestations WHERE leaf_index = ?').pluck().get(index) as Buffer;
      signature[10]! ^= 1;
      db.prepare('UPDATE attestations SET signature = ? WHERE leaf_index = ?').run(signature, index);
    });
    await mirror.follower!.sync();
    const status = mirror.follower!.current();
    expect(status.verifiedSize).toBe(size);
    expect(status.degraded).toMatch(new RegExp(`entry ${size + 3333}: the signature by \\S+ does not verify`));
    expect(mirror.service.log.size()).toBe(size);
    expect(decisions(mirror)).toEqual(before);
    await restore();
    await expectResumed();
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
      fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 25 }), async (steps) => {
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
          mirror = await startServer(testConfig(mdir, { logLevel: 'error', ...follow(primary) }));
          await mirror.follower!.sync();
          expect(mirror.follower!.current().degraded).toBeNull();
          expect(decisions(mirror)).toEqual(decisions(primary));
        } finally {
          await mirror?.close();
          await primary.close();
          rmSync(pdir, { recursive: true, force: true });
          rmSync(mdir, { recursive: true, force: true });
        }
      }),
      { numRuns: 25 },
    );
  }, 300_000);
});
