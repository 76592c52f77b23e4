import { QuorumError } from '../errors.js';
import { parseNarHash, type NarHash } from './hash.js';
import { parseNixSignature } from './keys.js';
import { nix32Decode } from './nix32.js';
import { parseStorePath, parseStorePathBaseName, type StorePath } from './storePath.js';

export const NARINFO_CONTENT_TYPE = 'text/x-nix-narinfo';

/** A binary cache `.narinfo`, as Nix 2.8 reads and writes it (src/libstore/nar-info.cc). */
export interface NarInfo {
  storePath: StorePath;
  /** Where the (compressed) NAR is, relative to the cache URL or absolute. */
  url: string;
  /** `xz`, `none`, `bzip2`, `zstd`, …; Nix reads a missing or empty value as `bzip2`. */
  compression: string;
  /** Hash of the file at `url` (the compressed NAR), canonical `sha256:<nix32>`. */
  fileHash?: string;
  fileSize?: number;
  narHash: NarHash;
  narSize: number;
  /** Base names `<hash>-<name>`, not full paths. */
  references: string[];
  /** Base name of the .drv. */
  deriver?: string;
  /** `keyname:base64` signatures over the fingerprint (see fingerprint.ts). */
  sigs: string[];
  /** Content address, e.g. `fixed:r:sha256:<nix32>` or `text:sha256:<nix32>`. */
  ca?: string;
}

type Key = 'StorePath' | 'URL' | 'Compression' | 'FileHash' | 'FileSize' | 'NarHash' | 'NarSize' | 'References' | 'Deriver' | 'Sig' | 'CA';
const KEYS: ReadonlySet<string> = new Set<Key>(['StorePath', 'URL', 'Compression', 'FileHash', 'FileSize', 'NarHash', 'NarSize', 'References', 'Deriver', 'Sig', 'CA']);

const COMPRESSION = /^[a-z0-9]+$/;
const CA_HASH_BYTES: Record<string, number> = { md5: 16, sha1: 20, sha256: 32, sha512: 64 };
const CA = /^(?:text:(sha256)|fixed:(?:r:)?(md5|sha1|sha256|sha512)):([0-9a-z]+)$/;

/**
 * Parses a narinfo. Follows Nix 2.8: unknown keys are ignored (Nix ignores them too, and newer
 * caches add fields), `Deriver: unknown-deriver` and an empty `CA:` mean "none", a missing or empty
 * `Compression` means bzip2, and StorePath, URL, NarHash and a non-zero NarSize are required.
 * Stricter than Nix where Nix is only lax by accident: every line must be `Key: value\n`, and a
 * key other than Sig may appear once. Hashes come back canonical (`sha256:<nix32>`).
 */
export function parseNarInfo(text: string): NarInfo {
  if (typeof text !== 'string') throw narInfoError('narinfo must be a string');
  if (text === '') throw narInfoError('narinfo is empty');
  const lines = text.split('\n');
  if (lines.pop() !== '') throw narInfoError(`narinfo line ${lines.length + 1} does not end in a newline; every line must`);

  const values = new Map<Key, string>();
  const sigs: string[] = [];
  lines.forEach((line, index) => {
    const lineNo = index + 1;
    const colon = line.indexOf(':');
    if (colon <= 0 || line[colon + 1] !== ' ') {
      throw narInfoError(`narinfo line ${lineNo} must look like "Key: value", got ${JSON.stringify(line.slice(0, 80))}`);
    }
    const key = line.slice(0, colon);
    const value = line.slice(colon + 2);
    if (!KEYS.has(key)) return;
    const field = key as Key;
    if (line.includes('\r')) throw narInfoError(`narinfo line ${lineNo} (${field}) holds a carriage return; lines end in "\\n" only`, field);
    if (field === 'Sig') {
      check(field, lineNo, () => parseNixSignature(value, field));
      if (!sigs.includes(value)) sigs.push(value); // Nix keeps signatures in a set
      return;
    }
    if (values.has(field)) throw narInfoError(`narinfo line ${lineNo}: ${field} appears twice`, field);
    values.set(field, value);
  });

  const required = (field: Key): string => {
    const value = values.get(field);
    if (value === undefined) throw narInfoError(`narinfo has no ${field} line`, field);
    return value;
  };
  const at = (field: Key) => 1 + lines.findIndex((line) => line.startsWith(`${field}: `));

  const info: NarInfo = {
    storePath: check('StorePath', at('StorePath'), () => parseStorePath(required('StorePath'), 'StorePath')),
    url: check('URL', at('URL'), () => nonEmpty(required('URL'))),
    compression: check('Compression', at('Compression'), () => parseCompression(values.get('Compression'))),
    narHash: check('NarHash', at('NarHash'), () => parseNarHash(required('NarHash'), 'NarHash')),
    narSize: check('NarSize', at('NarSize'), () => parseSize(required('NarSize'), true)),
    references: check('References', at('References'), () => parseReferences(values.get('References') ?? '')),
    sigs,
  };
  const fileHash = values.get('FileHash');
  if (fileHash !== undefined) info.fileHash = check('FileHash', at('FileHash'), () => parseNarHash(fileHash, 'FileHash'));
  const fileSize = values.get('FileSize');
  if (fileSize !== undefined) info.fileSize = check('FileSize', at('FileSize'), () => parseSize(fileSize, false));
  const deriver = values.get('Deriver');
  if (deriver !== undefined && deriver !== 'unknown-deriver') {
    info.deriver = check('Deriver', at('Deriver'), () => parseStorePathBaseName(deriver, 'Deriver'));
  }
  const ca = values.get('CA');
  if (ca !== undefined && ca !== '') info.ca = check('CA', at('CA'), () => parseContentAddress(ca));
  return info;
}

