/** NAR (Nix ARchive): write a filesystem path as a NAR, hash it, and validate untrusted NARs. */
export { dumpNar, type DumpOptions } from './dump.js';
export { hashPath, type NarDigest } from './hashPath.js';
export { MAX_LISTED_ENTRIES, NarParser, NarVerifier, verifyNar, type NarParserOptions } from './verify.js';
export { nixListingJson, type NarEntry } from './listing.js';
export {
  encodeString,
  encodeStrings,
  MAX_DEPTH,
  MAX_NAME_BYTES,
  MAX_TAG_BYTES,
  MAX_TARGET_BYTES,
  NAR_MAGIC,
} from './format.js';
