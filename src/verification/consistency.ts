import type { Checkpoint } from '../ledger/checkpoint.js';
import { verifyConsistency } from '../ledger/merkle.js';
import { VerificationError } from './errors.js';

/** The newest tree head a verifier checked and stored: everything it accepts must extend it. */
export interface VerifiedHead {
  size: number;
  rootHash: Buffer;
}

/** How messages name the parties: "the primary" / "this mirror", "https://ledger" / "this client". */
export interface Parties {
  offeredBy: string;
  verifier: string;
}

/**
 * Step 2, the part every verifier shares: an offered checkpoint against the newest one verified.
 * A smaller tree is a rollback: it would hide what was logged since (a revocation, a dissenting
 * attestation that blocks a path), the attack of a server restored from an old backup or of an
 * operator undoing a revocation. The same size with another root is a fork: a second history under
 * the log's key. Both are signed by the log key, so they are evidence. Returns 'same' (nothing
 * new) or 'extends' (a larger tree, to be proved with verifyExtension or a replay of its leaves).
 */
export function compareWithVerified(verified: VerifiedHead | null, offered: Checkpoint, parties: Parties): 'same' | 'extends' {
  if (!verified || offered.size > verified.size) return 'extends';
  if (offered.size < verified.size) {
    throw new VerificationError('consistency', 'rollback', `${parties.offeredBy}'s checkpoint has ${offered.size} entries, fewer than the ${verified.size} ${parties.verifier} verified: its history was rolled back`);
  }
  if (!offered.rootHash.equals(verified.rootHash)) throw new VerificationError('consistency', 'fork', `${parties.offeredBy}'s checkpoint of ${offered.size} entries has another root than the tree ${parties.verifier} verified: a fork`);
  return 'same';
}

/**
 * Step 2 for a verifier that does not hold the leaves (the client): an RFC 9162 consistency proof
 * that the offered tree extends the verified one. A proof that fails means the log key signed a
 * tree that rewrote history: a fork.
 */
export function verifyExtension(verified: VerifiedHead, offered: Checkpoint, proof: readonly Buffer[], parties: Parties): void {
  try {
    verifyConsistency(verified.size, offered.size, proof, verified.rootHash, offered.rootHash);
  } catch (error) {
    // Both checkpoints carry the log's signature: if the log cannot prove one extends the other, it forked.
    throw new VerificationError('consistency', 'fork', `${parties.offeredBy}'s checkpoint of ${offered.size} entries does not extend the ${verified.size} ${parties.verifier} verified: ${(error as Error).message}`);
  }
}
