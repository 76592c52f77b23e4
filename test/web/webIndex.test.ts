import fc from 'fast-check';
import { rmSync } from 'node:fs';
import { describe, expect, it, vi } from 'vitest';
import { parseAttestation } from '../../src/ledger/attestation.js';
import { createLogger } from '../../src/log.js';
import { generateSecretKey } from '../../src/nix/keys.js';
import { openService, type Service } from '../../src/service.js';
import { WebIndex } from '../../src/web/webIndex.js';
import { tempDir } from '../helpers/nix.js';
import { randomNarHash, randomStorePath, signedAttestation, testConfig } from '../helpers/ledger.js';
import { addBuilder } from '../../src/app/builders.js';
import { setPolicy } from '../../src/app/policies.js';

/**
 * The web index is updated leaf by leaf with deltas; these tests recompute everything it claims
 * directly from the attestations and decisions tables (written here independently of webIndex.ts).
 */
function recount(service: Service) {
  const rows = service.db.prepare('SELECT leaf_index, builder_id, out_path, nar_hash, nar_size, refs FROM attestations ORDER BY leaf_index').all() as Array<{
    leaf_index: number;
    builder_id: number;
    out_path: string;
    nar_hash: string;
    nar_size: number;
    refs: string;
  }>;
  const byPath = new Map<string, typeof rows>();
  for (const r of rows) byPath.set(r.out_path, [...(byPath.get(r.out_path) ?? []), r]);
  const classes = { single: 0, reproduced: 0, unreproduced: 0 };
  const paths: Record<string, { builders: number; contents: number; class: string; lastLeaf: number }> = {};
  const builders = new Map<number, { attestations: number; paths: number; shared: number; agreed: number; equivocated: number; lastLeaf: number }>();
  for (const r of rows) {
    const b = builders.get(r.builder_id) ?? { attestations: 0, paths: 0, shared: 0, agreed: 0, equivocated: 0, lastLeaf: -1 };
    b.attestations++;
    b.lastLeaf = r.leaf_index;
    builders.set(r.builder_id, b);
  }
  for (const [outPath, votes] of byPath) {
    const content = (v: (typeof votes)[number]) => `${v.nar_hash}|${v.nar_size}|${v.refs}`;
    const keys = [...new Set(votes.map((v) => v.builder_id))];
    const contents = new Set(votes.map(content));
    const cls = contents.size > 1 ? 'unreproduced' : keys.length > 1 ? 'reproduced' : 'single';
    classes[cls]++;
    paths[outPath] = { builders: keys.length, contents: contents.size, class: cls, lastLeaf: Math.max(...votes.map((v) => v.leaf_index)) };
    for (const k of keys) {
      const mine = new Set(votes.filter((v) => v.builder_id === k).map(content));
      const others = votes.filter((v) => v.builder_id !== k);
      const b = builders.get(k)!;
      b.paths++;
      if (others.length > 0) b.shared++;
      if (mine.size > 1) b.equivocated++;
      else if (others.some((o) => mine.has(content(o)))) b.agreed++;
    }
  }
  const advertised = Object.fromEntries(
    (
      service.db
        .prepare(`SELECT policy, COUNT(*) AS n FROM decisions d WHERE status = 'quorum' AND EXISTS (SELECT 1 FROM nars WHERE nar_hash = d.nar_hash) GROUP BY policy`)
        .all() as Array<{ policy: string; n: number }>
    ).map((r) => [r.policy, r.n]),
  );
  return { classes, paths, builders, advertised };
}

function claimed(service: Service, index: WebIndex) {
  const paths = Object.fromEntries(
    (service.db.prepare('SELECT out_path, builders, contents, class, last_leaf FROM web_paths').all() as Array<{ out_path: string; builders: number; contents: number; class: string; last_leaf: number }>).map((r) => [
      r.out_path,
      { builders: r.builders, contents: r.contents, class: r.class, lastLeaf: r.last_leaf },
    ]),
  );
  const builders = new Map([...index.builderStats()].map(([id, s]) => [id, { attestations: s.attestations, paths: s.paths, shared: s.shared, agreed: s.agreed, equivocated: s.equivocated, lastLeaf: s.lastLeaf }]));
  const advertised = Object.fromEntries([...index.advertised()].filter(([, n]) => n !== 0));
  return { classes: index.classCounts(), paths, builders, advertised };
}

const BUILDERS = ['b0', 'b1', 'b2', 'b3'];

