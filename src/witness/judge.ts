import { EMPTY_ROOT, verifyConsistency } from '../ledger/merkle.js';

/** What a witness holds for one log: the latest checkpoint it cosigned. */
export interface LogHead {
  size: number;
  rootHash: Buffer;
}

export type Verdict =
  | { status: 200 }
  | { status: 400 | 422; reason: string; evidence: boolean }
  | { status: 409; reason: string; evidence: boolean; size: number };

/**
 * The consistency checks of c2sp.org/tlog-witness add-checkpoint, in the spec's order, for a
 * checkpoint whose log signature already verified. `head` is the latest the witness cosigned (none:
 * it never cosigned this log). `evidence` marks a refusal that shows the log signed a checkpoint
 * inconsistent with one it signed before, or sent a proof that fails: worth keeping.
 */
export function judge(oldSize: number, proof: readonly Buffer[], size: number, rootHash: Buffer, head: LogHead | undefined): Verdict {
  const latest = head?.size ?? 0;
  // The old size must not exceed the checkpoint's: nothing to prove, a malformed request.
  if (oldSize > size) return { status: 400, reason: `old size ${oldSize} is larger than the checkpoint size ${size}`, evidence: false };
  // The client's idea of our state must be our state: otherwise it proves the wrong range (it learns
  // ours from the answer). A checkpoint of our size with another root is equivocation on its face.
  if (oldSize !== latest) {
    const equivocates = head !== undefined && size === head.size && !rootHash.equals(head.rootHash);
    return { status: 409, reason: `old size ${oldSize} is not the size of the latest checkpoint cosigned for this log (${latest})`, evidence: equivocates, size: latest };
  }
  // The empty tree has one root, the hash of the empty string (RFC 6962 2.1).
  if (size === 0 && !rootHash.equals(EMPTY_ROOT)) return { status: 422, reason: `a checkpoint of size 0 must have the empty tree's root ${EMPTY_ROOT.toString('base64')}`, evidence: true };
  // The empty tree is a prefix of every tree: there is nothing to prove, so a proof is malformed.
  if (oldSize === 0 && proof.length > 0) return { status: 422, reason: `old size 0 takes an empty consistency proof, got ${proof.length} lines`, evidence: true };
  // Same size: the very same tree, or two histories (verifyConsistency says which).
  try {
    verifyConsistency(oldSize, size, proof, head?.rootHash ?? EMPTY_ROOT, rootHash);
  } catch (error) {
    return { status: 422, reason: (error as Error).message, evidence: true };
  }
  return { status: 200 };
}
