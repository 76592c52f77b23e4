// @ts-check
/**
 * Ledger verification that runs in the reader's browser (and in Node for the tests): C2SP checkpoint
 * notes, witness cosignatures and Ed25519 statement signatures with tweetnacl, RFC 9162 Merkle proofs with WebCrypto
 * SHA-256. Nothing here trusts the server: every input is a string or bytes it sent, every failure
 * throws a VerifyError that says what did not match. The same formats are implemented for the server
 * in src/ledger/{checkpoint,leaf,merkle,attestation}.ts and src/witness/cosignature.ts; keep them in step.
 *
 * Dependencies are passed in (`nacl`: tweetnacl; `subtle`: crypto.subtle) so the module has no
 * imports and runs unchanged from a <script type="module"> and from Node.
 *
 * Sizes and indices go up to 2^53 - 1: no bitwise operators on them (they truncate to 32 bits).
 */

export class VerifyError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = 'VerifyError';
  }
}

/** @param {string} message @returns {never} */
function fail(message) {
  throw new VerifyError(message);
}

const utf8 = new TextEncoder();
const STATEMENT_PREFIX = 'nix-quorum-attestation-v1';
const ED25519 = 1;
const COSIGNATURE_V1 = 4;

/** Canonical standard base64 to bytes, or a failure naming `what`. @param {string} text @param {string} what */
export function base64Decode(text, what) {
  if (typeof text !== 'string' || text.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(text)) fail(`${what} is not base64`);
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/** @param {Uint8Array} bytes */
export function base64Encode(bytes) {
  let binary = '';
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary);
}

/** The big-endian uint32 in the first 4 bytes (a C2SP key id). @param {Uint8Array} bytes */
function uint32(bytes) {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(0);
}

