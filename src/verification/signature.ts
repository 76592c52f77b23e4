import { statementText, type Attestation } from '../ledger/statement.js';
import { verifyRaw, type PublicKey } from '../nix/keys.js';

/** One Ed25519 check: what a signature pool verifies in batches, or signatureValid one at a time. */
export interface SignatureJob {
  key: PublicKey;
  message: Buffer;
  signature: Buffer;
}

/**
 * Step 5. An attestation counts only with a valid signature of the builder key it names, over the
 * exact statement text. Defends against everyone who is not that builder: the server operator, a
 * compromised blob store or database, another builder signing in its name. Which key that is, is
 * the caller's: the key the log bound the name to (a mirror, replaying the log), or the key the user
 * pinned for that name (the client, which trusts no registry but its own).
 */
export function signatureJob(attestation: Attestation, key: PublicKey): SignatureJob {
  return { key, message: Buffer.from(statementText(attestation)), signature: attestation.signature };
}

/**
 * signatureJob for an attestation decoded from the log leaf `leaf`: its statement is the leaf's
 * first line byte for byte (decodeLeaf refuses a leaf that is not the canonical encoding), so the
 * bytes the log holds are the ones checked, without spelling them out again.
 */
export function leafSignatureJob(leaf: Buffer, attestation: Attestation, key: PublicKey): SignatureJob {
  return { key, message: leaf.subarray(0, leaf.indexOf(0x0a)), signature: attestation.signature };
}

export function signatureValid(job: SignatureJob): boolean {
  return verifyRaw(job.key, job.message, job.signature);
}
