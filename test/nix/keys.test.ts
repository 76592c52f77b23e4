import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  formatPublicKey,
  formatSecretKey,
  generateSecretKey,
  parseNixSignature,
  parsePublicKey,
  parseSecretKey,
  signNix,
  signRaw,
  verifyNix,
  verifyRaw,
} from '../../src/nix/keys.js';
import { describeNix, nix, tempDir } from '../helpers/nix.js';

describe('Nix-format keys', () => {
  it('round-trips generated keys through their text form', () => {
    const secret = generateSecretKey('cache.example.org-1');
    const again = parseSecretKey(formatSecretKey(secret));
    expect(again.name).toBe('cache.example.org-1');
    expect(again.seed).toEqual(secret.seed);
    expect(formatPublicKey(again.publicKey)).toBe(formatPublicKey(secret.publicKey));
    expect(formatPublicKey(parsePublicKey(`${formatPublicKey(secret.publicKey)}\n`))).toBe(formatPublicKey(secret.publicKey));
    expect(formatSecretKey(secret)).toMatch(/^cache\.example\.org-1:[A-Za-z0-9+/]{86}==$/);
    expect(formatPublicKey(secret.publicKey)).toMatch(/^cache\.example\.org-1:[A-Za-z0-9+/]{43}=$/);
  });

  it('signs and verifies, and rejects other messages, keys and names', () => {
    const a = generateSecretKey('a');
    const b = generateSecretKey('b');
    const sig = signNix(a, 'message');
    expect(parseNixSignature(sig)).toMatchObject({ keyName: 'a' });
    expect(verifyNix(a.publicKey, 'message', sig)).toBe(true);
    expect(verifyNix(a.publicKey, 'message!', sig)).toBe(false);
    expect(verifyNix(b.publicKey, 'message', sig)).toBe(false);
    expect(verifyNix(b.publicKey, 'message', `b:${sig.slice(2)}`)).toBe(false);
    expect(verifyNix(a.publicKey, 'message', `a:${Buffer.alloc(64).toString('base64')}`)).toBe(false);
    expect(verifyRaw(a.publicKey, 'message', signRaw(a, 'message'))).toBe(true);
    expect(verifyRaw(a.publicKey, 'message', signRaw(a, 'message').subarray(1))).toBe(false);
  });
});

describeNix('keys interoperate with Nix', () => {
  let dir: string;
  beforeAll(() => {
    dir = tempDir('keys');
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('reads keys from `nix-store --generate-binary-cache-key` and signs and verifies with them', () => {
    const sk = join(dir, 'nix.sk');
    const pk = join(dir, 'nix.pk');
    nix('nix-store', ['--generate-binary-cache-key', 'nix-made-1', sk, pk]);
    const secret = parseSecretKey(readFileSync(sk, 'utf8'));
    const publicKey = parsePublicKey(readFileSync(pk, 'utf8'));
    expect(secret.name).toBe('nix-made-1');
    expect(formatSecretKey(secret)).toBe(readFileSync(sk, 'utf8'));
    expect(formatPublicKey(secret.publicKey)).toBe(readFileSync(pk, 'utf8'));
    const message = '1;/nix/store/872kxwmj0mdiqxyjagljp2q4pc01fzh0-x;sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73;1;';
    const sig = signNix(secret, message);
    expect(sig.startsWith('nix-made-1:')).toBe(true);
    expect(verifyNix(publicKey, message, sig)).toBe(true);
    expect(verifyNix(publicKey, `${message}x`, sig)).toBe(false);
  });

  it('hands Nix secret keys it reads as its own', () => {
    // Nix derives the public key from our secret key file; narinfo.test.ts has Nix sign and verify with it.
    const secret = generateSecretKey('ours-1');
    const file = join(dir, 'ours.sk');
    writeFileSync(file, formatSecretKey(secret));
    expect(nix('nix', ['key', 'convert-secret-to-public'], { input: readFileSync(file) })).toBe(formatPublicKey(secret.publicKey));
  });

  it('reads secret keys from `nix key generate-secret`', () => {
    const text = nix('nix', ['key', 'generate-secret', '--key-name', 'nix-made-2']);
    const secret = parseSecretKey(text);
    expect(formatPublicKey(secret.publicKey)).toBe(nix('nix', ['key', 'convert-secret-to-public'], { input: text }));
  });
});
