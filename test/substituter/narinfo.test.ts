import fc from 'fast-check';
import { rmSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { dataPaths } from '../../src/dataDir.js';
import { openReader } from '../../src/db.js';
import { createLogger } from '../../src/log.js';
import { fingerprint, verifyNarInfoSig } from '../../src/nix/fingerprint.js';
import { narHashFromDigest, type NarHash } from '../../src/nix/hash.js';
import { generateSecretKey, signNix } from '../../src/nix/keys.js';
import { parseNarInfo, serializeNarInfo } from '../../src/nix/narinfo.js';
import { nix32Encode } from '../../src/nix/nix32.js';
import { baseNameOf, hashPartOf, type StorePath } from '../../src/nix/storePath.js';
import { openService } from '../../src/service.js';
import { QuorumLookup, renderNarInfo, type QuorumPath } from '../../src/substituter/narinfo.js';
import { randomNarHash, randomStorePath, testConfig } from '../helpers/ledger.js';
import { tempDir } from '../helpers/nix.js';

const cacheKey = generateSecretKey('cache.example-1');
const builders = ['b1.example-1', 'b2.example-1', 'zz-builder', 'A-builder'].map((name) => generateSecretKey(name));

const digest = fc.uint8Array({ minLength: 20, maxLength: 20 });
const storePath = fc
  .tuple(digest, fc.stringMatching(/^[A-Za-z0-9+\-_?=][A-Za-z0-9+\-._?=]{0,30}$/))
  .map(([d, name]) => `/nix/store/${nix32Encode(d)}-${name}` as StorePath);
const sha256 = fc.uint8Array({ minLength: 32, maxLength: 32 }).map((d) => narHashFromDigest(d));

/** A decision row joined with its NAR, as QuorumLookup.find returns it: references sorted and unique. */
const quorumPath = fc.record({
  outPath: storePath,
  narHash: sha256,
  narSize: fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
  refs: fc.uniqueArray(storePath, { maxLength: 8 }).map((refs) => refs.sort().join(',')),
  deriver: fc.option(storePath.map((p) => `${p}.drv`), { nil: null }),
  signers: fc.subarray(builders),
  nar: fc.record({
    blobKey: fc.oneof(sha256.map((h) => `nar/${h.slice(7)}.nar.xz`), fc.constant('https://cache.example.org/nar/x.nar.zst')),
    compression: fc.constantFrom('xz', 'zstd', 'none', 'br'),
    fileHash: sha256 as fc.Arbitrary<string>,
    fileSize: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
  }),
});

const referencesOf = (refs: string) => (refs === '' ? [] : (refs.split(',') as StorePath[]));

describe('renderNarInfo', () => {
  it('writes exactly what serializeNarInfo writes, with a Sig by the cache key that verifies', () => {
    fc.assert(
      fc.property(quorumPath, fc.boolean(), ({ signers, ...row }, stored) => {
        const fp = fingerprint(row.outPath, row.narHash as NarHash, row.narSize, referencesOf(row.refs));
        const builderSigs = signers.map((k) => signNix(k, fp));
        const ours = signNix(cacheKey, fp);
        const path: QuorumPath = { ...row, sigs: builderSigs.length ? builderSigs.join('\n') : null, cacheSig: stored ? ours : null };
        const text = renderNarInfo(path, path.nar!, cacheKey);
        expect(text).toBe(
          serializeNarInfo({
            storePath: row.outPath,
            url: row.nar.blobKey,
            compression: row.nar.compression,
            fileHash: row.nar.fileHash,
            fileSize: row.nar.fileSize,
            narHash: row.narHash as NarHash,
            narSize: row.narSize,
            references: referencesOf(row.refs).map(baseNameOf),
            ...(row.deriver ? { deriver: baseNameOf(row.deriver as StorePath) } : {}),
            sigs: [ours, ...builderSigs],
          }),
        );
        const info = parseNarInfo(text);
        expect(info.sigs.filter((s) => verifyNarInfoSig(info, cacheKey.publicKey, s))).toEqual([ours]);
      }),
      { numRuns: 300 },
    );
  });

  it('signs afresh when the stored Sig is by another key name (a rotated cache key)', () => {
    const [row] = fc.sample(quorumPath, 1);
    const { signers: _, ...rest } = row!;
    const fp = fingerprint(rest.outPath, rest.narHash as NarHash, rest.narSize, referencesOf(rest.refs));
    const previous = generateSecretKey('cache.example-0');
    const text = renderNarInfo({ ...rest, sigs: null, cacheSig: signNix(previous, fp) }, rest.nar, cacheKey);
    const info = parseNarInfo(text);
    expect(info.sigs).toEqual([signNix(cacheKey, fp)]);
    expect(verifyNarInfoSig(info, cacheKey.publicKey, info.sigs[0]!)).toBe(true);
  });

  it('lists a Sig once when a builder submitted the very Sig the cache key makes', () => {
    const [row] = fc.sample(quorumPath, 1);
    const { signers: _, ...rest } = row!;
    const ours = signNix(cacheKey, fingerprint(rest.outPath, rest.narHash as NarHash, rest.narSize, referencesOf(rest.refs)));
    const text = renderNarInfo({ ...rest, sigs: ours, cacheSig: ours }, rest.nar, cacheKey);
    expect(parseNarInfo(text).sigs).toEqual([ours]);
  });
});

describe('QuorumLookup reading once per event-loop turn', () => {
  it("sees this process's commit after refresh(), and every commit from the next turn on", async () => {
    const dir = tempDir('lookup');
    const service = openService(testConfig(dir), createLogger('error'));
    const reader = openReader(dataPaths(dir).db);
    const lookup = new QuorumLookup(reader, { perTurn: true });
    const decide = service.db.prepare("INSERT INTO decisions (policy, out_path, status, nar_hash, nar_size, refs, agreeing, reason, updated_at) VALUES ('default', ?, 'quorum', ?, 100, '', 2, 'r', 0)");
    try {
      const [first, second] = [randomStorePath('first'), randomStorePath('second')];
      expect(lookup.find('default', hashPartOf(first))).toBeUndefined();
      decide.run(first, randomNarHash());
      // Same turn: the reads share the snapshot they started with, until refresh().
      expect(lookup.find('default', hashPartOf(first))).toBeUndefined();
      lookup.refresh();
      expect(lookup.find('default', hashPartOf(first))?.outPath).toBe(first);
      decide.run(second, randomNarHash());
      await new Promise((resolve) => setImmediate(resolve));
      expect(lookup.find('default', hashPartOf(second))?.outPath).toBe(second);
    } finally {
      lookup.refresh();
      reader.close();
      service.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
