import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { QuorumError } from '../../src/errors.js';
import { narHashDigest, narHashFromDigest, narHashToSri, parseNarHash, sha256 } from '../../src/nix/hash.js';
import { NIX32_ALPHABET, nix32Decode, nix32Encode, nix32Length } from '../../src/nix/nix32.js';
import { describeNix, nix, nixEnv } from '../helpers/nix.js';

describe('nix32', () => {
  it('round-trips byte strings of any length', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 80 }), (bytes) => {
        const text = nix32Encode(bytes);
        expect(text).toHaveLength(nix32Length(bytes.length));
        expect([...text].every((c) => NIX32_ALPHABET.includes(c))).toBe(true);
        expect(nix32Decode(text, bytes.length)).toEqual(Buffer.from(bytes));
      }),
      { numRuns: 500 },
    );
  });

  it('matches vectors printed by `nix hash to-base32`', () => {
    // sha256(""), sha256("abc"), sha1("abc"), md5("abc")
    expect(nix32Encode(sha256(''))).toBe('0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73');
    expect(nix32Encode(sha256('abc'))).toBe('1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s');
    expect(nix32Encode(Buffer.from('a9993e364706816aba3e25717850c26c9cd0d89d', 'hex'))).toBe('kpcd173cq987hw957sx6m0868wv3x6d9');
    expect(nix32Encode(Buffer.from('900150983cd24fb0d6963f7d28e17f72', 'hex'))).toBe('3jgzhjhz9zjvbb0kyj7jc500ch');
  });

  it('rejects letters outside the alphabet, wrong lengths and bits beyond the hash', () => {
    const valid = nix32Encode(sha256('x'));
    for (const c of 'eotu') {
      expect(() => nix32Decode(c + valid.slice(1), 32)).toThrow(/invalid nix32 character/);
    }
    expect(() => nix32Decode(valid.slice(1), 32)).toThrow(/expected 52 nix32 characters, got 51/);
    // 52 digits carry 260 bits; a SHA-256 has 256, so the first digit can only be 0 or 1.
    expect(() => nix32Decode(`2${'0'.repeat(51)}`, 32)).toThrow(/bits beyond the hash length/);
    expect(nix32Decode(`1${'0'.repeat(51)}`, 32)[31]).toBe(0x80);
  });
});

describe('NAR hash forms', () => {
  const digest = sha256('hello');
  const canonical = narHashFromDigest(digest);

  it('accepts nix32, base16, base64 and SRI and returns the canonical sha256:<nix32>', () => {
    expect(canonical).toMatch(/^sha256:[0-9a-df-np-sv-z]{52}$/);
    for (const form of [canonical, `sha256:${digest.toString('hex')}`, `sha256:${digest.toString('hex').toUpperCase()}`, `sha256:${digest.toString('base64')}`, `sha256-${digest.toString('base64')}`]) {
      expect(parseNarHash(form)).toBe(canonical);
    }
    expect(narHashDigest(canonical)).toEqual(digest);
    expect(narHashToSri(canonical)).toBe(`sha256-${digest.toString('base64')}`);
  });

  it('round-trips random digests through every form', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 32, maxLength: 32 }), (bytes) => {
        const hash = narHashFromDigest(bytes);
        expect(parseNarHash(narHashToSri(hash))).toBe(hash);
        expect(parseNarHash(`sha256:${Buffer.from(bytes).toString('hex')}`)).toBe(hash);
        expect(narHashDigest(hash)).toEqual(Buffer.from(bytes));
      }),
      { numRuns: 300 },
    );
  });
});

describeNix('hash encodings agree with Nix', () => {
  const COUNT = 200;

  it.each([
    ['md5', 16],
    ['sha1', 20],
    ['sha256', 32],
    ['sha512', 64],
  ] as const)(`nix32 of ${COUNT} random %s digests equals \`nix hash to-base32\``, (type, size) => {
    const digests = Array.from({ length: COUNT }, () => randomBytes(size));
    const theirs = nix('nix', ['hash', 'to-base32', '--type', type, ...digests.map((d) => d.toString('hex'))]).trim().split('\n');
    expect(theirs).toEqual(digests.map((d) => nix32Encode(d)));
    expect(theirs.map((text) => nix32Decode(text, size))).toEqual(digests);
  });

  it(`SRI, base16 and nix-hash forms of ${COUNT} random SHA-256 digests agree with Nix`, () => {
    const hashes = Array.from({ length: COUNT }, () => narHashFromDigest(randomBytes(32)));
    const hex = hashes.map((h) => narHashDigest(h).toString('hex'));
    const sri = nix('nix', ['hash', 'to-sri', '--type', 'sha256', ...hex]).trim().split('\n');
    expect(sri).toEqual(hashes.map(narHashToSri));
    const legacy = nix('nix-hash', ['--type', 'sha256', '--to-base32', ...hex]).trim().split('\n');
    expect(legacy.map((h) => `sha256:${h}`)).toEqual(hashes);
    // And the other direction: what Nix prints from our canonical form, we read back to the same hash.
    const base16 = nix('nix', ['hash', 'to-base16', ...hashes]).trim().split('\n');
    expect(base16).toEqual(hex);
    expect(sri.map((s) => parseNarHash(s))).toEqual(hashes);
  });

  // Every malformed SHA-256 we reject, Nix rejects too (we are never the laxer side).
  it.each([
    ['empty', ''],
    ['no type', '1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s'],
    ['upper-case type', 'SHA256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s'],
    ['51 nix32 chars', 'sha256:b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s'],
    ['nix32 with e', 'sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5e'],
    ['nix32 with u', 'sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicyu0'],
    ['nix32 high bits', `sha256:2${'0'.repeat(51)}`],
    ['63 hex chars', `sha256:${'a'.repeat(63)}`],
    ['hex with g', `sha256:${'a'.repeat(63)}g`],
    ['SRI of 30 bytes', `sha256-${randomBytes(30).toString('base64')}`],
    ['base64 with bad char', `sha256:${'A'.repeat(42)}!=`],
  ])('rejects %s like Nix does', (_label, text) => {
    expect(() => parseNarHash(text)).toThrow(QuorumError);
    const result = spawnSync('nix', ['hash', 'to-base32', '--', text], { env: nixEnv, encoding: 'utf8' });
    expect(result.status, result.stdout).not.toBe(0);
    expect(result.stderr).toMatch(/error: .*(hash|base-?(16|32|64)|SRI|type)/i);
  });
});
