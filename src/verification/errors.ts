import { QuorumError, type ErrorCode } from '../errors.js';

/**
 * The verification steps every verifier of a ledger runs (the mirror's follower, the client), in
 * this order: 1 checkpoint, 2 consistency, 3 inclusion, 4 leaf, 5 signature, then 6 revocations
 * (revocations.ts), which cannot fail: they only remove trust. A failure names its step, so a
 * report says how far a ledger's answer got.
 */
export type Step = 'checkpoint' | 'consistency' | 'inclusion' | 'leaf' | 'signature';

/** Why a ledger's answer was refused: a closed subset of the error codes (src/errors.ts). */
const VERIFICATION_CODES = ['bad-checkpoint', 'not-witnessed', 'tampered', 'rollback', 'fork', 'bad-proof', 'bad-leaf', 'root-mismatch', 'bad-signature', 'not-derivable'] as const satisfies readonly ErrorCode[];
export type VerificationCode = (typeof VERIFICATION_CODES)[number];

/**
 * Codes that prove misbehaviour of the log itself (something its key signed does not follow from
 * what was verified before): kept as evidence. The others may be an attacker in the path, a broken
 * server or a witness not yet caught up: the ledger is skipped, and asked again later.
 */
export const EVIDENCE: ReadonlySet<VerificationCode> = new Set(['rollback', 'fork', 'root-mismatch', 'bad-leaf', 'bad-signature', 'not-derivable']);

/** The one error of the verification steps. */
export class VerificationError extends QuorumError {
  declare readonly code: VerificationCode;

  constructor(
    readonly step: Step,
    code: VerificationCode,
    message: string,
  ) {
    super(code, message);
    this.name = 'VerificationError';
  }

  get evidence(): boolean {
    return EVIDENCE.has(this.code);
  }
}

/** Runs one step, turning the QuorumError of the parser or proof checker it calls into that step's VerificationError. */
export function step<T>(name: Step, fallback: VerificationCode, run: () => T): T {
  try {
    return run();
  } catch (error) {
    if (error instanceof VerificationError || !(error instanceof QuorumError)) throw error;
    const code = (VERIFICATION_CODES as readonly string[]).includes(error.code) ? (error.code as VerificationCode) : fallback;
    throw new VerificationError(name, code, error.message);
  }
}
