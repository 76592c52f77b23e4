import { QuorumError } from '../errors.js';

declare const storePathBrand: unique symbol;
/** A validated `/nix/store/<32 nix32 chars>-<name>`. */
export type StorePath = string & { readonly [storePathBrand]: true };

declare const hashPartBrand: unique symbol;
/** The 32-character nix32 hash part of a store path. */
export type HashPart = string & { readonly [hashPartBrand]: true };

export const STORE_DIR = '/nix/store';
const HASH_PART = /^[0123456789abcdfghijklmnpqrsvwxyz]{32}$/;
const NAME = /^[A-Za-z0-9+\-._?=]+$/;
const MAX_NAME = 211;

export function parseHashPart(text: string, field = 'hashPart'): HashPart {
  if (typeof text !== 'string' || !HASH_PART.test(text)) {
    throw new QuorumError('bad-store-path', `${field} must be 32 nix32 characters (0-9, a-z without e o t u)`, { field });
  }
  return text as HashPart;
}

/** Validates the base name `<hash>-<name>` of a store path. */
export function parseStorePathBaseName(text: string, field = 'storePath'): string {
  if (typeof text !== 'string') throw new QuorumError('bad-store-path', `${field} must be a string`, { field });
  if (text.length < 34 || text[32] !== '-') {
    throw new QuorumError('bad-store-path', `${field} must look like <32-char hash>-<name>, got ${JSON.stringify(text.slice(0, 120))}`, { field });
  }
  parseHashPart(text.slice(0, 32), field);
  const name = text.slice(33);
  if (name.length > MAX_NAME) throw new QuorumError('bad-store-path', `${field}: name is longer than ${MAX_NAME} characters`, { field });
  if (!NAME.test(name)) throw new QuorumError('bad-store-path', `${field}: name ${JSON.stringify(name)} may only hold A-Z a-z 0-9 + - . _ ? =`, { field });
  if (name.startsWith('.')) throw new QuorumError('bad-store-path', `${field}: name must not start with "."`, { field });
  return text;
}

export function parseStorePath(text: string, field = 'storePath'): StorePath {
  if (typeof text !== 'string') throw new QuorumError('bad-store-path', `${field} must be a string, got ${text === null ? 'null' : typeof text}`, { field });
  if (!text.startsWith(`${STORE_DIR}/`)) {
    throw new QuorumError('bad-store-path', `${field} must start with ${STORE_DIR}/, got ${JSON.stringify(text.slice(0, 120))}`, { field });
  }
  parseStorePathBaseName(text.slice(STORE_DIR.length + 1), field);
  return text as StorePath;
}

export function parseDrvPath(text: string, field = 'drvPath'): StorePath {
  const path = parseStorePath(text, field);
  if (!path.endsWith('.drv')) throw new QuorumError('bad-store-path', `${field} must name a derivation (end in .drv)`, { field });
  return path;
}

export function hashPartOf(path: StorePath): HashPart {
  return path.slice(STORE_DIR.length + 1, STORE_DIR.length + 33) as HashPart;
}

export function baseNameOf(path: StorePath): string {
  return path.slice(STORE_DIR.length + 1);
}

export function nameOf(path: StorePath): string {
  return path.slice(STORE_DIR.length + 34);
}

export function storePathFromBaseName(baseName: string, field = 'reference'): StorePath {
  return parseStorePath(`${STORE_DIR}/${baseName}`, field);
}
