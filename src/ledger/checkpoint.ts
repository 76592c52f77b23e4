import { QuorumError } from '../errors.js';
import { generateSeed, publicKeyFromRaw, secretKeyFromSeed, signRaw, verifyRaw, type PublicKey, type SecretKey } from '../nix/keys.js';
import { sha256 } from '../nix/hash.js';
import { HASH_SIZE } from './merkle.js';

/**
 * Checkpoints of the ledger: C2SP tlog-checkpoint bodies in C2SP signed notes, Ed25519 only
 * (signature type 0x01), interchangeable with golang.org/x/mod/sumdb/note.
 *
 *   <origin>\n<tree size>\n<base64 root hash>\n[extension lines\n]
 *   \n
 *   — <key name> base64(4-byte key id || 64-byte Ed25519 signature over the body)\n
 */

/** A note verifier key, text form `name+hex8(keyid)+base64(0x01 || 32-byte public key)`. */
export interface NoteVerifierKey {
  readonly name: string;
  /** uint32: the first 4 bytes, big-endian, of SHA-256(name || "\n" || 0x01 || public key). */
  readonly keyId: number;
  readonly publicKey: PublicKey;
}

/** A note signer key, text form `PRIVATE+KEY+name+hex8(keyid)+base64(0x01 || 32-byte seed)`. */
export interface NoteSignerKey {
  readonly name: string;
  readonly keyId: number;
  readonly secretKey: SecretKey;
  readonly verifier: NoteVerifierKey;
}

export interface Checkpoint {
  origin: string;
  size: number;
  rootHash: Buffer;
}

const ED25519 = 0x01;
const SIGNER_PREFIX = 'PRIVATE+KEY+';
const SIGNATURE_PREFIX = '\u2014 ';
// Go's verifier rejects more than 100 signature lines; C2SP asks for at least 16.
const MAX_SIGNATURES = 100;

/** A new signer key; its public half is `.verifier`. Store it with formatNoteSignerKey. */
export function generateNoteKey(name: string): NoteSignerKey {
  checkKeyName(name, 'name');
  return signerFromSecret(secretKeyFromSeed(name, generateSeed()));
}

/** The C2SP recommended key id: SHA-256(name || 0x0A || 0x01 || public key)[:4], big-endian. */
export function noteKeyId(name: string, rawPublicKey: Uint8Array): number {
  return noteKeyIdOf(name, ED25519, rawPublicKey);
}

/** SHA-256(name || 0x0A || signature type || public key)[:4], big-endian (signed-note, tlog-cosignature). */
export function noteKeyIdOf(name: string, type: number, rawPublicKey: Uint8Array): number {
  return sha256(Buffer.concat([Buffer.from(`${name}\n`), Buffer.from([type]), rawPublicKey])).readUInt32BE(0);
}

/** `name+hex8(keyid)+base64(type || material)`: a vkey, or after PRIVATE+KEY+ a signer key. */
export function formatKeyText(name: string, keyId: number, type: number, material: Uint8Array): string {
  return `${name}+${hex8(keyId)}+${Buffer.concat([Buffer.from([type]), material]).toString('base64')}`;
}

export function formatNoteVerifierKey(key: NoteVerifierKey): string {
  return formatKeyText(key.name, key.keyId, ED25519, key.publicKey.raw);
}

export function formatNoteSignerKey(key: NoteSignerKey): string {
  return formatSignerKeyText(key.name, key.keyId, ED25519, key.secretKey.seed);
}

export function parseNoteVerifierKey(text: string, field = 'verifierKey'): NoteVerifierKey {
  const { name, raw } = parseVerifierKeyText(text, ED25519, 'Ed25519 (1)', field);
  return verifierFromRaw(name, raw);
}

export function parseNoteSignerKey(text: string, field = 'signerKey'): NoteSignerKey {
  const { name, secretKey } = parseSignerKeyText(text, ED25519, 'Ed25519 (1)', field);
  return signerFromSecret(secretKey);
}

/**
 * Parses an Ed25519 vkey of signature type `type` (`kind` names it in errors): the id must be
 * SHA-256(name || "\n" || type || key)[:4].
 */