/** @param {Uint8Array} a @param {Uint8Array} b */
function equalBytes(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** @param {Uint8Array[]} parts */
function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** @param {SubtleCrypto} subtle @param {Uint8Array} data */
async function sha256(subtle, data) {
  return new Uint8Array(await subtle.digest('SHA-256', /** @type {BufferSource} */ (data)));
}

/** RFC 9162 leaf hash SHA-256(0x00 || leaf). @param {SubtleCrypto} subtle @param {Uint8Array} leaf */
export function leafHash(subtle, leaf) {
  return sha256(subtle, concat(new Uint8Array([0]), leaf));
}

/** @param {SubtleCrypto} subtle @param {Uint8Array} left @param {Uint8Array} right */
function nodeHash(subtle, left, right) {
  return sha256(subtle, concat(new Uint8Array([1]), left, right));
}

/**
 * A C2SP note verifier key `name+hex8(keyid)+base64(0x01 || 32-byte key)`; the key id must be
 * SHA-256(name || "\n" || 0x01 || key)[0:4], as signed-note defines it.
 * @param {SubtleCrypto} subtle @param {string} text
 * @returns {Promise<{name: string, keyId: number, publicKey: Uint8Array, text: string}>}
 */
export function parseVerifierKey(subtle, text) {
  return parseKey(subtle, text, ED25519, 'the log key', 'an Ed25519 key (type byte 0x01 and 32 bytes)');
}

/**
 * A witness's cosigner key (c2sp.org/tlog-cosignature, Ed25519 cosignature/v1):
 * `name+hex8(keyid)+base64(0x04 || 32-byte key)`, key id SHA-256(name || "\n" || 0x04 || key)[0:4].
 * @param {SubtleCrypto} subtle @param {string} text
 */
export function parseCosignerKey(subtle, text) {
  return parseKey(subtle, text, COSIGNATURE_V1, `the witness key ${JSON.stringify(text.slice(0, 60))}`, 'a cosignature/v1 key (type byte 0x04 and 32 bytes)');
}

/**
 * @param {SubtleCrypto} subtle @param {string} text @param {number} type @param {string} what @param {string} kind
 * @returns {Promise<{name: string, keyId: number, publicKey: Uint8Array, text: string}>}
 */
async function parseKey(subtle, text, type, what, kind) {
  const trimmed = text.trim();
  const parts = trimmed.split('+');
  if (parts.length < 3 || parts[0] === '' || !/^[0-9a-f]{8}$/.test(parts[1] ?? '')) fail(`${what} is not name+<8 hex digits>+<base64>`);
  const name = /** @type {string} */ (parts[0]);
  const keyId = Number.parseInt(/** @type {string} */ (parts[1]), 16);
  const material = base64Decode(parts.slice(2).join('+'), what);
  if (material.length !== 33 || material[0] !== type) fail(`${what} is not ${kind}`);
  const publicKey = material.subarray(1);
  const id = await sha256(subtle, concat(utf8.encode(`${name}\n`), material));
  if (uint32(id) !== keyId) fail(`${what}'s id ${parts[1]} does not match its name and public key`);
  return { name, keyId, publicKey, text: trimmed };
}

/** The note text and its signature lines. @param {string} note */
function noteParts(note) {
  const split = note.lastIndexOf('\n\n');
  if (split < 0 || !note.endsWith('\n')) fail('the checkpoint is not a signed note (text, blank line, signature lines)');
  const lines = note.slice(split + 2, -1).split('\n').map((line) => {
    const m = /^\u2014 (\S+) (\S+)$/.exec(line);
    if (!m) fail(`checkpoint signature line ${JSON.stringify(line.slice(0, 60))} is malformed`);
    return { name: /** @type {string} */ (m[1]), raw: base64Decode(/** @type {string} */ (m[2]), `the checkpoint signature of ${m[1]}`) };
  });
  return { body: note.slice(0, split + 1), lines };
}

/**
 * The witnesses among `keys` that cosigned the checkpoint note (cosignature/v1: 4-byte key id,
 * 8-byte big-endian timestamp, Ed25519 signature over "cosignature/v1\ntime <t>\n" and the note
 * text). A line of a listed witness that does not verify fails; lines of other keys are ignored.
 * @param {any} nacl @param {string} note @param {Array<{name: string, keyId: number, publicKey: Uint8Array}>} keys
 * @returns {Array<{name: string, timestamp: number}>}
 */
export function verifyCosignatures(nacl, note, keys) {
  const { body, lines } = noteParts(note);
  /** @type {Array<{name: string, timestamp: number}>} */
  const found = [];
  const seen = new Set();
  for (const { name, raw } of lines) {
    const key = keys.find((k) => k.name === name && raw.length >= 4 && uint32(raw) === k.keyId);
    if (!key || seen.has(key)) continue;
    seen.add(key);
    if (raw.length !== 4 + 8 + 64) fail(`the cosignature by witness ${name} is not a key id, a timestamp and a signature`);
    const time = new DataView(raw.buffer, raw.byteOffset + 4, 8).getBigUint64(0);
    if (time === 0n || time > BigInt(Number.MAX_SAFE_INTEGER)) fail(`the cosignature by witness ${name} has an impossible timestamp`);
    const timestamp = Number(time);
    if (!nacl.sign.detached.verify(utf8.encode(`cosignature/v1\ntime ${timestamp}\n${body}`), raw.subarray(12), key.publicKey)) fail(`the cosignature by witness ${name} does not verify: the checkpoint or the cosignature was altered`);
    found.push({ name, timestamp });
  }
  return found;
}

/**
 * Opens a signed checkpoint note with the log key: the signature line of that key must verify over
 * the note text, and the text must be origin, tree size, base64 root hash (then optional lines).
 * @param {any} nacl @param {string} note @param {{name: string, keyId: number, publicKey: Uint8Array}} key
 * @returns {{origin: string, size: number, root: Uint8Array}}
 */
export function openCheckpoint(nacl, note, key) {
  const { body, lines } = noteParts(note);
  let signed = false;
  for (const { name, raw } of lines) {
    if (name !== key.name || raw.length < 4 || uint32(raw) !== key.keyId) continue;
    if (!nacl.sign.detached.verify(utf8.encode(body), raw.subarray(4), key.publicKey)) fail(`the checkpoint's signature by ${key.name} does not verify: the note was altered or signed by another key`);
    signed = true;
  }
  if (!signed) fail(`the checkpoint carries no signature by the log key ${key.name}`);
  const [origin, sizeText, rootText] = body.slice(0, -1).split('\n');
  if (!origin || !sizeText || !rootText) fail('the checkpoint text needs an origin, a tree size and a root hash');
  if (!/^(0|[1-9][0-9]{0,15})$/.test(sizeText) || !Number.isSafeInteger(Number(sizeText))) fail(`the checkpoint tree size ${JSON.stringify(sizeText)} is not a whole number`);
  const root = base64Decode(rootText, 'the checkpoint root hash');
  if (root.length !== 32) fail('the checkpoint root hash is not 32 bytes');
  return { origin, size: Number(sizeText), root };
}

/**
 * A Nix public key `name:base64(32 bytes)`.
 * @param {string} text @returns {{name: string, key: Uint8Array}}
 */
export function parseNixPublicKey(text) {
  const colon = text.indexOf(':');
  if (colon <= 0) fail(`builder key ${JSON.stringify(text.slice(0, 60))} is not name:base64`);
  const key = base64Decode(text.slice(colon + 1), `the public key of ${text.slice(0, colon)}`);
  if (key.length !== 32) fail(`the public key of ${text.slice(0, colon)} is not 32 bytes`);
  return { name: text.slice(0, colon), key };
}

/**
 * @typedef {{drvPath: string, outputName: string, outPath: string, narHash: string, narSize: string, references: string[], builder: string}} ShownAttestation
 * Fields as the page shows them (narSize as its decimal text).
 */

/** The statement a builder signs (design.md). @param {ShownAttestation} a */
export function statementText(a) {
  return [STATEMENT_PREFIX, a.drvPath, a.outputName, a.outPath, a.narHash, a.narSize, a.references.join(',')].join(';');
}

const STATEMENT_FIELDS = /** @type {const} */ (['prefix', 'drvPath', 'outputName', 'outPath', 'narHash', 'narSize', 'references']);

/**
 * Checks one log entry against what the page shows: same statement, same builder, and the
 * builder's signature over the statement.
 * @param {any} nacl @param {Uint8Array} leaf @param {ShownAttestation} shown @param {Uint8Array} builderKey
 */
export function checkLeaf(nacl, leaf, shown, builderKey) {
  const lines = new TextDecoder('utf-8', { fatal: true }).decode(leaf).split('\n');
  if (lines.length !== 4) fail(`the log entry has ${lines.length} lines, not 4 (statement, builder, signature, narinfo signature)`);
  const [statement, builder, signature] = /** @type {[string, string, string, string]} */ (lines);
  const expected = statementText(shown);
  if (statement !== expected) {
    const got = statement.split(';');
    const want = expected.split(';');
    const field = STATEMENT_FIELDS.find((_, i) => got[i] !== want[i]) ?? 'statement';
    const at = STATEMENT_FIELDS.indexOf(/** @type {any} */ (field));
    fail(`the log entry's ${field} is ${JSON.stringify(got[at] ?? '')}, the page shows ${JSON.stringify(want[at] ?? '')}`);
  }
  if (builder !== shown.builder) fail(`the log entry is signed by ${JSON.stringify(builder)}, the page shows ${JSON.stringify(shown.builder)}`);
  const sig = base64Decode(signature, 'the log entry signature');
  if (sig.length !== 64) fail('the log entry signature is not 64 bytes');
  if (!nacl.sign.detached.verify(utf8.encode(statement), sig, builderKey)) fail(`the signature does not verify with ${shown.builder}'s public key`);
}

/**
 * RFC 9162 2.1.3.2: the proof must lead from the leaf hash at `index` to `root` of a tree of `size`.
 * @param {SubtleCrypto} subtle @param {Uint8Array} hash @param {number} index @param {number} size
 * @param {Uint8Array[]} proof @param {Uint8Array} root
 */
export async function verifyInclusion(subtle, hash, index, size, proof, root) {
  if (!Number.isSafeInteger(index) || !Number.isSafeInteger(size) || index < 0 || index >= size) fail(`leaf ${index} is not in a tree of ${size} entries`);
  let fn = index;
  let sn = size - 1;
  let r = hash;
  for (const p of proof) {
    if (p.length !== 32) fail('an inclusion proof hash is not 32 bytes');
    if (sn === 0) fail(`the inclusion proof for leaf ${index} has ${proof.length} hashes, more than a tree of ${size} needs`);
    if (fn % 2 === 1 || fn === sn) {
      r = await nodeHash(subtle, p, r);
      if (fn % 2 === 0) {
        while (!(fn % 2 === 1 || fn === 0)) {
          fn = Math.floor(fn / 2);
          sn = Math.floor(sn / 2);
        }
      }
    } else {
      r = await nodeHash(subtle, r, p);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  if (sn !== 0) fail(`the inclusion proof for leaf ${index} has ${proof.length} hashes, too few for a tree of ${size}`);
  if (!equalBytes(r, root)) fail(`the inclusion proof for leaf ${index} leads to root ${base64Encode(r)}, not the checkpoint's root ${base64Encode(root)}`);
}

/**
 * RFC 9162 2.1.4.2: the tree of `second` entries with `secondRoot` extends the tree of `first`
 * entries with `firstRoot`. Equal sizes need equal roots and an empty proof.
 * @param {SubtleCrypto} subtle @param {number} first @param {number} second @param {Uint8Array[]} proof
 * @param {Uint8Array} firstRoot @param {Uint8Array} secondRoot
 */
export async function verifyConsistency(subtle, first, second, proof, firstRoot, secondRoot) {
  if (!(Number.isSafeInteger(first) && Number.isSafeInteger(second) && first >= 0 && first <= second)) fail(`no consistency between trees of ${first} and ${second} entries`);
  if (first === 0 || first === second) {
    if (proof.length !== 0) fail(`consistency from ${first} to ${second} entries needs an empty proof`);
    if (first === second && !equalBytes(firstRoot, secondRoot)) fail(`two checkpoints of ${first} entries have different roots: the log forked`);
    return;
  }
  if (proof.length === 0) fail(`the consistency proof from ${first} to ${second} entries is empty`);
  if (proof.some((p) => p.length !== 32)) fail('a consistency proof hash is not 32 bytes');
  // If first is an exact power of two, the old root is the first node of the path.
  let isPow2 = 1;
  while (isPow2 < first) isPow2 *= 2;
  const path = isPow2 === first ? [firstRoot, ...proof] : proof;
  let fn = first - 1;
  let sn = second - 1;
  while (fn % 2 === 1) {
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  let fr = /** @type {Uint8Array} */ (path[0]);
  let sr = fr;
  for (const c of path.slice(1)) {
    if (sn === 0) fail(`the consistency proof from ${first} to ${second} entries is too long`);
    if (fn % 2 === 1 || fn === sn) {
      fr = await nodeHash(subtle, c, fr);
      sr = await nodeHash(subtle, c, sr);
      if (fn % 2 === 0) {
        while (!(fn % 2 === 1 || fn === 0)) {
          fn = Math.floor(fn / 2);
          sn = Math.floor(sn / 2);
        }
      }
    } else {
      sr = await nodeHash(subtle, sr, c);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  if (sn !== 0) fail(`the consistency proof from ${first} to ${second} entries is too short`);
  if (!equalBytes(fr, firstRoot)) fail(`the log of ${second} entries does not extend the checkpoint of ${first} entries this browser saw before: history was rewritten`);
  // With `first` a power of two, a foreign old root fails here rather than above.
  if (!equalBytes(sr, secondRoot)) fail(`the consistency proof does not connect the checkpoint of ${first} entries this browser saw before to the one of ${second} entries: history was rewritten, or the proof is wrong`);
}
