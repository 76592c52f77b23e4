import { QuorumError } from '../errors.js';

/**
 * What the kernel and SQLite say when a write finds no room: the disk (ENOSPC, SQLITE_FULL) or the
 * user's quota (EDQUOT) is full. A full disk is an operator's problem, not a client's or a bug:
 * the write is refused whole (503 with Retry-After), reads go on, and writes work again once
 * space is freed.
 */
const FULL_CODES = new Set(['ENOSPC', 'EDQUOT', 'SQLITE_FULL']);

/** The no-space code of `err` or of an error it wraps (`cause`), or undefined. */
export function storageFullCode(err: unknown): string | undefined {
  for (let e = err, depth = 0; e !== null && typeof e === 'object' && depth < 8; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && FULL_CODES.has(code)) return code;
  }
  return undefined;
}

/** `err` as a 'storage-full' QuorumError if it is one underneath, else undefined. */
export function asStorageFull(err: unknown, what: string): QuorumError | undefined {
  if (err instanceof QuorumError && err.code === 'storage-full') return err;
  const code = storageFullCode(err);
  if (code === undefined) return undefined;
  return new QuorumError('storage-full', `${what}: no space left on the server's storage (${code}); nothing was written, retry later`, { cause: err });
}
