import { createHash } from 'node:crypto';
import { QuorumError } from '../errors.js';
import { nix32Decode, nix32Encode } from './nix32.js';

declare const narHashBrand: unique symbol;
/** A SHA-256 NAR hash in Nix's canonical form `sha256:<52 nix32 chars>`. */
export type NarHash = string & { readonly [narHashBrand]: true };

const SHA256_BYTES = 32;
/**
 * `sha256:<nix32>` as Nix prints it. 52 characters carry 260 bits; the first one holds the top bit
 * of the 256 and four that must be zero, so it is 0 or 1, and every string of this shape is a
 * valid, canonical hash (ingest parses one per attestation: no decode and re-encode needed).
 */
const CANONICAL = /^sha256:[01][0123456789abcdfghijklmnpqrsvwxyz]{51}$/;

/** Wraps a raw SHA-256 digest as a canonical NarHash. */
export function narHashFromDigest(digest: Uint8Array): NarHash {
  if (digest.length !== SHA256_BYTES) throw new QuorumError('bad-hash', `a SHA-256 digest has 32 bytes, got ${digest.length}`);
  return `sha256:${nix32Encode(digest)}` as NarHash;
}

/** The 32 raw bytes of a NarHash. */
export function narHashDigest(hash: NarHash): Buffer {
  return nix32Decode(hash.slice('sha256:'.length), SHA256_BYTES);
}

/**
 * Parses any form Nix prints a SHA-256 hash in: `sha256:<nix32>`, `sha256:<base16>`,
 * `sha256:<base64>` and SRI `sha256-<base64>`; returns the canonical `sha256:<nix32>`.
 */
export function parseNarHash(text: string, field = 'narHash'): NarHash {
  if (typeof text !== 'string') throw new QuorumError('bad-hash', `${field} must be a string`, { field });
  if (CANONICAL.test(text)) return text as NarHash;
  let digest: Buffer | undefined;
  const sri = /^sha256-([A-Za-z0-9+/]{43}=)$/.exec(text);
  if (sri) digest = Buffer.from(sri[1]!, 'base64');
  const typed = /^sha256:(.*)$/.exec(text);
  if (typed) {
    const body = typed[1]!;
    if (body.length === 52) digest = decodeOrUndefined(body);
    else if (/^[0-9a-fA-F]{64}$/.test(body)) digest = Buffer.from(body, 'hex');
    else if (/^[A-Za-z0-9+/]{43}=$/.test(body)) digest = Buffer.from(body, 'base64');
  }
  if (!digest || digest.length !== SHA256_BYTES) {
    throw new QuorumError(
      'bad-hash',
      `${field} must be a SHA-256 hash as sha256:<52 nix32 chars>, sha256:<64 hex chars> or sha256-<base64>, got ${JSON.stringify(text.slice(0, 80))}`,
      { field },
    );
  }
  return narHashFromDigest(digest);
}

function decodeOrUndefined(body: string): Buffer | undefined {
  try {
    return nix32Decode(body, SHA256_BYTES);
  } catch {
    return undefined;
  }
}

/** SRI form `sha256-<base64>`, as `nix path-info --json` prints it. */
export function narHashToSri(hash: NarHash): string {
  return `sha256-${narHashDigest(hash).toString('base64')}`;
}

export function sha256(data: Uint8Array | string): Buffer {
  return createHash('sha256').update(data).digest();
}
