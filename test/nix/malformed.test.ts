import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { QuorumError } from '../../src/errors.js';
import { fingerprint } from '../../src/nix/fingerprint.js';
import { parseNarHash, sha256 } from '../../src/nix/hash.js';
import { generateSecretKey, parseNixSignature, parsePublicKey, parseSecretKey } from '../../src/nix/keys.js';
import { parseNarInfo } from '../../src/nix/narinfo.js';
import { nix32Decode, nix32Encode } from '../../src/nix/nix32.js';
import { parseStorePath } from '../../src/nix/storePath.js';

// Untrusted input arrives as JSON or text; these casts stand in for whatever a client sends.
const anyInput = (value: unknown) => value as string;

const HASH = '872kxwmj0mdiqxyjagljp2q4pc01fzh0';
const PATH = `/nix/store/${HASH}-top`;
const NAR_HASH = `sha256:${nix32Encode(sha256('nar'))}`;
const b64 = (bytes: number, fill = 7) => Buffer.alloc(bytes, fill).toString('base64');
const KEY = generateSecretKey('k');
const SECRET = `k:${Buffer.concat([KEY.seed, KEY.publicKey.raw]).toString('base64')}`;

const NARINFO = [
  `StorePath: ${PATH}`,
  'URL: nar/x.nar.xz',
  'Compression: xz',
  `FileHash: ${NAR_HASH}`,
  'FileSize: 10',
  `NarHash: ${NAR_HASH}`,
  'NarSize: 20',
  `References: ${HASH}-top`,
  `Deriver: ${HASH}-top.drv`,
  `Sig: k:${b64(64)}`,
  '',
].join('\n');
/** NARINFO with the line starting `key:` replaced by `line` (or dropped when `line` is null). */
function narinfoWith(key: string, line: string | null): string {
  return NARINFO.split('\n')
    .flatMap((l) => (l.startsWith(`${key}:`) ? (line === null ? [] : [line]) : [l]))
    .join('\n');
}

interface Case {
  label: string;
  run: () => unknown;
  code: string;
  message: string;
  field?: string;
}

