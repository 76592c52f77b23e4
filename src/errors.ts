/**
 * Every error code of nix-quorum, with the HTTP status it is answered with. One closed list: a code
 * that is not here does not type-check, and the status of a code is looked up, never guessed from
 * its spelling. Codes that only a command-line tool raises (verify's findings, the builder's spool)
 * carry the status they would have if a server ever answered with them.
 */
export const ERROR_STATUS = {
  // 400: the input itself is wrong; the message names the field.
  'bad-attestation': 400,
  'bad-blob-body': 400,
  'bad-builder': 400,
  'bad-checkpoint': 400,
  'bad-compression': 400,
  'bad-config': 400,
  'bad-content-digest': 400,
  'bad-content-length': 400,
  'bad-data-dir': 400,
  'bad-hash': 400,
  'bad-hook-env': 400,
  'bad-json': 400,
  'bad-key': 400,
  'bad-key-name': 400,
  'bad-leaf': 400,
  'bad-log': 400,
  'bad-log-hash': 400,
  'bad-nar': 400,
  'bad-nar-hash': 400,
  'bad-nar-size': 400,
  'bad-narinfo': 400,
  'bad-narinfo-signature': 400,
  'bad-nix32': 400,
  'bad-policy': 400,
  'bad-proof': 400,
  'bad-query': 400,
  'bad-range': 400,
  'bad-request': 400,
  'bad-response': 400,
  'bad-signature': 400,
  'bad-spool-entry': 400,
  'bad-state': 400,
  'bad-store-path': 400,
  'bad-value': 400,
  'bad-add-checkpoint': 400,
  'bad-witness-threshold': 400,
  'blob-size-mismatch': 400,
  'exists': 400,
  'no-key': 400,
  'no-server': 400,
  'wrong-store': 400,
  // 401/403: who is asking.
  'unauthorized': 401,
  'forbidden': 403,
  'unknown-builder': 403,
  'revoked-builder': 403,
  // A checkpoint without a valid signature of the log key the witness trusts (c2sp.org/tlog-witness).
  'unsigned-checkpoint': 403,
  // 404: nothing by that name.
  'not-found': 404,
  'no-such-builder': 404,
  'unknown-policy': 404,
  'unknown-origin': 404,
  // No checkpoint has the cosignatures asked for (verify's finding, and GET /api/v1/log/checkpoint?cosigned=M).
  'not-witnessed': 404,
  // 405: a route that takes another method.
  'method-not-allowed': 405,
  // 409: the change contradicts what the log already says.
  'builder-exists': 409,
  'key-registered': 409,
  'key-revoked': 409,
  'too-many-statements': 409,
  // 421: asked of the wrong server.
  'mirror-read-only': 421,
  // 413: too big to take.
  'blob-too-large': 413,
  'too-large': 413,
  // 415, 429: how it was sent.
  'unsupported-encoding': 415,
  // 422: a checkpoint inconsistent with the one the witness cosigned before (c2sp.org/tlog-witness).
  'inconsistent-checkpoint': 422,
  'too-many-requests': 429,
  // 500: our fault, or a verification finding of a CLI (never sent by a server).
  'blob-list-unsorted': 500,
  'fork': 500,
  'internal': 500,
  'key-changed': 500,
  'missing-node': 500,
  'nar-dump': 500,
  'nix-failed': 500,
  'not-derivable': 500,
  'rejected': 500,
  // A verifier's findings about a log (src/verification/): a smaller tree than one verified, leaves that do not hash to the signed root.
  'rollback': 500,
  'root-mismatch': 500,
  'schema-migration': 500,
  'spool-unreadable': 500,
  'spool-unwritable': 500,
  'tampered': 500,
  'web-index': 500,
  // 503: try again later.
  'blob-store-failed': 503,
  'blob-store-unavailable': 503,
  'data-dir-locked': 503,
  // The ledger database cannot be read: damaged pages, not a database, replaced or removed (src/db/health.ts).
  'database-unreadable': 503,
  // The address to listen on is taken or not this machine's (a CLI finding at start).
  'listen-failed': 503,
  // No space left (ENOSPC, EDQUOT, SQLITE_FULL): nothing was written; retry once space is freed (src/faults/storageFull.ts).
  'storage-full': 503,
  'unavailable': 503,
  'upstream-unavailable': 503,
  // A server's 4xx answer, as a client received it (its own code is in `remoteCode`).
  'refused': 400,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;

/**
 * The one error class of nix-quorum. `code` is a stable string callers switch on (and HTTP maps to
 * a status with statusOf); `field` names the offending input where there is one. `remoteCode` is
 * the code a remote server answered with (untrusted text, for messages and retry decisions only).
 */
export class QuorumError extends Error {
  readonly code: ErrorCode;
  readonly field: string | undefined;
  readonly remoteCode: string | undefined;

  constructor(code: ErrorCode, message: string, options: { field?: string; cause?: unknown; remoteCode?: string } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'QuorumError';
    this.code = code;
    this.field = options.field;
    this.remoteCode = options.remoteCode;
  }

  get status(): number {
    return ERROR_STATUS[this.code];
  }
}