export function parseVerifierKeyText(text: string, type: number, kind: string, field: string): { name: string; keyId: number; raw: Buffer } {
  const [name, keyId, keyData] = splitKey(text.trim(), 'verifier key', field);
  const raw = ed25519Material(keyData, type, kind, 'verifier key', field);
  const expected = noteKeyIdOf(name, type, raw);
  if (expected !== keyId) throw badKey(`verifier key id ${hex8(keyId)} does not match its name and public key (expected ${hex8(expected)})`, field);
  return { name, keyId, raw };
}

/** Parses `PRIVATE+KEY+name+hex8(keyid)+base64(type || 32-byte seed)`; the id is that of the seed's public key. */
export function parseSignerKeyText(text: string, type: number, kind: string, field: string): { name: string; keyId: number; secretKey: SecretKey } {
  const trimmed = text.trim();
  if (!trimmed.startsWith(SIGNER_PREFIX)) throw badKey(`signer key must start with ${SIGNER_PREFIX}`, field);
  const [name, keyId, keyData] = splitKey(trimmed.slice(SIGNER_PREFIX.length), 'signer key', field);
  const secretKey = secretKeyFromSeed(name, ed25519Material(keyData, type, kind, 'signer key', field));
  const expected = noteKeyIdOf(name, type, secretKey.publicKey.raw);
  if (expected !== keyId) throw badKey(`signer key id ${hex8(keyId)} does not match its name and key (expected ${hex8(expected)})`, field);
  return { name, keyId, secretKey };
}

/** `PRIVATE+KEY+` and the key text of a signer key (formatKeyText). */
export function formatSignerKeyText(name: string, keyId: number, type: number, seed: Uint8Array): string {
  return `${SIGNER_PREFIX}${formatKeyText(name, keyId, type, seed)}`;
}

/** Signs a note text (which must end in a newline) with one key. */
export function signNote(body: string, signer: NoteSignerKey): string {
  if (!body.endsWith('\n')) throw new QuorumError('bad-checkpoint', 'a note text must end in a newline', { field: 'body' });
  checkNoteText(body, 'body');
  const signature = signRaw(signer.secretKey, Buffer.from(body, 'utf8'));
  return `${body}\n${signatureLine(signer.name, signer.keyId, signature)}`;
}

/** One note signature line, `— <name> base64(4-byte key id || signature)\n`. */
export function signatureLine(name: string, keyId: number, signature: Uint8Array): string {
  return `${SIGNATURE_PREFIX}${name} ${Buffer.concat([uint32(keyId), signature]).toString('base64')}\n`;
}

/** A signature line of a note: the key name, the key id and the signature bytes after it. */
export interface NoteSignature {
  name: string;
  keyId: number;
  signature: Buffer;
  /** The line as it was, with its newline. */
  line: string;
}

/**
 * Splits a signed note into its text and its signature lines (C2SP signed-note), checking the
 * shape only: which lines to verify, and how, is the caller's (verifyNote, cosignatures).
 */
export function openNote(text: string): { body: string; signatures: NoteSignature[] } {
  // 1. The note must be well-formed UTF-8 text without control characters other than newline.
  checkNoteText(text, 'note');
  // 2. The text ends at the LAST blank line; the note text may itself contain blank lines.
  const split = text.lastIndexOf('\n\n');
  if (split < 0) bad('the signed note has no blank line between its text and its signature lines');
  // 3. The text keeps its final newline (split + 1), which the signature covers.
  const body = text.slice(0, split + 1);
  const block = text.slice(split + 2);
  // 4. One or more signature lines follow, the last one ending in a newline.
  if (block === '' || !block.endsWith('\n')) bad('the signed note must end with one or more signature lines, each ending in a newline');
  const lines = block.slice(0, -1).split('\n');
  if (lines.length > MAX_SIGNATURES) bad(`the signed note has ${lines.length} signature lines, more than ${MAX_SIGNATURES}`);
  const signatures = lines.map((line) => {
    // 5. Each line is "— <name> <base64(key id || signature)>", with an em dash (U+2014).
    if (!line.startsWith(SIGNATURE_PREFIX)) bad(`signature line ${JSON.stringify(line.slice(0, 40))} must start with an em dash (U+2014) and a space`);
    const rest = line.slice(SIGNATURE_PREFIX.length);
    const space = rest.indexOf(' ');
    const name = space < 0 ? rest : rest.slice(0, space);
    if (!isKeyName(name)) bad(`signature line ${JSON.stringify(line.slice(0, 40))} has no valid key name (non-empty, no spaces, no '+')`);
    const raw = space < 0 ? undefined : strictBase64(rest.slice(space + 1));
    if (!raw || raw.length < 5) bad(`signature line for ${name} must end in base64 of a 4-byte key id and a signature`);
    return { name, keyId: raw.readUInt32BE(0), signature: raw.subarray(4), line: `${line}\n` };
  });
  return { body, signatures };
}

