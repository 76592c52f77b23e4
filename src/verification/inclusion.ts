import type { Checkpoint } from '../ledger/checkpoint.js';
import { decodeLeaf, type LogLeaf } from '../ledger/leaf.js';
import { leafHash, verifyInclusion } from '../ledger/merkle.js';
import { parseTlogProof, type TlogProof } from '../ledger/tlogProof.js';
import { step, VerificationError } from './errors.js';

/** Reads a tlog-proof text (its checkpoint is then verified with verifyCheckpoint). */
export function readProof(text: string): TlogProof {
  return step('inclusion', 'bad-proof', () => parseTlogProof(text));
}

/**
 * Step 3. The leaf is in the tree the checkpoint signs: its inclusion path leads to the root. Defends
 * against a server (or anything in the path) answering with an entry that is not in the log, or
 * that the log holds only in a history shown to this verifier: what is not in the witnessed log,
 * monitors and auditors never see.
 */
export function verifyIncluded(leaf: Buffer, proof: TlogProof, checkpoint: Checkpoint): void {
  if (proof.index >= checkpoint.size) throw new VerificationError('inclusion', 'bad-proof', `entry ${proof.index} is not in the checkpoint's tree of ${checkpoint.size} entries`);
  step('inclusion', 'bad-proof', () => verifyInclusion(leafHash(leaf), proof.index, checkpoint.size, proof.hashes, checkpoint.rootHash));
}

/**
 * Step 4. The leaf's bytes decode, in their one canonical spelling, to an entry of a known kind.
 * Defends against bytes that different readers would read differently (an attestation that one
 * verifier counts and another does not), which the log key may have signed all the same.
 */
export function decodeVerifiedLeaf(index: number, leaf: Uint8Array): LogLeaf {
  try {
    return decodeLeaf(leaf);
  } catch (error) {
    throw new VerificationError('leaf', 'bad-leaf', `entry ${index}: ${(error as Error).message}`);
  }
}
