/**
 * The NAR (Nix ARchive) wire format, shared by the writer and the parser.
 *
 * A NAR is nothing but a sequence of strings: each is a 64-bit little-endian length, the bytes,
 * then zero bytes up to the next multiple of 8. File contents are encoded the same way.
 *
 *   nar     = "nix-archive-1" node
 *   node    = "(" "type" ( regular | directory | symlink ) ")"
 *   regular = "regular" [ "executable" "" ] "contents" <bytes>
 *   symlink = "symlink" "target" <target>
 *   directory = "directory" { "entry" "(" "name" <name> "node" node ")" }   names strictly ascending, byte order
 *
 * The limits are those of Nix's parser (src/libutil/archive.cc, parse()): they are format
 * bounds, independent of the host's NAME_MAX/PATH_MAX, and the writer enforces them too so it
 * never emits a NAR that Nix (or our verifier) would refuse.
 */

export const NAR_MAGIC = 'nix-archive-1';
/** Longest keyword ("executable" is 10 bytes); Nix allows a little slack for readable errors. */
export const MAX_TAG_BYTES = 32;
export const MAX_NAME_BYTES = 255;
export const MAX_TARGET_BYTES = 4095;
/** Nodes at this depth (the root is depth 0) are refused when dumping and when parsing. */
export const MAX_DEPTH = 64;

/** Zero bytes needed after `length` bytes to reach the next multiple of 8. */
export function paddingFor(length: number): number {
  return (8 - (length % 8)) % 8;
}

/** The encoding of one string: length, bytes, zero padding. */
export function encodeString(value: string | Uint8Array): Buffer {
  const bytes = typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
  const out = Buffer.alloc(8 + bytes.length + paddingFor(bytes.length));
  out.writeBigUInt64LE(BigInt(bytes.length), 0);
  out.set(bytes, 8);
  return out;
}

/** The encoding of several strings back to back (for fixed keyword runs). */
export function encodeStrings(...values: (string | Uint8Array)[]): Buffer {
  return Buffer.concat(values.map(encodeString));
}

/** Why a name cannot be a directory entry, or undefined if it can. Same rules as Nix. */
export function invalidNameReason(name: Uint8Array): string | undefined {
  if (name.length === 0) return 'it is empty';
  if (name.length === 1 && name[0] === 0x2e) return 'it is "."';
  if (name.length === 2 && name[0] === 0x2e && name[1] === 0x2e) return 'it is ".."';
  if (name.includes(0x2f)) return 'it contains "/"';
  if (name.includes(0)) return 'it contains a NUL byte';
  return undefined;
}

/** Renders untrusted bytes for an error message: UTF-8 (lossy), JSON-quoted, cut short. */
export function showBytes(bytes: Uint8Array, max = 64): string {
  const text = Buffer.from(bytes.buffer, bytes.byteOffset, Math.min(bytes.length, max)).toString('utf8');
  return JSON.stringify(text) + (bytes.length > max ? `… (${bytes.length} bytes)` : '');
}
