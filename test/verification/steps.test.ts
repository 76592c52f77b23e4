import { describe, expect, it } from 'vitest';
import { formatCheckpoint, generateNoteKey, parseCheckpointBody, signNote } from '../../src/ledger/checkpoint.js';
import { encodeLeaf } from '../../src/ledger/leaf.js';
import { appendLeaves, consistencyProof, inclusionProof, leafHash, MemoryNodeStore, rootHash } from '../../src/ledger/merkle.js';
import { keyIdOf } from '../../src/ledger/registryRules.js';
import { parseAttestation } from '../../src/ledger/attestation.js';
import { generateSecretKey } from '../../src/nix/keys.js';
import { verifyCheckpoint, type LogTrust } from '../../src/verification/checkpoint.js';
import { compareWithVerified, verifyExtension } from '../../src/verification/consistency.js';
import { VerificationError } from '../../src/verification/errors.js';
import { decodeVerifiedLeaf, verifyIncluded } from '../../src/verification/inclusion.js';
import { revokedKeys } from '../../src/verification/revocations.js';
import { leafSignatureJob, signatureJob, signatureValid } from '../../src/verification/signature.js';
import { cosign, generateCosignerKey } from '../../src/witness/cosignature.js';
import { randomNarHash, randomStorePath, signedAttestation } from '../helpers/ledger.js';

const ORIGIN = 'steps.test/log';
const log = generateNoteKey(ORIGIN);
const [w1, w2] = [generateCosignerKey('w1.test'), generateCosignerKey('w2.test')];
const builder = generateSecretKey('builder-1');

/** A tree of `n` attestation leaves, kept in memory, and its signed, cosigned checkpoint at any size. */
function tree(n: number) {
  const leaves = Array.from({ length: n }, () => encodeLeaf(parseAttestation(signedAttestation(builder, { outPath: randomStorePath(), narHash: randomNarHash() }))));
  const nodes = new MemoryNodeStore();
  nodes.add(appendLeaves(0, leaves.map(leafHash), nodes));
  const note = (size: number, witnesses = [w1, w2]) => {
    const body = formatCheckpoint({ origin: ORIGIN, size, rootHash: rootHash(size, nodes) });
    return signNote(body, log) + witnesses.map((w) => cosign(body, w, 1_700_000_000)).join('');
  };
  return { leaves, nodes, note };
}

const trust: LogTrust = { logKey: log.verifier, origin: ORIGIN, witnesses: { witnesses: [w1.verifier, w2.verifier], threshold: 2 } };
const failing = (run: () => unknown) => {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(VerificationError);
    return { code: (error as VerificationError).code, step: (error as VerificationError).step, evidence: (error as VerificationError).evidence };
  }
  throw new Error('expected a VerificationError');
};