/**
 * Opens a signed note, verifying it against one trusted key (C2SP signed-note). Signature lines
 * from other keys (another name or key id, e.g. witness cosignatures) are ignored; every line from
 * the trusted key must verify, and at least one must be present.
 */
export function verifyNote(text: string, verifier: NoteVerifierKey): { body: string } {
  // 1-5. A well-formed note (see openNote).
  const { body, signatures } = openNote(text);
  const bodyBytes = Buffer.from(body, 'utf8');
  let verified = 0;
  for (const { name, keyId, signature } of signatures) {
    // 6. Only lines whose name AND key id both match the trusted key are its signatures.
    if (name !== verifier.name || keyId !== verifier.keyId) continue;
    // 7. Each of them must verify (Ed25519 over the exact note text bytes).
    if (!verifyRaw(verifier.publicKey, bodyBytes, signature)) bad(`the signature by ${name}+${hex8(verifier.keyId)} does not verify: the note was altered or signed by another key`);
    verified += 1;
  }
  // 8. At least one signature from the trusted key.
  if (verified === 0) bad(`the note has no signature by the trusted key ${verifier.name}+${hex8(verifier.keyId)}`);
  return { body };
}

/** The checkpoint note text: origin, tree size, base64 root hash, each on its own line. */
export function formatCheckpoint({ origin, size, rootHash }: Checkpoint): string {
  if (origin === '' || /[\n\p{Cc}\p{Cs}]/u.test(origin)) throw new QuorumError('bad-checkpoint', 'checkpoint origin must be a non-empty single line without control characters', { field: 'origin' });
  if (!Number.isSafeInteger(size) || size < 0) throw new QuorumError('bad-checkpoint', `checkpoint tree size must be a whole number from 0 to 2^53-1, got ${size}`, { field: 'size' });
  if (rootHash.length !== HASH_SIZE) throw new QuorumError('bad-checkpoint', `checkpoint root hash must be ${HASH_SIZE} bytes, got ${rootHash.length}`, { field: 'rootHash' });
  return `${origin}\n${size}\n${rootHash.toString('base64')}\n`;
}

/**
 * Verifies a signed checkpoint against the log's key and parses it (C2SP tlog-checkpoint).
 * With `expectedOrigin`, a checkpoint of another log is rejected. Extension lines are allowed and ignored.
 */
export function parseCheckpoint(text: string, verifier: NoteVerifierKey, expectedOrigin?: string): Checkpoint {
  // 1-8. The signed note verifies against the trusted key (see verifyNote).
  const { body } = verifyNote(text, verifier);
  const checkpoint = parseCheckpointBody(body);
  // 10. The origin names the log we expect.
  if (expectedOrigin !== undefined && checkpoint.origin !== expectedOrigin) bad(`checkpoint is for log ${JSON.stringify(checkpoint.origin)}, expected ${JSON.stringify(expectedOrigin)}`);
  return checkpoint;
}

