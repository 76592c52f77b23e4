import fc from 'fast-check';
import { rmSync, writeFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { dataPaths } from '../../src/dataDir.js';
import { parseAttestation } from '../../src/ledger/attestation.js';
import { createLogger } from '../../src/log.js';
import { fingerprint } from '../../src/nix/fingerprint.js';
import type { NarHash } from '../../src/nix/hash.js';
import { formatSecretKey, generateSecretKey, verifyNix, type PublicKey } from '../../src/nix/keys.js';
import type { StorePath } from '../../src/nix/storePath.js';
import { openService, type Service } from '../../src/service.js';
import { tempDir } from '../helpers/nix.js';
import { randomNarHash, randomStorePath, signedAttestation, testConfig } from '../helpers/ledger.js';
import { addBuilder, revokeBuilder } from '../../src/app/builders.js';
import { setPolicy } from '../../src/app/policies.js';

/**
 * The rule of design.md, written again independently of src/quorum/evaluate.ts:
 * P is advertised iff >= k distinct keys of the policy's set (less revoked keys) signed agreeing
 * content; a key with two contents counts for neither; under "block" any trusted key attesting a
 * content other than the winner blocks P.
 */
function reference(
  policy: { builders: string[] | null; threshold: number; onConflict: 'block' | 'ignore' },
  votes: Array<{ builder: string; content: string }>,
  active: Set<string>,
): { advertised: string | null; blocked: boolean } {
  const trusted = new Set((policy.builders ?? [...active]).filter((b) => active.has(b)));
  const byKey = new Map<string, Set<string>>();
  for (const v of votes) if (trusted.has(v.builder)) byKey.set(v.builder, (byKey.get(v.builder) ?? new Set()).add(v.content));
  const counts = new Map<string, number>();
  for (const contents of byKey.values()) if (contents.size === 1) for (const c of contents) counts.set(c, (counts.get(c) ?? 0) + 1);
  const allContents = new Set([...byKey.values()].flatMap((s) => [...s]));
  const reaching = [...counts].filter(([, n]) => n >= policy.threshold);
  if (policy.onConflict === 'block' && allContents.size > 1) return { advertised: null, blocked: true };
  if (reaching.length === 1) return { advertised: reaching[0]![0], blocked: false };
  return { advertised: null, blocked: false };
}

const BUILDERS = ['b0', 'b1', 'b2', 'b3', 'b4'];

interface Row {
  status: string;
  nar_hash: string | null;
  nar_size: number | null;
  refs: string | null;
  cache_sig: string | null;
}

const decisionOf = (service: Service, policy: string, outPath: string) =>
  service.db.prepare('SELECT status, nar_hash, nar_size, refs, cache_sig FROM decisions WHERE policy = ? AND out_path = ?').get(policy, outPath) as Row | undefined;

/** Whether the row's cache Sig is `key`'s signature of the agreed content's narinfo fingerprint. */
function signedBy(key: PublicKey, outPath: string, row: Row): boolean {
  const refs = row.refs === '' ? [] : (row.refs!.split(',') as StorePath[]);
  return row.cache_sig !== null && verifyNix(key, fingerprint(outPath as StorePath, row.nar_hash as NarHash, row.nar_size!, refs), row.cache_sig);
}

describe('materialised decisions', () => {
  it('always equal a direct evaluation of the rule, through attestations, revocations and policy changes', async () => {
    const keys = new Map(BUILDERS.map((b) => [b, generateSecretKey(b)]));
    const paths = Array.from({ length: 4 }, (_, i) => randomStorePath(`p${i}`));
    const contents = Array.from({ length: 3 }, () => randomNarHash());
    const policyArb = fc.record({
      builders: fc.option(fc.subarray(BUILDERS, { minLength: 1 }), { nil: null }),
      threshold: fc.integer({ min: 1, max: 4 }),
      onConflict: fc.constantFrom('block' as const, 'ignore' as const),
    }).filter((p) => p.builders === null || p.threshold <= p.builders.length);
    const scenario = fc.record({
      votes: fc.array(fc.record({ builder: fc.constantFrom(...BUILDERS), path: fc.nat(paths.length - 1), content: fc.nat(contents.length - 1) }), { maxLength: 30 }),
      policy: policyArb,
      later: policyArb,
      revoke: fc.option(fc.constantFrom(...BUILDERS), { nil: null }),
    });

    await fc.assert(
      fc.asyncProperty(scenario, async ({ votes, policy, later, revoke }) => {
        const dir = tempDir('decisions');
        const service = openService(testConfig(dir), createLogger('error'));
        try {
          for (const k of keys.values()) addBuilder(service, k.publicKey);
          setPolicy(service, { name: 'p', threshold: policy.threshold, onConflict: policy.onConflict, builders: policy.builders && new Set(policy.builders) });
          await service.ingestor.submit(
            votes.map((v) => parseAttestation(signedAttestation(keys.get(v.builder)!, { outPath: paths[v.path]!, narHash: contents[v.content]! }))),
          );
          const check = async (p: typeof policy) => {
            await service.decisions.signaturesStored();
            const active = new Set(service.registry.active().map((b) => b.name));
            for (const [i, outPath] of paths.entries()) {
              const expected = reference(p, votes.filter((v) => v.path === i).map((v) => ({ builder: v.builder, content: contents[v.content]! })), active);
              const row = decisionOf(service, 'p', outPath);
              const got = row ?? { status: 'pending', nar_hash: null };
              expect({ advertised: got.status === 'quorum' ? got.nar_hash : null, blocked: got.status === 'blocked' }).toEqual(expected);
              // Once stored, an advertised decision's Sig is the cache key's over its content; no other row holds one.
              if (row?.status === 'quorum') expect(signedBy(service.cacheKey.publicKey, outPath, row)).toBe(true);
              else expect(row?.cache_sig ?? null).toBeNull();
            }
          };
          await check(policy);
          if (revoke) revokeBuilder(service, revoke);
          await check(policy);
          const laterPolicy = { name: 'p', threshold: later.threshold, onConflict: later.onConflict, builders: later.builders && new Set(later.builders) };
          // A policy naming a revoked key is refused (its votes count nowhere), and the old one stays.
          if (revoke && later.builders?.includes(revoke)) {
            expect(() => setPolicy(service, laterPolicy)).toThrow(/was revoked/);
            await check(policy);
          } else {
            setPolicy(service, laterPolicy);
            await check(later);
          }
        } finally {
          service.close();
          rmSync(dir, { recursive: true, force: true });
        }
      }),
      { numRuns: 150 },
    );
  });

  it('stores a cache Sig only into a decision that still holds the content it signs', async () => {
    const dir = tempDir('decisions-race');
    const service = openService(testConfig(dir), createLogger('error'));
    try {
      const keys = BUILDERS.map((b) => generateSecretKey(b));
      for (const k of keys) addBuilder(service, k.publicKey);
      // Enough paths that the pool signs them in a worker, still at work while the decisions move on.
      const paths = Array.from({ length: 12 }, (_, i) => randomStorePath(`race${i}`));
      const [a, b, z] = [randomNarHash(), randomNarHash(), randomNarHash()];
      // b0 and b1 attest content A, b2 and b3 content B, b4 content Z of size 0, which no Sig can be made for.
      const contentOf = (i: number) => (i < 2 ? { narHash: a } : i < 4 ? { narHash: b } : { narHash: z, narSize: 0 });
      await service.ingestor.submit(paths.flatMap((outPath) => keys.map((k, i) => parseAttestation(signedAttestation(k, { outPath, ...contentOf(i) })))));
      const policy = (builders: string[], threshold: number) => ({ name: 'p', threshold, onConflict: 'ignore' as const, builders: new Set(builders) });
      setPolicy(service, policy(['b0', 'b1', 'b2'], 2));
      await service.decisions.signaturesStored();
      // A -> B -> Z in one go: B's Sigs are made while the decisions already hold Z, and must not land there.
      setPolicy(service, policy(['b0', 'b2', 'b3'], 2));
      setPolicy(service, policy(['b4'], 1));
      await service.decisions.signaturesStored();
      for (const outPath of paths) expect(decisionOf(service, 'p', outPath)).toMatchObject({ status: 'quorum', nar_hash: z, cache_sig: null });
      // Back to A: signed again, since its Sig was dropped when the decision moved away.
      setPolicy(service, policy(['b0', 'b1', 'b2'], 2));
      await service.decisions.signaturesStored();
      for (const outPath of paths) expect(signedBy(service.cacheKey.publicKey, outPath, decisionOf(service, 'p', outPath)!)).toBe(true);
    } finally {
      service.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('forgets stored cache Sigs when the cache key is replaced by another of the same name, and signs again with it', async () => {
    const dir = tempDir('decisions-key');
    const keys = BUILDERS.slice(0, 3).map((b) => generateSecretKey(b));
    const outPath = randomStorePath('p');
    const narHash = randomNarHash();
    const attest = (s: Service, k: (typeof keys)[number]) => s.ingestor.submit([parseAttestation(signedAttestation(k, { outPath, narHash }))]);
    let service = openService(testConfig(dir), createLogger('error'));
    try {
      for (const k of keys) addBuilder(service, k.publicKey);
      await attest(service, keys[0]!);
      await attest(service, keys[1]!);
      await service.decisions.signaturesStored();
      expect(signedBy(service.cacheKey.publicKey, outPath, decisionOf(service, 'default', outPath)!)).toBe(true);
      const name = service.cacheKey.name;
      service.close();

      writeFileSync(dataPaths(dir).cacheSecretKey, formatSecretKey(generateSecretKey(name)));
      service = openService(testConfig(dir), createLogger('error'));
      expect(decisionOf(service, 'default', outPath)!.cache_sig).toBeNull();
      await attest(service, keys[2]!);
      await service.decisions.signaturesStored();
      expect(signedBy(service.cacheKey.publicKey, outPath, decisionOf(service, 'default', outPath)!)).toBe(true);
    } finally {
      service.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