describe('the verification steps (src/verification/)', () => {
  const t = tree(13);

  it('1. takes a checkpoint signed by the pinned log key and cosigned by M of N pinned witnesses, for the pinned origin', () => {
    expect(verifyCheckpoint(t.note(13), trust).cosignatures.map((c) => c.witness.name)).toEqual(['w1.test', 'w2.test']);
    expect(failing(() => verifyCheckpoint(t.note(13, [w1]), trust))).toEqual({ code: 'not-witnessed', step: 'checkpoint', evidence: false });
    expect(failing(() => verifyCheckpoint(t.note(13).replace(`\n${13}\n`, '\n12\n'), trust))).toMatchObject({ code: 'bad-checkpoint', step: 'checkpoint' });
    expect(failing(() => verifyCheckpoint(t.note(13), { ...trust, logKey: generateNoteKey(ORIGIN).verifier }))).toMatchObject({ code: 'bad-checkpoint' });
    expect(failing(() => verifyCheckpoint(t.note(13), { ...trust, origin: 'another/log' }))).toMatchObject({ code: 'bad-checkpoint' });
  });

  it('2. refuses a smaller tree (rollback) and another root at the same size (fork) as evidence; a larger tree needs a consistency proof', () => {
    const verified = { size: 8, rootHash: rootHash(8, t.nodes) };
    const at = (size: number) => parseCheckpointBody(formatCheckpoint({ origin: ORIGIN, size, rootHash: rootHash(size, t.nodes) }));
    const parties = { offeredBy: 'the ledger', verifier: 'this test' };
    expect(compareWithVerified(verified, at(8), parties)).toBe('same');
    expect(compareWithVerified(null, at(3), parties)).toBe('extends');
    expect(compareWithVerified(verified, at(13), parties)).toBe('extends');
    expect(failing(() => compareWithVerified(verified, at(7), parties))).toEqual({ code: 'rollback', step: 'consistency', evidence: true });
    const other = tree(8);
    const forked = parseCheckpointBody(formatCheckpoint({ origin: ORIGIN, size: 8, rootHash: rootHash(8, other.nodes) }));
    expect(failing(() => compareWithVerified(verified, forked, parties))).toEqual({ code: 'fork', step: 'consistency', evidence: true });
    verifyExtension(verified, at(13), consistencyProof(8, 13, t.nodes), parties);
    const rewritten = tree(13);
    const longer = parseCheckpointBody(formatCheckpoint({ origin: ORIGIN, size: 13, rootHash: rootHash(13, rewritten.nodes) }));
    expect(failing(() => verifyExtension(verified, longer, consistencyProof(8, 13, rewritten.nodes), parties))).toMatchObject({ code: 'fork', evidence: true });
  });

  it('3-4. proves a leaf in the checkpoint\'s tree and decodes it canonically', () => {
    const checkpoint = parseCheckpointBody(formatCheckpoint({ origin: ORIGIN, size: 13, rootHash: rootHash(13, t.nodes) }));
    verifyIncluded(t.leaves[5]!, { index: 5, hashes: inclusionProof(5, 13, t.nodes), checkpoint: '' }, checkpoint);
    expect(failing(() => verifyIncluded(t.leaves[5]!, { index: 5, hashes: inclusionProof(5, 12, t.nodes), checkpoint: '' }, checkpoint))).toMatchObject({ code: 'bad-proof', step: 'inclusion', evidence: false });
    expect(failing(() => verifyIncluded(t.leaves[5]!, { index: 13, hashes: [], checkpoint: '' }, checkpoint))).toMatchObject({ code: 'bad-proof' });
    expect(decodeVerifiedLeaf(5, t.leaves[5]!).kind).toBe('attestation');
    expect(failing(() => decodeVerifiedLeaf(5, Buffer.concat([t.leaves[5]!, Buffer.from(' ')])))).toMatchObject({ code: 'bad-leaf', step: 'leaf' });
    // Bytes that are not UTF-8 (a lone continuation byte where a name's letter was): a reader
    // decoding them leniently would see another text than the bytes the tree holds.
    const name = t.leaves[5]!.indexOf(Buffer.from('\nbuilder-'));
    const notUtf8 = Buffer.from(t.leaves[5]!);
    notUtf8[name + 1] = 0x80;
    expect(failing(() => decodeVerifiedLeaf(5, notUtf8))).toMatchObject({ code: 'bad-leaf', step: 'leaf' });
  });

  it('5. counts an attestation only under the key given for its name', () => {
    const leaf = decodeVerifiedLeaf(0, t.leaves[0]!);
    if (leaf.kind !== 'attestation') throw new Error('an attestation leaf');
    expect(signatureValid(signatureJob(leaf.attestation, builder.publicKey))).toBe(true);
    expect(signatureValid(signatureJob(leaf.attestation, generateSecretKey('builder-1').publicKey))).toBe(false);
    // A replica checks the leaf's own first line: the statement the builder signed, byte for byte.
    expect(leafSignatureJob(t.leaves[0]!, leaf.attestation, builder.publicKey).message).toEqual(signatureJob(leaf.attestation, builder.publicKey).message);
    expect(signatureValid(leafSignatureJob(t.leaves[0]!, leaf.attestation, builder.publicKey))).toBe(true);
    expect(signatureValid(leafSignatureJob(t.leaves[0]!, leaf.attestation, generateSecretKey('builder-1').publicKey))).toBe(false);
  });

  it('6. revocations only remove trust: the key the revoked name was bound to, or the pinned key of that name when no add leaf came', () => {
    const [a, b, c] = ['a-1', 'b-1', 'c-1'].map((n) => generateSecretKey(n).publicKey);
    const pinned = new Map([a!, b!, c!].map((k) => [k.name, k.raw]));
    const revoked = revokedKeys(
      [
        { action: 'add', name: 'a-1', publicKey: a!.raw, at: 1 },
        { action: 'revoke', name: 'a-1', at: 2 },
        { action: 'revoke', name: 'b-1', at: 3 },
        { action: 'add', name: 'c-1', publicKey: generateSecretKey('c-1').publicKey.raw, at: 4 },
        { action: 'revoke', name: 'c-1', at: 5 },
      ],
      pinned,
    );
    expect(revoked.has(keyIdOf(a!.raw))).toBe(true);
    expect(revoked.has(keyIdOf(b!.raw))).toBe(true);
    // The log's c-1 is another key than the one pinned: its revocation says nothing about yours.
    expect(revoked.has(keyIdOf(c!.raw))).toBe(false);
    expect(revokedKeys([{ action: 'add', name: 'a-1', publicKey: a!.raw, at: 1 }], pinned).size).toBe(0);
  });
});