const CASES: Case[] = [
  // Store paths
  { label: 'store path: null', run: () => parseStorePath(anyInput(null)), code: 'bad-store-path', message: 'storePath must be a string, got null', field: 'storePath' },
  { label: 'store path: number', run: () => parseStorePath(anyInput(42), 'outPath'), code: 'bad-store-path', message: 'outPath must be a string, got number', field: 'outPath' },
  { label: 'store path: hash with t', run: () => parseStorePath(`/nix/store/${HASH.slice(0, 31)}t-x`), code: 'bad-store-path', message: 'must be 32 nix32 characters (0-9, a-z without e o t u)' },
  { label: 'store path: name with slash', run: () => parseStorePath(`${PATH}/bin`), code: 'bad-store-path', message: 'name "top/bin" may only hold' },
  { label: 'store path: leading dot', run: () => parseStorePath(`/nix/store/${HASH}-.x`), code: 'bad-store-path', message: 'name must not start with "."' },
  { label: 'store path: too long', run: () => parseStorePath(`/nix/store/${HASH}-${'x'.repeat(212)}`), code: 'bad-store-path', message: 'name is longer than 211 characters' },

  // Hashes
  { label: 'hash: null', run: () => parseNarHash(anyInput(null)), code: 'bad-hash', message: 'narHash must be a string', field: 'narHash' },
  { label: 'hash: empty', run: () => parseNarHash(''), code: 'bad-hash', message: 'narHash must be a SHA-256 hash as sha256:<52 nix32 chars>' },
  { label: 'hash: bare nix32', run: () => parseNarHash(NAR_HASH.slice(7)), code: 'bad-hash', message: 'must be a SHA-256 hash' },
  { label: 'hash: md5', run: () => parseNarHash(`md5:${'0'.repeat(32)}`, 'FileHash'), code: 'bad-hash', message: 'FileHash must be a SHA-256 hash', field: 'FileHash' },
  { label: 'hash: SRI sha512', run: () => parseNarHash(`sha512-${b64(64)}`), code: 'bad-hash', message: 'got "sha512-' },
  { label: 'hash: nix32 with o', run: () => parseNarHash(`${NAR_HASH.slice(0, -1)}o`), code: 'bad-hash', message: 'must be a SHA-256 hash' },
  { label: 'hash: nix32 high bits', run: () => parseNarHash(`sha256:z${'0'.repeat(51)}`), code: 'bad-hash', message: 'must be a SHA-256 hash' },
  { label: 'hash: SRI without padding', run: () => parseNarHash(`sha256-${b64(32).slice(0, -1)}`), code: 'bad-hash', message: 'must be a SHA-256 hash' },
  { label: 'hash: SRI of 31 bytes', run: () => parseNarHash(`sha256-${b64(31)}`), code: 'bad-hash', message: 'must be a SHA-256 hash' },
  { label: 'nix32: wrong length', run: () => nix32Decode('abc', 32), code: 'bad-nix32', message: 'expected 52 nix32 characters, got 3' },
  { label: 'nix32: bad character', run: () => nix32Decode(`${'0'.repeat(51)}e`, 32), code: 'bad-nix32', message: 'invalid nix32 character "e"' },

  // Keys
  { label: 'public key: null', run: () => parsePublicKey(anyInput(null)), code: 'bad-key', message: 'publicKey: public key must be a string', field: 'publicKey' },
  { label: 'public key: no name', run: () => parsePublicKey(b64(32)), code: 'bad-key', message: 'must look like name:base64, got no name' },
  { label: 'public key: empty name', run: () => parsePublicKey(`:${b64(32)}`), code: 'bad-key', message: 'got no name' },
  { label: 'public key: space in name', run: () => parsePublicKey(`my key:${b64(32)}`), code: 'bad-key', message: 'name "my key" may only hold letters, digits and . _ + -' },
  { label: 'public key: not base64', run: () => parsePublicKey('k:not base64!'), code: 'bad-key', message: 'not canonical base64 after the name' },
  { label: 'public key: junk bits in base64', run: () => parsePublicKey(`k:${b64(32).slice(0, -2)}B=`), code: 'bad-key', message: 'not canonical base64' },
  { label: 'public key: 31 bytes', run: () => parsePublicKey(`k:${b64(31)}`), code: 'bad-key', message: 'public key must hold 32 bytes, got 31' },
  { label: 'public key: secret key given', run: () => parsePublicKey(SECRET, 'trustedKey'), code: 'bad-key', message: 'trustedKey: public key must hold 32 bytes, got 64', field: 'trustedKey' },
  { label: 'secret key: public key given', run: () => parseSecretKey(`k:${KEY.publicKey.raw.toString('base64')}`), code: 'bad-key', message: 'secret key must hold 64 bytes (seed and public key), got 32' },
  { label: 'secret key: halves disagree', run: () => parseSecretKey(`k:${Buffer.concat([KEY.seed, Buffer.alloc(32)]).toString('base64')}`), code: 'bad-key', message: "public half does not match its seed" },
  { label: 'secret key: undefined', run: () => parseSecretKey(anyInput(undefined)), code: 'bad-key', message: 'secret key must be a string' },
  { label: 'key name for a new key', run: () => generateSecretKey('a/b'), code: 'bad-key', message: 'key name "a/b" may only hold', field: 'name' },

  // Signatures
  { label: 'signature: number', run: () => parseNixSignature(anyInput(7)), code: 'bad-signature', message: 'signature: signature must be a string', field: 'signature' },
  { label: 'signature: no name', run: () => parseNixSignature(b64(64)), code: 'bad-signature', message: 'must look like name:base64' },
  { label: 'signature: 63 bytes', run: () => parseNixSignature(`k:${b64(63)}`), code: 'bad-signature', message: 'signature must hold 64 bytes, got 63' },
  { label: 'signature: newline inside', run: () => parseNixSignature(`k:${b64(64).slice(0, 40)}\n${b64(64).slice(40)}`), code: 'bad-signature', message: 'not canonical base64' },
  { label: 'signature: bad name', run: () => parseNixSignature(`k;x:${b64(64)}`, 'narinfoSignature'), code: 'bad-signature', message: 'narinfoSignature: signature name "k;x"', field: 'narinfoSignature' },

  // Fingerprints
  { label: 'fingerprint: size 0', run: () => fingerprint(parseStorePath(PATH), parseNarHash(NAR_HASH), 0, []), code: 'bad-nar-size', message: 'narSize must be a positive integer', field: 'narSize' },
  { label: 'fingerprint: fractional size', run: () => fingerprint(parseStorePath(PATH), parseNarHash(NAR_HASH), 1.5, []), code: 'bad-nar-size', message: 'got 1.5' },

  // narinfos
  { label: 'narinfo: not a string', run: () => parseNarInfo(anyInput(Buffer.from(NARINFO))), code: 'bad-narinfo', message: 'narinfo must be a string' },
  { label: 'narinfo: empty', run: () => parseNarInfo(''), code: 'bad-narinfo', message: 'narinfo is empty' },
  { label: 'narinfo: no final newline', run: () => parseNarInfo(NARINFO.slice(0, -1)), code: 'bad-narinfo', message: 'narinfo line 10 does not end in a newline' },
  { label: 'narinfo: blank line', run: () => parseNarInfo(NARINFO.replace('\nURL', '\n\nURL')), code: 'bad-narinfo', message: 'narinfo line 2 must look like "Key: value", got ""' },
  { label: 'narinfo: no space after colon', run: () => parseNarInfo(narinfoWith('URL', 'URL:nar/x')), code: 'bad-narinfo', message: 'line 2 must look like "Key: value", got "URL:nar/x"' },
  { label: 'narinfo: no colon', run: () => parseNarInfo(narinfoWith('URL', 'URL nar/x')), code: 'bad-narinfo', message: 'line 2 must look like "Key: value"' },
  { label: 'narinfo: CRLF', run: () => parseNarInfo(NARINFO.replaceAll('\n', '\r\n')), code: 'bad-narinfo', message: 'narinfo line 1 (StorePath) holds a carriage return', field: 'StorePath' },
  { label: 'narinfo: URL twice', run: () => parseNarInfo(`${NARINFO}URL: nar/y\n`), code: 'bad-narinfo', message: 'narinfo line 11: URL appears twice', field: 'URL' },
  { label: 'narinfo: References twice', run: () => parseNarInfo(`${NARINFO}References: \n`), code: 'bad-narinfo', message: 'References appears twice', field: 'References' },
  { label: 'narinfo: no StorePath', run: () => parseNarInfo(narinfoWith('StorePath', null)), code: 'bad-narinfo', message: 'narinfo has no StorePath line', field: 'StorePath' },
  { label: 'narinfo: no URL', run: () => parseNarInfo(narinfoWith('URL', null)), code: 'bad-narinfo', message: 'narinfo has no URL line', field: 'URL' },
  { label: 'narinfo: empty URL', run: () => parseNarInfo(narinfoWith('URL', 'URL: ')), code: 'bad-narinfo', message: 'narinfo line 2 (URL): must not be empty', field: 'URL' },
  { label: 'narinfo: no NarHash', run: () => parseNarInfo(narinfoWith('NarHash', null)), code: 'bad-narinfo', message: 'narinfo has no NarHash line', field: 'NarHash' },
  { label: 'narinfo: no NarSize', run: () => parseNarInfo(narinfoWith('NarSize', null)), code: 'bad-narinfo', message: 'narinfo has no NarSize line', field: 'NarSize' },
  { label: 'narinfo: bad StorePath', run: () => parseNarInfo(narinfoWith('StorePath', `StorePath: /nix/store/${HASH}`)), code: 'bad-narinfo', message: 'narinfo line 1 (StorePath): StorePath must look like <32-char hash>-<name>', field: 'StorePath' },
  { label: 'narinfo: md5 NarHash', run: () => parseNarInfo(narinfoWith('NarHash', `NarHash: md5:${'0'.repeat(32)}`)), code: 'bad-narinfo', message: 'narinfo line 6 (NarHash): NarHash must be a SHA-256 hash', field: 'NarHash' },
  { label: 'narinfo: bad FileHash', run: () => parseNarInfo(narinfoWith('FileHash', 'FileHash: sha256:xyz')), code: 'bad-narinfo', message: 'narinfo line 4 (FileHash): FileHash must be a SHA-256 hash', field: 'FileHash' },
  { label: 'narinfo: NarSize 0', run: () => parseNarInfo(narinfoWith('NarSize', 'NarSize: 0')), code: 'bad-narinfo', message: 'narinfo line 7 (NarSize): must not be 0', field: 'NarSize' },
  { label: 'narinfo: negative NarSize', run: () => parseNarInfo(narinfoWith('NarSize', 'NarSize: -5')), code: 'bad-narinfo', message: '(NarSize): must be a byte count in plain decimal, got "-5"' },
  { label: 'narinfo: NarSize with exponent', run: () => parseNarInfo(narinfoWith('NarSize', 'NarSize: 1e3')), code: 'bad-narinfo', message: 'got "1e3"' },
  { label: 'narinfo: NarSize with leading zero', run: () => parseNarInfo(narinfoWith('NarSize', 'NarSize: 020')), code: 'bad-narinfo', message: 'got "020"' },
  { label: 'narinfo: NarSize past 2^53', run: () => parseNarInfo(narinfoWith('NarSize', 'NarSize: 9007199254740993')), code: 'bad-narinfo', message: 'got "9007199254740993"' },
  { label: 'narinfo: FileSize not a number', run: () => parseNarInfo(narinfoWith('FileSize', 'FileSize: ten')), code: 'bad-narinfo', message: 'narinfo line 5 (FileSize): must be a byte count', field: 'FileSize' },
  { label: 'narinfo: full path in References', run: () => parseNarInfo(narinfoWith('References', `References: ${PATH}`)), code: 'bad-narinfo', message: 'narinfo line 8 (References): References must look like <32-char hash>-<name>', field: 'References' },
  { label: 'narinfo: double space in References', run: () => parseNarInfo(narinfoWith('References', `References: ${HASH}-a  ${HASH}-b`)), code: 'bad-narinfo', message: 'References must look like <32-char hash>-<name>, got ""' },
  { label: 'narinfo: reference listed twice', run: () => parseNarInfo(narinfoWith('References', `References: ${HASH}-a ${HASH}-a`)), code: 'bad-narinfo', message: `${HASH}-a is listed twice` },
  { label: 'narinfo: bad Deriver', run: () => parseNarInfo(narinfoWith('Deriver', 'Deriver: x.drv')), code: 'bad-narinfo', message: 'narinfo line 9 (Deriver): Deriver must look like', field: 'Deriver' },
  { label: 'narinfo: bad Sig', run: () => parseNarInfo(narinfoWith('Sig', `Sig: k:${b64(32)}`)), code: 'bad-narinfo', message: 'narinfo line 10 (Sig): Sig: signature must hold 64 bytes, got 32', field: 'Sig' },
  { label: 'narinfo: Compression with a space', run: () => parseNarInfo(narinfoWith('Compression', 'Compression: x z')), code: 'bad-narinfo', message: 'compression method "x z" must be a lower-case name', field: 'Compression' },
  { label: 'narinfo: CA of unknown kind', run: () => parseNarInfo(`${NARINFO}CA: sha256:${NAR_HASH.slice(7)}\n`), code: 'bad-narinfo', message: 'narinfo line 11 (CA): must be text:sha256:<nix32> or fixed:[r:]<md5|sha1|sha256|sha512>:<nix32>', field: 'CA' },
  { label: 'narinfo: CA text with sha1', run: () => parseNarInfo(`${NARINFO}CA: text:sha1:${'0'.repeat(32)}\n`), code: 'bad-narinfo', message: 'must be text:sha256:<nix32>' },
  { label: 'narinfo: CA hash of wrong length', run: () => parseNarInfo(`${NARINFO}CA: fixed:r:sha1:${NAR_HASH.slice(7)}\n`), code: 'bad-narinfo', message: '(CA): expected 32 nix32 characters, got 52' },
  { label: 'narinfo: CA in base16', run: () => parseNarInfo(`${NARINFO}CA: fixed:sha256:${'ab'.repeat(32)}\n`), code: 'bad-narinfo', message: '(CA): expected 52 nix32 characters, got 64' },
];

