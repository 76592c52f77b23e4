/**
 * The one error class of nix-quorum. `code` is a stable string callers switch on
 * (and HTTP maps to a status); `field` names the offending input where there is one.
 */
export class QuorumError extends Error {
  readonly code: string;
  readonly field: string | undefined;

  constructor(code: string, message: string, options: { field?: string; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'QuorumError';
    this.code = code;
    this.field = options.field;
  }
}
