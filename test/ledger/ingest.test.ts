import { rmSync } from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseAttestation } from '../../src/ledger/attestation.js';
import { createLogger } from '../../src/log.js';
import { generateSecretKey, type SecretKey } from '../../src/nix/keys.js';
import { openService, type Service } from '../../src/service.js';
import { tempDir } from '../helpers/nix.js';
import { randomNarHash, randomStorePath, signedAttestation, testConfig } from '../helpers/ledger.js';
import { addBuilder, revokeBuilder } from '../../src/app/builders.js';

describe('Ingestor', () => {
  let dir: string;
  let service: Service;
  let alice: SecretKey;
  let bob: SecretKey;
  /** Leaves before the first attestation: the default policy and the two builders' registry leaves. */
  let base: number;

  beforeEach(() => {
    dir = tempDir('ingest');
    service = openService(testConfig(dir), createLogger('error'));
    alice = generateSecretKey('alice-1');
    bob = generateSecretKey('bob-1');
    addBuilder(service, alice.publicKey);
    addBuilder(service, bob.publicKey);
    base = service.log.size();
  });
  afterEach(() => {
    service.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const submit = (...items: unknown[]) => service.ingestor.submit(items.map((i) => parseAttestation(i)));

  it('accepts, deduplicates and keeps both statements of an equivocating key as evidence', async () => {
    const outPath = randomStorePath('hello');
    const first = signedAttestation(alice, { outPath, narHash: randomNarHash() });
    expect(await submit(first)).toEqual([{ status: 'accepted', leafIndex: base }]);
    expect(await submit(first)).toEqual([{ status: 'duplicate', leafIndex: base }]);
    const other = signedAttestation(alice, { outPath, narHash: randomNarHash() });
    expect(await submit(other)).toEqual([{ status: 'conflict', leafIndex: base + 1, conflictsWith: [base] }]);
    expect(service.log.size()).toBe(base + 2);
    const rows = service.db.prepare('SELECT first_leaf, second_leaf FROM conflicts').all();
    expect(rows).toEqual([{ first_leaf: base, second_leaf: base + 1 }]);
  });

  it('finds duplicates and conflicts among the attestations of one commit, as across commits', async () => {
    const outPath = randomStorePath('hello');
    const narHash = randomNarHash();
    const first = signedAttestation(alice, { outPath, narHash });
    const other = signedAttestation(alice, { outPath, narHash: randomNarHash() });
    const agreeing = signedAttestation(bob, { outPath, narHash });
    expect(await submit(first, first, other, agreeing, other)).toEqual([
      { status: 'accepted', leafIndex: base },
      { status: 'duplicate', leafIndex: base },
      { status: 'conflict', leafIndex: base + 1, conflictsWith: [base] },
      { status: 'accepted', leafIndex: base + 2 },
      { status: 'duplicate', leafIndex: base + 1 },
    ]);
    expect(service.ingestor.stats.commits).toBe(1);
    expect(service.db.prepare('SELECT first_leaf, second_leaf FROM conflicts').all()).toEqual([{ first_leaf: base, second_leaf: base + 1 }]);
    // The decision saw the whole commit: Alice equivocated, which blocks the path under the default policy.
    expect(service.db.prepare('SELECT status FROM decisions WHERE out_path = ?').pluck().all(outPath)).toEqual(['blocked']);
  });

  it('rejects unknown keys, revoked keys and bad signatures without writing anything', async () => {
    const outPath = randomStorePath();
    const mallory = generateSecretKey('mallory-1');
    const forged = { ...signedAttestation(alice, { outPath, narHash: randomNarHash() }), narSize: 99 };
    const byOtherKey = { ...signedAttestation(bob, { outPath, narHash: randomNarHash() }), builder: 'alice-1' };
    const results = await submit(signedAttestation(mallory, { outPath, narHash: randomNarHash() }), forged, byOtherKey);
    expect(results.map((r) => r.status === 'rejected' && r.code)).toEqual(['unknown-builder', 'bad-signature', 'bad-signature']);
    revokeBuilder(service, 'bob-1');
    const [revoked] = await submit(signedAttestation(bob, { outPath, narHash: randomNarHash() }));
    expect(revoked).toMatchObject({ status: 'rejected', code: 'revoked-builder' });
    // Only the revocation's own leaf was logged.
    expect(service.log.size()).toBe(base + 1);
    expect(service.db.prepare('SELECT COUNT(*) AS n FROM attestations').get()).toEqual({ n: 0 });
  });

  it('group-commits concurrent submissions: far fewer commits than attestations', async () => {
    const before = service.ingestor.stats.commits;
    const results = await Promise.all(
      Array.from({ length: 500 }, () => submit(signedAttestation(alice, { outPath: randomStorePath(), narHash: randomNarHash() }))),
    );
    expect(results.flat().every((r) => r.status === 'accepted')).toBe(true);
    expect(new Set(results.flat().map((r) => (r as { leafIndex: number }).leafIndex)).size).toBe(500);
    const commits = service.ingestor.stats.commits - before;
    expect(commits).toBeGreaterThan(0);
    expect(commits).toBeLessThanOrEqual(5);
    expect(service.log.size()).toBe(base + 500);
  });

  it('keeps the materialised decision in step with each commit', async () => {
    const outPath = randomStorePath('quorum');
    const narHash = randomNarHash();
    await submit(signedAttestation(alice, { outPath, narHash }));
    const decision = () => service.db.prepare("SELECT status, agreeing FROM decisions WHERE policy = 'default' AND out_path = ?").get(outPath);
    // Pending is stored as no row.
    expect(decision()).toBeUndefined();
    await submit(signedAttestation(bob, { outPath, narHash }));
    expect(decision()).toEqual({ status: 'quorum', agreeing: 2 });
    revokeBuilder(service, 'bob-1');
    expect(decision()).toBeUndefined();
  });
});