describe('malformed input gets a precise QuorumError', () => {
  it('the corpus starts from valid input', () => {
    expect(parseNarInfo(NARINFO).storePath).toBe(PATH);
    expect(parseSecretKey(SECRET).name).toBe('k');
  });

  it.each(CASES)('$label', ({ run, code, message, field }) => {
    let error: unknown;
    try {
      run();
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(QuorumError);
    const { code: actualCode, message: actualMessage, field: actualField } = error as QuorumError;
    expect({ code: actualCode, message: actualMessage }).toEqual({ code, message: expect.stringContaining(message) });
    if (field !== undefined) expect(actualField).toBe(field);
  });
});

describe('no input crashes a parser', () => {
  const onlyQuorumErrors = (parse: (input: string) => unknown) => (input: unknown) => {
    try {
      parse(anyInput(input));
    } catch (error) {
      if (!(error instanceof QuorumError)) throw error;
    }
  };

  it('random values', () => {
    for (const parse of [parseStorePath, parseNarHash, parsePublicKey, parseSecretKey, parseNixSignature, parseNarInfo]) {
      fc.assert(fc.property(fc.oneof(fc.anything({ withNullPrototype: true, withBoxedValues: true }), fc.string(), fc.string({ unit: 'binary' })), onlyQuorumErrors(parse)), { numRuns: 300 });
    }
  });

  it('random edits of a valid narinfo', () => {
    const edit = fc.tuple(fc.nat(NARINFO.length), fc.nat(8), fc.string({ maxLength: 8, unit: fc.constantFrom(...'\n :\r0aZ/-=+'.split('')) }));
    fc.assert(
      fc.property(fc.array(edit, { minLength: 1, maxLength: 4 }), (edits) => {
        let text = NARINFO;
        for (const [at, drop, insert] of edits) text = text.slice(0, at) + insert + text.slice(at + drop);
        onlyQuorumErrors(parseNarInfo)(text);
      }),
      { numRuns: 2000 },
    );
  });
});
