import { QuorumError } from '../errors.js';

/** Nix's base-32 alphabet: no e, o, u, t (avoids accidental words). */
export const NIX32_ALPHABET = '0123456789abcdfghijklmnpqrsvwxyz';

const DIGIT = new Map([...NIX32_ALPHABET].map((c, i) => [c, i]));

/** Length of the nix32 encoding of `bytes` bytes (52 for SHA-256, 32 for a store path hash). */
export function nix32Length(bytes: number): number {
  return Math.ceil((bytes * 8) / 5);
}

/**
 * Nix encodes the bit string least-significant-first and prints the last 5-bit group first,
 * so the output is not the RFC 4648 base32 of the same bytes.
 */
export function nix32Encode(bytes: Uint8Array): string {
  const len = nix32Length(bytes.length);
  let out = '';
  for (let n = len - 1; n >= 0; n--) {
    const b = n * 5;
    const i = Math.floor(b / 8);
    const j = b % 8;
    const lo = (bytes[i] ?? 0) >> j;
    const hi = i + 1 < bytes.length ? (bytes[i + 1] ?? 0) << (8 - j) : 0;
    out += NIX32_ALPHABET[(lo | hi) & 0x1f];
  }
  return out;
}

/** Decodes a nix32 string of exactly nix32Length(size) characters into `size` bytes. */
export function nix32Decode(text: string, size: number): Buffer {
  if (text.length !== nix32Length(size)) {
    throw new QuorumError('bad-nix32', `expected ${nix32Length(size)} nix32 characters, got ${text.length}`);
  }
  const out = Buffer.alloc(size);
  for (let n = 0; n < text.length; n++) {
    const c = text[text.length - n - 1]!;
    const digit = DIGIT.get(c);
    if (digit === undefined) throw new QuorumError('bad-nix32', `invalid nix32 character ${JSON.stringify(c)}`);
    const b = n * 5;
    const i = Math.floor(b / 8);
    const j = b % 8;
    out[i] = out[i]! | ((digit << j) & 0xff);
    const carry = digit >> (8 - j);
    if (i + 1 < size) out[i + 1] = out[i + 1]! | carry;
    else if (carry !== 0) throw new QuorumError('bad-nix32', 'nix32 string has bits beyond the hash length');
  }
  return out;
}
