import { rmSync } from 'node:fs';
import nacl from 'tweetnacl';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateSecretKey } from '../../src/nix/keys.js';
import { parseAttestation } from '../../src/ledger/attestation.js';
import { generateNoteKey, signNote } from '../../src/ledger/checkpoint.js';
import { startServer, type RunningServer } from '../../src/serve.js';
// The browser's verifier, run here in Node against a real server's answers.
import {
  base64Decode,
  checkLeaf,
  leafHash,
  openCheckpoint,
  parseNixPublicKey,
  parseVerifierKey,
  verifyConsistency,
  verifyInclusion,
} from '../../src/web/assets/ledger-verify.js';
import { tempDir } from '../helpers/nix.js';
import { randomNarHash, randomStorePath, signedAttestation, testConfig } from '../helpers/ledger.js';
import { addBuilder } from '../../src/app/builders.js';

const subtle = globalThis.crypto.subtle;
/** Attestations logged, after the default policy's and two builders' leaves: the tree's size is SIZE. */
const ATTESTATIONS = 13;
const FIRST = 3;
const SIZE = FIRST + ATTESTATIONS;

describe('browser verifier (src/web/assets/ledger-verify.js) against a real server', () => {
  const dirs: string[] = [];
  let server: RunningServer;
  let forked: RunningServer;
  const alice = generateSecretKey('alice-1');
  const bob = generateSecretKey('bob-1');

  async function start(): Promise<RunningServer> {
    const dir = tempDir('web-verify');
    dirs.push(dir);
    const s = await startServer(testConfig(dir, { ledger: { checkpointIntervalMs: 0 } }));
    addBuilder(s.service, alice.publicKey);
    addBuilder(s.service, bob.publicKey);
    // One commit per leaf, so the log passes through every size.
    for (let i = 0; i < ATTESTATIONS; i++) {
      const outPath = randomStorePath(`v${i}`);
      await s.service.ingestor.submit([parseAttestation(signedAttestation(i % 2 ? bob : alice, { outPath, narHash: randomNarHash(), references: i > 0 ? [randomStorePath('dep')] : [] }))]);
    }
    return s;
  }

  beforeAll(async () => {
    server = await start();
    forked = await start();
  });
  afterAll(async () => {
    await server.close();
    await forked.close();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  const get = async (s: RunningServer, path: string) => {
    const res = await fetch(`${s.url}${path}`);
    expect(res.status).toBe(200);
    return res;
  };
  const proofOf = async (s: RunningServer, path: string) => ((await (await get(s, path)).json()) as { hashes: string[] }).hashes.map((h, i) => base64Decode(h, `hash ${i}`));
  const key = async (s: RunningServer) => parseVerifierKey(subtle, await (await get(s, '/api/v1/log/key')).text());
  const note = async (s: RunningServer) => (await get(s, '/api/v1/log/checkpoint')).text();
  const root = (s: RunningServer, size: number) => new Uint8Array(s.service.log.root(size));
  const flip = (bytes: Uint8Array, bit = 0) => {
    const copy = bytes.slice();
    const i = Math.floor(bit / 8);
    copy[i] = copy[i]! ^ (1 << bit % 8);
    return copy;
  };

  it('opens the signed checkpoint with the log key, and refuses an altered or foreign one', async () => {
    const k = await key(server);
    expect(k.name).toBe(server.service.origin);
    const cp = openCheckpoint(nacl, await note(server), k);
    expect(cp).toEqual({ origin: server.service.origin, size: SIZE, root: root(server, SIZE) });

    const text = await note(server);
    expect(() => openCheckpoint(nacl, text.replace(`\n${SIZE}\n`, `\n${SIZE + 1}\n`), k)).toThrow(/signature by .* does not verify/);
    const foreign = await note(forked);
    expect(() => openCheckpoint(nacl, foreign, k)).toThrow(/no signature by the log key/);
    const impostor = generateNoteKey(server.service.origin);
    expect(() => openCheckpoint(nacl, signNote(`${server.service.origin}\n${SIZE}\n${Buffer.from(root(forked, SIZE)).toString('base64')}\n`, impostor), k)).toThrow(/no signature by the log key/);
    await expect(parseVerifierKey(subtle, server.service.noteVerifierText.replace(/\+[0-9a-f]{8}\+/, '+00000000+'))).rejects.toThrow(/id 00000000 does not match/);
  });

  it('checks every entry and its inclusion proof, and names what a tampered proof or entry breaks', async () => {
    const { builders } = (await (await get(server, '/api/v1/builders')).json()) as { builders: Array<{ publicKey: string }> };
    const keys = new Map(builders.map((b) => parseNixPublicKey(b.publicKey)).map((k) => [k.name, k.key]));
    const cpRoot = root(server, SIZE);
    for (let i = FIRST; i < SIZE; i++) {
      const { entries } = (await (await get(server, `/api/v1/log/entries?start=${i}&end=${i + 1}`)).json()) as { entries: Array<{ leaf: string }> };
      const leaf = base64Decode(entries[0]!.leaf, 'leaf');
      const a = (await (await get(server, `/api/v1/paths/${leafOutPath(leaf).slice(11, 43)}`)).json()) as { paths: Array<{ attestations: Array<Record<string, unknown>> }> };
      const shown = a.paths[0]!.attestations[0] as { builder: string; drvPath: string; outputName: string; outPath: string; narHash: string; narSize: number; references: string[] };
      const fields = { ...shown, narSize: String(shown.narSize) };
      checkLeaf(nacl, leaf, fields, keys.get(shown.builder)!);
      expect(() => checkLeaf(nacl, leaf, { ...fields, narHash: randomNarHash() }, keys.get(shown.builder)!)).toThrow(/the log entry's narHash is "sha256:.*", the page shows "sha256:/);
      expect(() => checkLeaf(nacl, leaf, { ...fields, narSize: '1' }, keys.get(shown.builder)!)).toThrow(/narSize is "1234", the page shows "1"/);
      const other = shown.builder === 'alice-1' ? 'bob-1' : 'alice-1';
      expect(() => checkLeaf(nacl, leaf, fields, keys.get(other)!)).toThrow(/signature does not verify with .*'s public key/);

      const hash = await leafHash(subtle, leaf);
      const proof = await proofOf(server, `/api/v1/log/proof/inclusion?index=${i}&size=${SIZE}`);
      await verifyInclusion(subtle, hash, i, SIZE, proof, cpRoot);
      for (let h = 0; h < proof.length; h++) {
        const tampered = proof.map((p, j) => (j === h ? flip(p, 77) : p));
        await expect(verifyInclusion(subtle, hash, i, SIZE, tampered, cpRoot)).rejects.toThrow(new RegExp(`inclusion proof for leaf ${i} leads to root .*, not the checkpoint's root`));
      }
      await expect(verifyInclusion(subtle, flip(hash), i, SIZE, proof, cpRoot)).rejects.toThrow(/leads to root/);
      await expect(verifyInclusion(subtle, hash, i, SIZE, proof.slice(1), cpRoot)).rejects.toThrow(/too few/);
      await expect(verifyInclusion(subtle, hash, i, SIZE, [...proof, proof[0] ?? hash], cpRoot)).rejects.toThrow(/more than a tree of/);
    }
  });

  it('verifies consistency between every pair of sizes and catches a rewritten history', async () => {
    for (let first = 0; first <= SIZE; first++) {
      for (let second = first; second <= SIZE; second++) {
        const proof = first === 0 || first === second ? [] : await proofOf(server, `/api/v1/log/proof/consistency?first=${first}&second=${second}`);
        await verifyConsistency(subtle, first, second, proof, root(server, first), root(server, second));
        if (first > 0 && first < second) {
          // Another log's tree of the same size: the proof from this log must not vouch for it.
          await expect(verifyConsistency(subtle, first, second, proof, root(forked, first), root(server, second))).rejects.toThrow(/history was rewritten/);
          await expect(verifyConsistency(subtle, first, second, proof.map((p, j) => (j === 0 ? flip(p) : p)), root(server, first), root(server, second))).rejects.toThrow(/history was rewritten/);
        }
      }
    }
    await expect(verifyConsistency(subtle, 5, 5, [], root(server, 5), root(forked, 5))).rejects.toThrow(/the log forked/);
  });
});

/** The outPath field of a leaf's statement. */
function leafOutPath(leaf: Uint8Array): string {
  return new TextDecoder().decode(leaf).split('\n')[0]!.split(';')[3]!;
}
