import { parseCheckpoint, type Checkpoint, type NoteVerifierKey } from '../ledger/checkpoint.js';
import type { Cosignature } from '../witness/cosignature.js';
import { verifyCosigned, type WitnessPolicy } from '../witness/verifyCosigned.js';
import { step, VerificationError } from './errors.js';

/** What a verifier pinned out of band: the log's key (its name is the origin) and the witnesses it requires. */
export interface LogTrust {
  logKey: NoteVerifierKey;
  /** The origin line the log's checkpoints must carry. */
  origin: string;
  /** null: the log's signature alone (a verifier that pinned no witnesses). */
  witnesses: WitnessPolicy | null;
}

/**
 * Step 1. The checkpoint is signed by the pinned log key, for the pinned origin, and cosigned by at
 * least M of the pinned witnesses.
 *  - The signature defends against anyone without the log key (a server or proxy in the path, a
 *    blob store, a copy of the database) inventing a tree head.
 *  - The cosignatures defend against the log key's holder (the operator, or whoever took its data
 *    directory) showing this verifier a history the witnesses did not see: a split view. Each
 *    witness cosigns one history only, so a fork needs M colluding witnesses.
 */
export function verifyCheckpoint(note: string, trust: LogTrust): { checkpoint: Checkpoint; cosignatures: Cosignature[] } {
  const { checkpoint, cosignatures } = step('checkpoint', 'bad-checkpoint', () =>
    trust.witnesses ? verifyCosigned(note, trust.logKey, trust.witnesses) : { checkpoint: parseCheckpoint(note, trust.logKey), cosignatures: [] },
  );
  // Another log under the same key (a test log, an old origin) must not stand in for this one.
  if (checkpoint.origin !== trust.origin) throw new VerificationError('checkpoint', 'bad-checkpoint', `the checkpoint is of log ${JSON.stringify(checkpoint.origin)}, not ${JSON.stringify(trust.origin)}`);
  return { checkpoint, cosignatures };
}