/**
 * Writes a narinfo the way Nix does: fixed field order, references and signatures sorted (Nix
 * holds both in ordered sets), FileHash canonical. Optional fields are written only when present.
 */
export function serializeNarInfo(info: NarInfo): string {
  let out = line('StorePath', info.storePath) + line('URL', nonEmptyField('URL', info.url)) + line('Compression', nonEmptyField('Compression', info.compression));
  if (info.fileHash !== undefined) out += line('FileHash', check('FileHash', 0, () => parseNarHash(info.fileHash!, 'FileHash')));
  if (info.fileSize !== undefined) out += line('FileSize', sizeField('FileSize', info.fileSize, false));
  out += line('NarHash', info.narHash) + line('NarSize', sizeField('NarSize', info.narSize, true));
  out += line('References', [...new Set(info.references)].sort().join(' '));
  if (info.deriver !== undefined) out += line('Deriver', info.deriver);
  for (const sig of [...new Set(info.sigs)].sort()) out += line('Sig', sig);
  if (info.ca !== undefined) out += line('CA', info.ca);
  return out;
}

function line(field: Key, value: string): string {
  // A newline in a value would smuggle in extra fields (say, a second Sig).
  if (/[\r\n]/.test(value)) throw narInfoError(`narinfo ${field} value must not contain a line break`, field);
  return `${field}: ${value}\n`;
}

function narInfoError(message: string, field?: Key): QuorumError {
  return new QuorumError('bad-narinfo', message, field === undefined ? {} : { field });
}

/** Runs a field parser, restating its error as a bad-narinfo that names the line and field. */
function check<T>(field: Key, lineNo: number, parse: () => T): T {
  try {
    return parse();
  } catch (error) {
    if (!(error instanceof QuorumError) || error.code === 'bad-narinfo') throw error;
    const where = lineNo > 0 ? `narinfo line ${lineNo} (${field})` : `narinfo ${field}`;
    throw new QuorumError('bad-narinfo', `${where}: ${error.message}`, { field, cause: error });
  }
}

function nonEmpty(value: string): string {
  if (value === '') throw new QuorumError('bad-value', 'must not be empty');
  return value;
}

function nonEmptyField(field: Key, value: string): string {
  return check(field, 0, () => nonEmpty(value));
}

function parseCompression(value: string | undefined): string {
  if (value === undefined || value === '') return 'bzip2';
  if (!COMPRESSION.test(value)) throw new QuorumError('bad-value', `compression method ${JSON.stringify(value.slice(0, 40))} must be a lower-case name such as xz, zstd or none`);
  return value;
}

function parseSize(value: string, positive: boolean): number {
  const n = Number(value);
  if (!/^(0|[1-9][0-9]*)$/.test(value) || !Number.isSafeInteger(n)) {
    throw new QuorumError('bad-value', `must be a byte count in plain decimal, got ${JSON.stringify(value.slice(0, 40))}`);
  }
  if (positive && n === 0) throw new QuorumError('bad-value', 'must not be 0');
  return n;
}

function sizeField(field: Key, n: number, positive: boolean): string {
  if (!Number.isSafeInteger(n) || n < (positive ? 1 : 0)) throw narInfoError(`narinfo ${field} must be a ${positive ? 'positive' : 'non-negative'} integer, got ${n}`, field);
  return String(n);
}

function parseReferences(value: string): string[] {
  if (value === '') return [];
  const refs = value.split(' ');
  const seen = new Set<string>();
  for (const ref of refs) {
    parseStorePathBaseName(ref, 'References');
    if (seen.has(ref)) throw new QuorumError('bad-value', `${ref} is listed twice`);
    seen.add(ref);
  }
  return refs;
}

function parseContentAddress(value: string): string {
  const match = CA.exec(value);
  const algo = match?.[1] ?? match?.[2];
  if (!match || !algo) {
    throw new QuorumError('bad-value', `must be text:sha256:<nix32> or fixed:[r:]<md5|sha1|sha256|sha512>:<nix32>, got ${JSON.stringify(value.slice(0, 80))}`);
  }
  nix32Decode(match[3]!, CA_HASH_BYTES[algo]!);
  return value;
}
