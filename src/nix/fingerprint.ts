import { QuorumError } from '../errors.js';
import type { NarHash } from './hash.js';
import { signNix, verifyNix, type PublicKey, type SecretKey } from './keys.js';
import type { NarInfo } from './narinfo.js';
import { storePathFromBaseName, type StorePath } from './storePath.js';

/**
 * The string a narinfo `Sig` signs (Nix's ValidPathInfo::fingerprint):
 * `1;<storePath>;<narHash sha256:nix32>;<narSize>;<references as full paths, sorted, joined by ,>`.
 */
export function fingerprint(storePath: StorePath, narHash: NarHash, narSize: number, references: StorePath[]): string {
  // Nix refuses too: a size of 0 means "unknown", and signing it would vouch for nothing.
  if (!Number.isSafeInteger(narSize) || narSize <= 0) {
    throw new QuorumError('bad-nar-size', `narSize must be a positive integer to sign or check ${storePath}, got ${narSize}`, { field: 'narSize' });
  }
  return `1;${storePath};${narHash};${narSize};${[...new Set(references)].sort().join(',')}`;
}

/** fingerprint() of a quorum content, whose references are stored as full paths, sorted, joined by ','. */
export function contentFingerprint(storePath: StorePath, narHash: NarHash, narSize: number, refs: string): string {
  return fingerprint(storePath, narHash, narSize, refs === '' ? [] : (refs.split(',') as StorePath[]));
}

export function narInfoFingerprint(info: NarInfo): string {
  const references = info.references.map((ref) => storePathFromBaseName(ref, 'References'));
  return fingerprint(info.storePath, info.narHash, info.narSize, references);
}

/** A `Sig:` value for `info`, made with `secretKey`. */
export function signNarInfo(info: NarInfo, secretKey: SecretKey): string {
  return signNix(secretKey, narInfoFingerprint(info));
}

/** True iff `sig` is `publicKey`'s name and a valid signature of `info`'s fingerprint. */
export function verifyNarInfoSig(info: NarInfo, publicKey: PublicKey, sig: string): boolean {
  return verifyNix(publicKey, narInfoFingerprint(info), sig);
}