describe('web index', () => {
  it('always equals a recount from the ledger, however the log is split into commits indexed inline and catch-up steps', async () => {
    const keys = BUILDERS.map((b) => generateSecretKey(b));
    const outPaths = Array.from({ length: 6 }, (_, i) => randomStorePath(`pkg${i}`));
    const narHashes = Array.from({ length: 3 }, () => randomNarHash());
    const step = fc.record({
      votes: fc.array(fc.record({ builder: fc.nat(BUILDERS.length - 1), path: fc.nat(outPaths.length - 1), content: fc.nat(narHashes.length - 1) }), { minLength: 1, maxLength: 12 }),
      nar: fc.option(fc.nat(narHashes.length - 1), { nil: null }),
      catchUp: fc.boolean(),
      // Whether the commit's hook is on: it indexes the commit inline only if the index had caught up.
      inline: fc.boolean(),
    });
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 8 }), async (steps) => {
        const dir = tempDir('web-index');
        const service = openService(testConfig(dir, { quorum: { defaultThreshold: 2 } }), createLogger('error'));
        try {
          for (const k of keys) addBuilder(service, k.publicKey);
          setPolicy(service, { name: 'strict', threshold: 3, onConflict: 'ignore', builders: new Set(BUILDERS.slice(0, 3)) });
          const index = new WebIndex(service.db, service.registry, service.logger);
          let inline = false;
          service.ingestor.onCommit((batch) => {
            if (inline) index.indexCommit(batch);
          });
          for (const s of steps) {
            inline = s.inline;
            await service.ingestor.submit(s.votes.map((v) => parseAttestation(signedAttestation(keys[v.builder]!, { outPath: outPaths[v.path]!, narHash: narHashes[v.content]! }))));
            if (s.nar !== null) {
              service.db
                .prepare(`INSERT OR IGNORE INTO nars (nar_hash, nar_size, blob_key, compression, file_hash, file_size, uploaded_by, created_at) VALUES (?, 1234, 'k', 'none', ?, 1234, NULL, 0)`)
                .run(narHashes[s.nar]!, narHashes[s.nar]!);
            }
            if (s.catchUp) await index.catchUp();
          }
          await index.catchUp();
          expect(index.indexed()).toBe(service.log.size());
          expect(claimed(service, index)).toEqual(recount(service));
        } finally {
          service.close();
          rmSync(dir, { recursive: true, force: true });
        }
      }),
      { numRuns: 40 },
    );
  });

  it('never fails an ingest commit, and leaves nothing half-indexed when indexing it fails', async () => {
    const dir = tempDir('web-index-fail');
    const logged: string[] = [];
    const service = openService(testConfig(dir), createLogger('error', (line) => logged.push(line)));
    try {
      const key = generateSecretKey('alice-1');
      addBuilder(service, key.publicKey);
      const index = new WebIndex(service.db, service.registry, service.logger);
      service.ingestor.onCommit((batch) => index.indexCommit(batch));
      const attest = (name: string) => service.ingestor.submit([parseAttestation(signedAttestation(key, { outPath: randomStorePath(name), narHash: randomNarHash() }))]);
      // The default policy's and the builder's leaves come first.
      const base = service.log.size();
      await attest('first');
      expect(index.indexed()).toBe(base + 1);
      // The name index is gone: the path's row is written, then its name fails.
      service.db.exec('DROP TABLE web_names');
      const [result] = await attest('second');
      expect(result!.status).toBe('accepted');
      expect(service.log.size()).toBe(base + 2);
      expect(index.indexed()).toBe(base + 1);
      expect(service.db.prepare('SELECT COUNT(*) FROM web_paths').pluck().get()).toBe(1);
      expect(logged.join('')).toContain('web index update failed');
    } finally {
      service.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('catches up by itself once ingest goes quiet', async () => {
    const dir = tempDir('web-index-idle');
    const service = openService(testConfig(dir), createLogger('error'));
    try {
      const key = generateSecretKey('alice-1');
      addBuilder(service, key.publicKey);
      const index = new WebIndex(service.db, service.registry, service.logger);
      service.ingestor.onCommitted(() => index.committed());
      const base = service.log.size();
      for (let i = 0; i < 5; i++) await service.ingestor.submit([parseAttestation(signedAttestation(key, { outPath: randomStorePath(`idle${i}`), narHash: randomNarHash() }))]);
      // Nothing here calls catchUp(): the commits' timer does.
      await vi.waitFor(() => expect(index.indexed()).toBe(base + 5), { timeout: 10_000 });
      expect(index.classCounts().single).toBe(5);
    } finally {
      service.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('indexes a ledger written before its tables existed, and recounts advertised paths once', async () => {
    const dir = tempDir('web-index-old');
    const service = openService(testConfig(dir), createLogger('error'));
    try {
      const [alice, bob] = [generateSecretKey('alice-1'), generateSecretKey('bob-1')];
      addBuilder(service, alice.publicKey);
      addBuilder(service, bob.publicKey);
      const narHash = randomNarHash();
      const items = Array.from({ length: 30 }, (_, i) => randomStorePath(`old${i}`)).flatMap((outPath) => [alice, bob].map((k) => parseAttestation(signedAttestation(k, { outPath, narHash }))));
      await service.ingestor.submit(items);
      service.db.prepare(`INSERT INTO nars (nar_hash, nar_size, blob_key, compression, file_hash, file_size, uploaded_by, created_at) VALUES (?, 1234, 'k', 'none', ?, 1234, NULL, 0)`).run(narHash, narHash);
      // As if the database predated the web tables: empty projection, no cursor, no counts.
      service.db.exec(`DELETE FROM web_paths; INSERT INTO web_names (web_names) VALUES ('delete-all'); DELETE FROM web_class_counts; DELETE FROM web_builder_stats; DELETE FROM web_advertised;
        DELETE FROM meta WHERE key IN ('web_indexed_leaves', 'web_advertised_counted')`);
      const index = new WebIndex(service.db, service.registry, service.logger);
      expect(index.indexed()).toBe(0);
      await index.catchUp();
      expect(claimed(service, index)).toEqual(recount(service));
      expect(index.advertised().get('default')).toBe(30);
      expect(index.searchNames('old1', 100).map((p) => p.outPath.replace(/^.*-/, '')).sort()).toEqual(['old1', ...Array.from({ length: 10 }, (_, i) => `old1${i}`)]);
    } finally {
      service.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
