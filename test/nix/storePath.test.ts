import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { QuorumError } from '../../src/errors.js';
import {
  baseNameOf,
  hashPartOf,
  nameOf,
  parseDrvPath,
  parseHashPart,
  parseStorePath,
  parseStorePathBaseName,
  storePathFromBaseName,
} from '../../src/nix/storePath.js';
import { describeNix, nixEnv } from '../helpers/nix.js';

const HASH = '872kxwmj0mdiqxyjagljp2q4pc01fzh0';
const at = (name: string) => `/nix/store/${HASH}-${name}`;

const VALID = [
  at('hello-2.12'),
  at('a+b-c.d_e?f=G9'),
  at('a'.repeat(211)),
  at('hello.drv'),
  at('a..b'),
  at('trailing.'),
  `/nix/store/0123456789abcdfghijklmnpqrsvwxyz-x`,
];

/**
 * `nix` says what Nix 2.8 does with the same path. Where we are stricter the reason is given;
 * we are never laxer.
 */
const INVALID: { label: string; path: string; fragment: string; nix: 'rejects' | 'accepts' }[] = [
  ...['e', 'o', 't', 'u'].map((c) => ({ label: `hash holds ${c}`, path: `/nix/store/${HASH.slice(0, 31)}${c}-x`, fragment: 'without e o t u', nix: 'rejects' as const })),
  { label: 'upper-case hash', path: `/nix/store/${HASH.slice(0, 31)}A-x`, fragment: 'without e o t u', nix: 'rejects' },
  { label: 'hash of 31 chars', path: `/nix/store/${HASH.slice(1)}-x`, fragment: 'must look like <32-char hash>-<name>', nix: 'rejects' },
  // Nix 2.8 never checks the dash: it reads this as hash HASH and name "x" (newer Nix rejects it).
  { label: 'no dash after the hash', path: `/nix/store/${HASH}zx`, fragment: 'must look like <32-char hash>-<name>', nix: 'accepts' },
  { label: 'empty name', path: `/nix/store/${HASH}-`, fragment: 'must look like <32-char hash>-<name>', nix: 'rejects' },
  { label: 'no name at all', path: `/nix/store/${HASH}`, fragment: 'must look like <32-char hash>-<name>', nix: 'rejects' },
  { label: 'name of 212 chars', path: at('a'.repeat(212)), fragment: 'longer than 211 characters', nix: 'rejects' },
  { label: 'space in name', path: at('a b'), fragment: 'may only hold A-Z a-z 0-9', nix: 'rejects' },
  { label: '! in name', path: at('a!'), fragment: 'may only hold A-Z a-z 0-9', nix: 'rejects' },
  { label: '@ in name', path: at('a@b'), fragment: 'may only hold A-Z a-z 0-9', nix: 'rejects' },
  { label: 'non-ASCII name', path: at('caf\u00e9'), fragment: 'may only hold A-Z a-z 0-9', nix: 'rejects' },
  { label: 'newline in name', path: at('a\nb'), fragment: 'may only hold A-Z a-z 0-9', nix: 'rejects' },
  // The contract forbids names starting with "."; Nix 2.8 allows them.
  { label: 'leading dot', path: at('.hidden'), fragment: 'must not start with "."', nix: 'accepts' },
  // Nix's CLI resolves a path inside a store object to that object; as a store path it is invalid.
  { label: 'sub-path', path: `${at('x')}/bin/sh`, fragment: 'may only hold A-Z a-z 0-9', nix: 'accepts' },
  { label: 'other directory', path: `/tmp/${HASH}-x`, fragment: 'must start with /nix/store/', nix: 'rejects' },
  { label: 'relative', path: `nix/store/${HASH}-x`, fragment: 'must start with /nix/store/', nix: 'rejects' },
  { label: 'no slash after the store', path: `/nix/store${HASH}-x`, fragment: 'must start with /nix/store/', nix: 'rejects' },
  { label: 'empty', path: '', fragment: 'must start with /nix/store/', nix: 'rejects' },
];

describe('store paths', () => {
  it.each(VALID)('accepts %s', (path) => {
    expect(parseStorePath(path)).toBe(path);
    expect(storePathFromBaseName(baseNameOf(parseStorePath(path)))).toBe(path);
  });

  it.each(INVALID)('rejects $label', ({ path, fragment }) => {
    const error = catchError(() => parseStorePath(path, 'outPath'));
    expect(error).toBeInstanceOf(QuorumError);
    expect(error).toMatchObject({ code: 'bad-store-path', field: 'outPath' });
    expect((error as Error).message).toContain(fragment);
  });

  it('splits a store path into hash part, name and base name', () => {
    const path = parseStorePath(at('hello-2.12'));
    expect(hashPartOf(path)).toBe(HASH);
    expect(nameOf(path)).toBe('hello-2.12');
    expect(baseNameOf(path)).toBe(`${HASH}-hello-2.12`);
    expect(parseHashPart(HASH)).toBe(HASH);
    expect(() => parseHashPart(`${HASH}a`)).toThrow(/32 nix32 characters/);
    expect(parseStorePathBaseName(`${HASH}-hello`)).toBe(`${HASH}-hello`);
    expect(() => parseStorePathBaseName(at('hello'))).toThrow(QuorumError);
  });

  it('tells derivations from outputs', () => {
    expect(parseDrvPath(at('hello-2.12.drv'))).toBe(at('hello-2.12.drv'));
    expect(() => parseDrvPath(at('hello-2.12'))).toThrow(/must name a derivation \(end in \.drv\)/);
    expect(() => parseDrvPath(at('hello.drv.x'))).toThrow(/end in \.drv/);
    expect(() => parseDrvPath(`/tmp/${HASH}-x.drv`)).toThrow(/must start with \/nix\/store\//);
  });
});

describeNix('store path validation agrees with Nix', () => {
  /** Nix's verdict on the syntax: a well-formed path that is merely absent is "not valid". */
  function nixVerdict(path: string): 'accepts' | 'rejects' {
    const result = spawnSync('nix-store', ['--store', 'dummy://', '--check-validity', path], { env: nixEnv, encoding: 'utf8' });
    expect(result.status).not.toBe(0);
    return /is not valid/.test(result.stderr) ? 'accepts' : 'rejects';
  }

  it.each(VALID)('Nix accepts %s', (path) => {
    expect(nixVerdict(path)).toBe('accepts');
  });

  it.each(INVALID)('Nix $nix $label', ({ path, nix }) => {
    expect(nixVerdict(path)).toBe(nix);
  });
});

function catchError(fn: () => unknown): unknown {
  try {
    fn();
  } catch (error) {
    return error;
  }
  throw new Error('expected an error');
}
