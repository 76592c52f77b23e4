import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import { QuorumError, type ErrorCode } from '../errors.js';
import { publicKeyProblem } from './ed25519Point.js';

/** Nix-format Ed25519 keys: `name:base64(...)`, interchangeable with `nix-store --generate-binary-cache-key`. */
export interface PublicKey {
  readonly name: string;
  /** 32 raw bytes. */
  readonly raw: Buffer;
  readonly key: KeyObject;
}

export interface SecretKey {
  readonly name: string;
  /** 32-byte seed. */
  readonly seed: Buffer;
  readonly key: KeyObject;
  readonly publicKey: PublicKey;
}

// DER prefixes that wrap a raw Ed25519 seed / public key so Node's native crypto can use them.
const PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
const SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

const KEY_NAME = /^[A-Za-z0-9._+\-]+$/;

function splitNamed(text: unknown, what: string, field: string, code: ErrorCode): [string, Buffer] {
  if (typeof text !== 'string') throw new QuorumError(code, `${field}: ${what} must be a string`, { field });
  const colon = text.indexOf(':');
  if (colon <= 0) throw new QuorumError(code, `${field}: ${what} must look like name:base64, got no name`, { field });
  const name = text.slice(0, colon);
  if (!KEY_NAME.test(name)) throw new QuorumError(code, `${field}: ${what} name ${JSON.stringify(name.slice(0, 80))} may only hold letters, digits and . _ + -`, { field });
  const body = text.slice(colon + 1);
  const raw = Buffer.from(body, 'base64');
  // Node's decoder skips junk; re-encoding catches it, so one key or signature has exactly one spelling.
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(body) || raw.toString('base64') !== body) {
    throw new QuorumError(code, `${field}: ${what} is not canonical base64 after the name`, { field });
  }
  return [name, raw];
}

export function publicKeyFromRaw(name: string, raw: Buffer): PublicKey {
  return { name, raw, key: createPublicKey({ key: Buffer.concat([SPKI_PREFIX, raw]), format: 'der', type: 'spki' }) };
}

/**
 * Parses `name:base64(32 bytes)`; surrounding whitespace (a key file's newline) is ignored. Keys of
 * small order and non-canonical encodings are refused (ed25519Point.ts says why).
 */
export function parsePublicKey(text: string, field = 'publicKey'): PublicKey {
  const [name, raw] = splitNamed(trimIfString(text), 'public key', field, 'bad-key');
  if (raw.length !== 32) throw new QuorumError('bad-key', `${field}: public key must hold 32 bytes, got ${raw.length}`, { field });
  const problem = publicKeyProblem(raw);
  if (problem) throw new QuorumError('bad-key', `${field}: ${name}'s key is refused: ${problem}`, { field });
  return publicKeyFromRaw(name, raw);
}

/** Parses `name:base64(32-byte seed || 32-byte public key)`, the format of `nix-store --generate-binary-cache-key`. */
export function parseSecretKey(text: string, field = 'secretKey'): SecretKey {
  const [name, raw] = splitNamed(trimIfString(text), 'secret key', field, 'bad-key');
  if (raw.length !== 64) throw new QuorumError('bad-key', `${field}: secret key must hold 64 bytes (seed and public key), got ${raw.length}`, { field });
  const key = secretKeyFromSeed(name, Buffer.from(raw.subarray(0, 32)));
  if (!key.publicKey.raw.equals(raw.subarray(32))) {
    throw new QuorumError('bad-key', `${field}: secret key's public half does not match its seed`, { field });
  }
  return key;
}

/** The key pair of a 32-byte Ed25519 seed (C2SP note signer keys store only the seed). */
export function secretKeyFromSeed(name: string, seed: Buffer): SecretKey {
  const key = createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, seed]), format: 'der', type: 'pkcs8' });
  return { name, seed, key, publicKey: publicKeyFromRaw(name, rawPublicKey(createPublicKey(key))) };
}

/** A fresh random 32-byte Ed25519 seed. */
export function generateSeed(): Buffer {
  return Buffer.from(generateKeyPairSync('ed25519').privateKey.export({ format: 'der', type: 'pkcs8' }).subarray(PKCS8_PREFIX.length));
}

function trimIfString(text: unknown): unknown {
  return typeof text === 'string' ? text.trim() : text;
}

function rawPublicKey(key: KeyObject): Buffer {
  return key.export({ format: 'der', type: 'spki' }).subarray(SPKI_PREFIX.length);
}

export function generateSecretKey(name: string): SecretKey {
  if (!KEY_NAME.test(name)) throw new QuorumError('bad-key', `key name ${JSON.stringify(name)} may only hold letters, digits and . _ + -`, { field: 'name' });
  return secretKeyFromSeed(name, generateSeed());
}

export function formatSecretKey(key: SecretKey): string {
  return `${key.name}:${Buffer.concat([key.seed, key.publicKey.raw]).toString('base64')}`;
}

export function formatPublicKey(key: PublicKey): string {
  return `${key.name}:${key.raw.toString('base64')}`;
}

/** Raw 64-byte Ed25519 signature over `message`. */
export function signRaw(key: SecretKey, message: Uint8Array | string): Buffer {
  return sign(null, typeof message === 'string' ? Buffer.from(message) : message, key.key);
}

export function verifyRaw(key: PublicKey, message: Uint8Array | string, signature: Uint8Array): boolean {
  if (signature.length !== 64) return false;
  return verify(null, typeof message === 'string' ? Buffer.from(message) : message, key.key, signature);
}

/** Nix signature string `name:base64(sig)`, as in a narinfo `Sig:` line. */
export function signNix(key: SecretKey, message: string): string {
  return `${key.name}:${signRaw(key, message).toString('base64')}`;
}

export interface NixSignature {
  readonly keyName: string;
  /** 64 raw bytes. */
  readonly signature: Buffer;
}

/** Parses a Nix signature string `name:base64(64 bytes)`, e.g. a narinfo `Sig:` value. */
export function parseNixSignature(text: string, field = 'signature'): NixSignature {
  const [keyName, signature] = splitNamed(text, 'signature', field, 'bad-signature');
  if (signature.length !== 64) throw new QuorumError('bad-signature', `${field}: signature must hold 64 bytes, got ${signature.length}`, { field });
  return { keyName, signature };
}

/** Checks a Nix `name:base64(sig)` signature; false on a different key name or bad signature. */
export function verifyNix(key: PublicKey, message: string, signature: string): boolean {
  const colon = signature.indexOf(':');
  if (colon <= 0 || signature.slice(0, colon) !== key.name) return false;
  return verifyRaw(key, message, Buffer.from(signature.slice(colon + 1), 'base64'));
}
