import { QuorumError } from '../errors.js';
import { parseCheckpoint, type Checkpoint, type NoteVerifierKey } from '../ledger/checkpoint.js';
import { checkDistinctFromLog, checkDistinctWitnesses, parseCosignerVerifier, verifyCosignatures, type Cosignature, type CosignerVerifier } from './cosignature.js';

/** What a verifier requires of a checkpoint: `threshold` valid cosignatures of distinct `witnesses`. */
export interface WitnessPolicy {
  witnesses: CosignerVerifier[];
  threshold: number;
}

/** `--witness VKEY…` and `--witness-threshold M` (default: every witness given). */
export function parseWitnessPolicy(vkeys: readonly string[], threshold: number | undefined, field = 'witness'): WitnessPolicy {
  const witnesses = vkeys.map((v, i) => parseCosignerVerifier(v, `${field}[${i}]`));
  checkDistinctWitnesses(witnesses, field);
  const m = threshold ?? witnesses.length;
  if (!Number.isSafeInteger(m) || m < 1 || m > witnesses.length) {
    throw new QuorumError('bad-witness-threshold', `the witness threshold must be a whole number from 1 to the number of witnesses given (${witnesses.length}), got ${threshold}`, { field: 'witnessThreshold' });
  }
  return { witnesses, threshold: m };
}

/**
 * Checks a served checkpoint against a witness policy: the log's signature verifies, and at least
 * `threshold` of the witnesses cosigned this very checkpoint text (cosignature/v1). Defends against
 * a split view: a log showing us a history the witnesses did not see (they cosign one history
 * only). Cosignatures of unknown keys are ignored; an invalid one of a configured witness means the
 * note was altered and fails (QuorumError 'tampered'); too few is QuorumError 'not-witnessed', naming
 * the witnesses that did not cosign.
 */
export function verifyCosigned(note: string, logKey: NoteVerifierKey, policy: WitnessPolicy): { checkpoint: Checkpoint; cosignatures: Cosignature[]; missing: CosignerVerifier[] } {
  // The log and a witness with one key would be one party signing twice.
  for (const w of policy.witnesses) checkDistinctFromLog(w, logKey, 'witness');
  const checkpoint = parseCheckpoint(note, logKey);
  const cosignatures = verifyCosignatures(note, policy.witnesses);
  const missing = policy.witnesses.filter((w) => !cosignatures.some((c) => c.witness === w));
  if (cosignatures.length < policy.threshold) {
    throw new QuorumError(
      'not-witnessed',
      `the checkpoint of ${checkpoint.size} entries has ${cosignatures.length} valid cosignature${cosignatures.length === 1 ? '' : 's'} of the ${policy.threshold} required` +
        `${cosignatures.length > 0 ? ` (cosigned by ${cosignatures.map((c) => c.witness.name).join(', ')})` : ''}; not cosigned by ${missing.map((w) => w.name).join(', ')}`,
    );
  }
  return { checkpoint, cosignatures, missing };
}
