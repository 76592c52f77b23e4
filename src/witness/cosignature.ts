import { QuorumError } from '../errors.js';
import {
  checkKeyName,
  formatKeyText,
  formatSignerKeyText,
  hex8,
  noteKeyIdOf,
  openNote,
  parseSignerKeyText,
  parseVerifierKeyText,
  signatureLine,
  type NoteVerifierKey,
} from '../ledger/checkpoint.js';
import { generateSeed, publicKeyFromRaw, secretKeyFromSeed, signRaw, verifyRaw, type PublicKey, type SecretKey } from '../nix/keys.js';

/**
 * Witness cosignatures, c2sp.org/tlog-cosignature `cosignature/v1` (Ed25519, signature type 0x04):
 *
 *   — <witness name> base64(4-byte key id || 8-byte big-endian timestamp || 64-byte Ed25519 signature)
 *
 * signed over "cosignature/v1\n" "time <timestamp>\n" and the whole checkpoint text (origin, size,
 * root, any extension lines, with the final newline). Key id SHA-256(name || "\n" || 0x04 || key)[:4];
 * vkey `name+hex8(keyid)+base64(0x04 || key)`. The message does not name the witness, so one key
 * must never serve two witness names.
 */

export const COSIGNATURE_V1 = 0x04;
const KIND = 'cosignature/v1 (4)';
/** tlog-cosignature: the timestamp must not exceed 2^63 - 1; ours are seconds, well below 2^53. */
const MAX_TIMESTAMP = Number.MAX_SAFE_INTEGER;

export interface CosignerVerifier {
  readonly name: string;
  readonly keyId: number;
  readonly publicKey: PublicKey;
  /** The vkey text. */
  readonly text: string;
}

export interface CosignerSigner {
  readonly secretKey: SecretKey;
  readonly verifier: CosignerVerifier;
}

export interface Cosignature {
  witness: CosignerVerifier;
  /** POSIX seconds at which the witness signed. */
  timestamp: number;
  /** The note signature line, with its newline. */
  line: string;
}

export function generateCosignerKey(name: string): CosignerSigner {
  checkKeyName(name, 'name');
  return signerOf(secretKeyFromSeed(name, generateSeed()));
}

export function parseCosignerVerifier(text: string, field = 'witness'): CosignerVerifier {
  const { name, raw } = parseVerifierKeyText(text, COSIGNATURE_V1, KIND, field);
  return verifierOf(name, raw);
}

export function parseCosignerSigner(text: string, field = 'witness key'): CosignerSigner {
  return signerOf(parseSignerKeyText(text, COSIGNATURE_V1, KIND, field).secretKey);
}

export function formatCosignerSigner(signer: CosignerSigner): string {
  return formatSignerKeyText(signer.verifier.name, signer.verifier.keyId, COSIGNATURE_V1, signer.secretKey.seed);
}

/** The exact text (signed as UTF-8) a cosignature signs over `body`, a checkpoint's note text with its final newline. */
export function cosignedMessage(body: string, timestamp: number): string {
  return `cosignature/v1\ntime ${timestamp}\n${body}`;
}

/** The signature line of a cosignature whose Ed25519 signature over cosignedMessage is `signature`. */
export function cosignatureLine(witness: CosignerVerifier, timestamp: number, signature: Uint8Array): string {
  checkTimestamp(timestamp);
  const time = Buffer.alloc(8);
  time.writeBigUInt64BE(BigInt(timestamp));
  return signatureLine(witness.name, witness.keyId, Buffer.concat([time, signature]));
}

/** Cosigns a checkpoint text at `timestamp` (POSIX seconds, not zero). */
export function cosign(body: string, signer: CosignerSigner, timestamp: number): string {
  checkTimestamp(timestamp);
  return cosignatureLine(signer.verifier, timestamp, signRaw(signer.secretKey, cosignedMessage(body, timestamp)));
}

/**
 * The valid cosignatures of `witnesses` on a signed note, at most one per witness. A line whose name
 * and key id are a witness's must verify, else the note was altered (QuorumError 'tampered'); lines
 * of other keys (the log's signature, unknown witnesses) are ignored, as signed-note requires.
 */
export function verifyCosignatures(note: string, witnesses: readonly CosignerVerifier[]): Cosignature[] {
  const { body, signatures } = openNote(note);
  const found = new Map<CosignerVerifier, Cosignature>();
  for (const sig of signatures) {
    const witness = witnesses.find((w) => w.name === sig.name && w.keyId === sig.keyId);
    if (!witness) continue;
    const cosignature = openCosignature(body, witness, sig.signature, sig.line);
    if (!found.has(witness)) found.set(witness, cosignature);
  }
  return [...found.values()];
}

/** Checks one cosignature's bytes (8-byte timestamp, 64-byte signature) over `body`. */
export function openCosignature(body: string, witness: CosignerVerifier, bytes: Buffer, line: string): Cosignature {
  const what = `the cosignature by witness ${witness.name}+${hex8(witness.keyId)}`;
  if (bytes.length !== 8 + 64) throw new QuorumError('tampered', `${what} holds ${bytes.length} bytes after its key id, not an 8-byte timestamp and a 64-byte signature`);
  const time = bytes.readBigUInt64BE(0);
  if (time === 0n || time > BigInt(MAX_TIMESTAMP)) throw new QuorumError('tampered', `${what} has timestamp ${time}, which is zero or out of range`);
  const timestamp = Number(time);
  if (!verifyRaw(witness.publicKey, cosignedMessage(body, timestamp), bytes.subarray(8))) throw new QuorumError('tampered', `${what} does not verify: the checkpoint or the cosignature was altered`);
  return { witness, timestamp, line };
}

/** Whether a witness and a log (or two witnesses) share an Ed25519 key: their signatures could be confused. */
function sameKey(a: { publicKey: PublicKey }, b: { publicKey: PublicKey }): boolean {
  return a.publicKey.raw.equals(b.publicKey.raw);
}

/** Refuses to pair a witness key with the log key it witnesses: a cosignature must be a second party's. */
export function checkDistinctFromLog(witness: CosignerVerifier, log: NoteVerifierKey, field: string): void {
  if (sameKey(witness, log)) throw new QuorumError('bad-config', `${field}: witness ${witness.name} uses the same Ed25519 key as the log ${log.name}; a witness must have its own key`, { field });
}

/** The cosigned message does not name the witness: one key under two names would count twice. */
export function checkDistinctWitnesses(witnesses: readonly CosignerVerifier[], field = 'ledger.witnesses'): void {
  witnesses.forEach((w, i) => {
    const twin = witnesses.findIndex((o, j) => j < i && sameKey(o, w));
    if (twin >= 0) throw new QuorumError('bad-config', `${field}: witnesses ${witnesses[twin]!.name} and ${w.name} have the same key; each witness needs its own`, { field });
  });
}

function verifierOf(name: string, raw: Buffer): CosignerVerifier {
  const keyId = noteKeyIdOf(name, COSIGNATURE_V1, raw);
  return { name, keyId, publicKey: publicKeyFromRaw(name, raw), text: formatKeyText(name, keyId, COSIGNATURE_V1, raw) };
}

function signerOf(secretKey: SecretKey): CosignerSigner {
  return { secretKey, verifier: verifierOf(secretKey.name, secretKey.publicKey.raw) };
}

function checkTimestamp(timestamp: number): void {
  if (!Number.isSafeInteger(timestamp) || timestamp <= 0) throw new QuorumError('bad-value', `a cosignature timestamp must be a positive whole number of seconds, got ${timestamp}`);
}