/** Parses a checkpoint's note text (verify its signature first, or after, as the caller needs). */
export function parseCheckpointBody(body: string): Checkpoint {
  // 9. At least three lines (origin, size, root hash), then optional extension lines; none empty.
  const lines = body.slice(0, -1).split('\n');
  if (lines.length < 3) bad(`a checkpoint has at least 3 lines (origin, tree size, root hash), got ${lines.length}`);
  if (lines.some((line) => line === '')) bad('checkpoint lines must not be empty');
  const [origin, sizeText, rootText] = lines as [string, string, string];
  // 11. Tree size: ASCII decimal without leading zeros, within 2^53-1.
  if (!/^(0|[1-9][0-9]*)$/.test(sizeText) || !Number.isSafeInteger(Number(sizeText))) bad(`checkpoint tree size ${JSON.stringify(sizeText)} must be a decimal number without leading zeros, at most 2^53-1`);
  // 12. Root hash: standard base64 of 32 bytes.
  const rootHash = strictBase64(rootText);
  if (!rootHash || rootHash.length !== HASH_SIZE) bad(`checkpoint root hash ${JSON.stringify(rootText)} must be base64 of ${HASH_SIZE} bytes`);
  return { origin, size: Number(sizeText), rootHash };
}

function signerFromSecret(secretKey: SecretKey): NoteSignerKey {
  const verifier = verifierFromRaw(secretKey.name, secretKey.publicKey.raw);
  return { name: secretKey.name, keyId: verifier.keyId, secretKey, verifier };
}

function verifierFromRaw(name: string, raw: Buffer): NoteVerifierKey {
  return { name, keyId: noteKeyId(name, raw), publicKey: publicKeyFromRaw(name, raw) };
}

/** Splits `name+hex8+base64` into its parts. */
function splitKey(text: string, what: string, field: string): [string, number, string] {
  const parts = text.split('+');
  // The key data is base64 and may itself contain '+': only the first two separators count.
  if (parts.length < 3) throw badKey(`${what} must look like name+<8 hex digits>+<base64>`, field);
  const [name, idText] = parts as [string, string];
  const keyData = parts.slice(2).join('+');
  checkKeyName(name, field);
  if (!/^[0-9a-f]{8}$/.test(idText)) throw badKey(`${what} id ${JSON.stringify(idText)} must be 8 lowercase hex digits`, field);
  return [name, Number.parseInt(idText, 16), keyData];
}

/** The 32 key bytes after the type byte (0x01 for note keys, 0x04 for cosigner keys). */
function ed25519Material(keyData: string, type: number, kind: string, what: string, field: string): Buffer {
  const raw = strictBase64(keyData);
  if (!raw || raw.length === 0) throw badKey(`${what} must end in standard base64 key data`, field);
  if (raw[0] !== type) throw badKey(`${what} has signature type ${raw[0]}; only ${kind} is supported here`, field);
  if (raw.length !== 33) throw badKey(`${what} must hold the type byte and 32 key bytes, got ${raw.length} bytes`, field);
  return raw.subarray(1);
}

// Key names: non-empty, no Unicode spaces, no '+', and (as they go into note lines) no control characters.
export function isKeyName(name: string): boolean {
  return name !== '' && !/[\s\u0085+\p{Cc}\p{Cs}]/u.test(name);
}

export function checkKeyName(name: string, field: string): void {
  if (!isKeyName(name)) throw badKey(`key name ${JSON.stringify(name)} must be non-empty without spaces, '+' or control characters`, field);
}

function checkNoteText(text: string, field: string): void {
  // \p{Cs} in a u-regex matches only unpaired surrogates, which have no UTF-8 encoding.
  if (/[\u0000-\u0009\u000b-\u001f\p{Cs}]/u.test(text)) throw new QuorumError('bad-checkpoint', `the ${field} holds a control character other than newline, or invalid Unicode`, { field });
}

/** Standard padded base64 in its one canonical spelling, or undefined. */
export function strictBase64(text: string): Buffer | undefined {
  if (text.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(text)) return undefined;
  const bytes = Buffer.from(text, 'base64');
  return bytes.toString('base64') === text ? bytes : undefined;
}

export function hex8(id: number): string {
  return id.toString(16).padStart(8, '0');
}

function uint32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n, 0);
  return b;
}

function badKey(message: string, field: string): QuorumError {
  return new QuorumError('bad-key', message, { field });
}

function bad(message: string): never {
  throw new QuorumError('bad-checkpoint', message);
}
