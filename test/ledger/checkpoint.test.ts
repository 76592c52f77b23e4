import { describe, expect, it } from 'vitest';
import {
  formatCheckpoint,
  formatNoteSignerKey,
  formatNoteVerifierKey,
  generateNoteKey,
  noteKeyId,
  parseCheckpoint,
  parseNoteSignerKey,
  parseNoteVerifierKey,
  signNote,
  verifyNote,
  type NoteVerifierKey,
} from '../../src/ledger/checkpoint.js';
import { EMPTY_ROOT } from '../../src/ledger/merkle.js';

// Vectors from golang.org/x/mod/sumdb/note/note_test.go (TestNewVerifier, TestNewSigner, TestSign, TestOpen).
const PETER_SIGNER = 'PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz';
const PETER_VERIFIER = 'PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW';
const ENOCH_VERIFIER = 'EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop';
const GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
const PETER_SIG = '\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n';
const ENOCH_SIG = '\u2014 EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n';

// Vectors from golang.org/x/mod/sumdb/client_test.go: a key whose name holds '/' and whose id has
// leading zeros, and a tree note it signed (same three-line shape as a checkpoint).
const SUMDB_SIGNER = 'PRIVATE+KEY+localhost.localdev/sumdb+00000c67+AXu6+oaVaOYuQOFrf1V59JK1owcFlJcHwwXHDfDGxSPk';
const SUMDB_VERIFIER = 'localhost.localdev/sumdb+00000c67+AcTrnkbUA+TU4heY3hkjiSES/DSQniBqIeQ/YppAUtK6';
const SUMDB_TREE = 'go.sum database tree\n6\nwc4SkQt52o5W2nQ8To2ARs+mWuUJjss+sdleoiqxMmM=\n';
const SUMDB_TREE_SIG = '\u2014 localhost.localdev/sumdb AAAMZ6oRNswlEZ6ZZhxrCvgl1MBy+nusq4JU+TG6Fe2NihWLqOzb+y2c2kzRLoCr4tvw9o36ucQEnhc20e4nA4Qc/wc=\n';

// Example from c2sp.org/signed-note (Verifier keys, Example).
const C2SP_VERIFIER = 'example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k';
const C2SP_NOTE = 'This is an example message.\n\n\u2014 example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n';

const badCheckpoint = (message?: RegExp) => expect.objectContaining({ code: 'bad-checkpoint', ...(message ? { message: expect.stringMatching(message) } : {}) });
const badKey = expect.objectContaining({ code: 'bad-key' });

describe('note keys', () => {
  it('parse and re-format the Go and C2SP keys, deriving the same key ids', () => {
    for (const text of [PETER_VERIFIER, ENOCH_VERIFIER, SUMDB_VERIFIER, C2SP_VERIFIER]) expect(formatNoteVerifierKey(parseNoteVerifierKey(text))).toBe(text);
    const peter = parseNoteSignerKey(PETER_SIGNER);
    expect(peter.name).toBe('PeterNeumann');
    expect(peter.keyId).toBe(0xc74f20a3);
    expect(formatNoteSignerKey(peter)).toBe(PETER_SIGNER);
    expect(formatNoteVerifierKey(peter.verifier)).toBe(PETER_VERIFIER);
    const sumdb = parseNoteSignerKey(SUMDB_SIGNER);
    expect(sumdb.keyId).toBe(0x00000c67);
    expect(formatNoteVerifierKey(sumdb.verifier)).toBe(SUMDB_VERIFIER);
    expect(noteKeyId('PeterNeumann', parseNoteVerifierKey(PETER_VERIFIER).publicKey.raw)).toBe(0xc74f20a3);
  });

  it('generates keys that round-trip through their text forms', () => {
    const key = generateNoteKey('nix-quorum.example/log');
    expect(formatNoteVerifierKey(key.verifier)).toMatch(/^nix-quorum\.example\/log\+[0-9a-f]{8}\+[A-Za-z0-9+/]{44}$/);
    expect(formatNoteSignerKey(key)).toMatch(/^PRIVATE\+KEY\+nix-quorum\.example\/log\+[0-9a-f]{8}\+[A-Za-z0-9+/]{44}$/);
    const again = parseNoteSignerKey(`${formatNoteSignerKey(key)}\n`);
    expect(formatNoteVerifierKey(again.verifier)).toBe(formatNoteVerifierKey(key.verifier));
    expect(parseNoteVerifierKey(formatNoteVerifierKey(key.verifier)).keyId).toBe(key.keyId);
  });

  it('rejects every proper substring and every one-character change of a key (as Go does)', () => {
    for (const [text, parse] of [
      [PETER_VERIFIER, parseNoteVerifierKey],
      [PETER_SIGNER, parseNoteSignerKey],
    ] as const) {
      for (let i = 0; i < text.length; i++) {
        for (let j = i + 1; j <= text.length; j++) {
          // Whitespace-trimmed prefixes/suffixes can't occur: the keys hold no spaces.
          if (i !== 0 || j !== text.length) expect(() => parse(text.slice(i, j)), text.slice(i, j)).toThrow(badKey);
        }
        const changed = text.slice(0, i) + String.fromCharCode(text.charCodeAt(i) + 1) + text.slice(i + 1);
        expect(() => parse(changed), changed).toThrow(badKey);
      }
    }
  });

  it('rejects a wrong-length key and an unknown algorithm even with a matching id', () => {
    // Go vectors (ids adjusted to the mangled keys); the first is also non-canonical base64.
    expect(() => parseNoteVerifierKey('PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==')).toThrow(badKey);
    expect(() => parseNoteVerifierKey('PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW')).toThrow(/only Ed25519/);
    const long = Buffer.alloc(33, 7);
    const id = noteKeyId('n', long).toString(16).padStart(8, '0');
    expect(() => parseNoteVerifierKey(`n+${id}+${Buffer.concat([Buffer.from([1]), long]).toString('base64')}`)).toThrow(/32 key bytes, got 34/);
  });

  it('rejects key names that are empty or hold spaces, plus signs or control characters', () => {
    for (const name of ['', 'a b', 'a+b', 'tab\there', 'nl\nx', 'nbsp\u00a0x', 'nel\u0085x', 'ctl\u0001x']) {
      expect(() => generateNoteKey(name), JSON.stringify(name)).toThrow(badKey);
    }
  });
});

describe('signed notes', () => {
  const peter = parseNoteVerifierKey(PETER_VERIFIER);
  const enoch = parseNoteVerifierKey(ENOCH_VERIFIER);

  it('signs exactly as Go does (Ed25519 is deterministic)', () => {
    expect(signNote(GO_TEXT, parseNoteSignerKey(PETER_SIGNER))).toBe(`${GO_TEXT}\n${PETER_SIG}`);
    expect(signNote(SUMDB_TREE, parseNoteSignerKey(SUMDB_SIGNER))).toBe(`${SUMDB_TREE}\n${SUMDB_TREE_SIG}`);
  });

  it('verifies the Go and C2SP notes, ignoring signatures by other keys', () => {
    expect(verifyNote(`${GO_TEXT}\n${PETER_SIG}`, peter)).toEqual({ body: GO_TEXT });
    expect(verifyNote(`${GO_TEXT}\n${PETER_SIG}${ENOCH_SIG}`, peter)).toEqual({ body: GO_TEXT });
    expect(verifyNote(`${GO_TEXT}\n${PETER_SIG}${ENOCH_SIG}`, enoch)).toEqual({ body: GO_TEXT });
    expect(verifyNote(C2SP_NOTE, parseNoteVerifierKey(C2SP_VERIFIER))).toEqual({ body: 'This is an example message.\n' });
    // The text may itself hold blank lines: only the last one separates the signatures.
    const key = generateNoteKey('multi');
    expect(verifyNote(signNote('a\n\nb\n', key), key.verifier)).toEqual({ body: 'a\n\nb\n' });
  });

  it('rejects a note the key did not sign', () => {
    expect(() => verifyNote(`${GO_TEXT}\n${ENOCH_SIG}`, peter)).toThrow(badCheckpoint(/no signature by the trusted key PeterNeumann\+c74f20a3/));
  });

  it('rejects the Go malformed notes', () => {
    for (const text of [
      GO_TEXT,
      `${GO_TEXT}\n`,
      `${GO_TEXT}\n${PETER_SIG.slice(0, -1)}`,
      `\u0001${GO_TEXT}\n${PETER_SIG}`,
      `${GO_TEXT}\n\u2014 Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n`,
      `${GO_TEXT}\n${PETER_SIG}Unexpected line.\n`,
      `${GO_TEXT}\n${PETER_SIG.repeat(101)}`,
    ]) {
      expect(() => verifyNote(text, peter), JSON.stringify(text.slice(-60))).toThrow(badCheckpoint());
    }
  });

  it('rejects an invalid signature by the trusted key, even next to a valid one', () => {
    const corrupted = `${PETER_SIG.slice(0, 60)}ABCD${PETER_SIG.slice(64)}`;
    expect(() => verifyNote(`${GO_TEXT}\n${corrupted}`, peter)).toThrow(badCheckpoint(/does not verify/));
    expect(() => verifyNote(`${GO_TEXT}\n${PETER_SIG}${corrupted}`, peter)).toThrow(badCheckpoint(/does not verify/));
  });

  it('refuses to sign a text without a final newline', () => {
    expect(() => signNote('no newline', parseNoteSignerKey(PETER_SIGNER))).toThrow(badCheckpoint());
  });
});

describe('checkpoints', () => {
  const key = generateNoteKey('nix-quorum.example/log');
  const origin = 'nix-quorum.example/log';
  const rootHash = Buffer.from('CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=', 'base64');
  const note = signNote(formatCheckpoint({ origin, size: 20852163, rootHash }), key);
  const [body, signatureLine] = note.split('\n\n') as [string, string];

  it('formats the C2SP body and round-trips through sign and parse', () => {
    expect(formatCheckpoint({ origin, size: 20852163, rootHash })).toBe(`${origin}\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n`);
    expect(note).toMatch(/^nix-quorum\.example\/log\n20852163\nCsUY.*=\n\n\u2014 nix-quorum\.example\/log [A-Za-z0-9+/]{91}=\n$/);
    expect(parseCheckpoint(note, key.verifier, origin)).toEqual({ origin, size: 20852163, rootHash });
    expect(parseCheckpoint(note, key.verifier)).toEqual({ origin, size: 20852163, rootHash });
    const empty = signNote(formatCheckpoint({ origin, size: 0, rootHash: EMPTY_ROOT }), key);
    expect(parseCheckpoint(empty, key.verifier, origin)).toEqual({ origin, size: 0, rootHash: EMPTY_ROOT });
    const large = signNote(formatCheckpoint({ origin, size: 2 ** 53 - 1, rootHash }), key);
    expect(parseCheckpoint(large, key.verifier, origin).size).toBe(2 ** 53 - 1);
  });

  it('parses the Go sumdb tree note as a checkpoint', () => {
    const cp = parseCheckpoint(`${SUMDB_TREE}\n${SUMDB_TREE_SIG}`, parseNoteVerifierKey(SUMDB_VERIFIER), 'go.sum database tree');
    expect(cp).toEqual({ origin: 'go.sum database tree', size: 6, rootHash: Buffer.from('wc4SkQt52o5W2nQ8To2ARs+mWuUJjss+sdleoiqxMmM=', 'base64') });
  });

  it('tolerates extension lines and cosignatures by other keys', () => {
    const extended = signNote(`${formatCheckpoint({ origin, size: 7, rootHash })}ext one\next two\n`, key);
    expect(parseCheckpoint(extended, key.verifier, origin)).toEqual({ origin, size: 7, rootHash });
    const witness = generateNoteKey('witness.example/w1');
    const cosigned = `${extended}${signNote(`${formatCheckpoint({ origin, size: 7, rootHash })}ext one\next two\n`, witness).split('\n\n')[1]}`;
    expect(parseCheckpoint(cosigned, key.verifier, origin).size).toBe(7);
    expect(parseCheckpoint(cosigned, witness.verifier, origin).size).toBe(7);
  });

  describe('rejects', () => {
    const sigBytes = Buffer.from(signatureLine.slice(signatureLine.lastIndexOf(' ') + 1, -1), 'base64');
    const withSignatureLine = (line: string) => `${body}\n\n${line}`;
    const cases: Array<[string, string, NoteVerifierKey, RegExp]> = [
      ['a wrong key id', withSignatureLine(`\u2014 ${origin} ${Buffer.concat([Buffer.from([1, 2, 3, 4]), sigBytes.subarray(4)]).toString('base64')}\n`), key.verifier, /no signature by the trusted key/],
      ['a wrong key name', withSignatureLine(signatureLine.replace(`\u2014 ${origin} `, '\u2014 other.example/log ')), key.verifier, /no signature by the trusted key/],
      ['another key of the same name', note, generateNoteKey(origin).verifier, /no signature by the trusted key/],
      ['an altered body', note.replace('20852163', '20852164'), key.verifier, /does not verify/],
      ['a missing signature line', `${body}\n\n`, key.verifier, /signature lines/],
      ['no blank line', `${body}\n${signatureLine}`, key.verifier, /no blank line/],
      ['a hyphen instead of the em dash', withSignatureLine(signatureLine.replace('\u2014', '-')), key.verifier, /em dash/],
      ['an en dash instead of the em dash', withSignatureLine(signatureLine.replace('\u2014', '\u2013')), key.verifier, /em dash/],
      ['bad base64', withSignatureLine(signatureLine.replace(/=\n$/, '!\n')), key.verifier, /base64/],
      ['unpadded base64', withSignatureLine(signatureLine.replace(/=\n$/, '\n')), key.verifier, /base64/],
      ['a truncated signature', withSignatureLine(`\u2014 ${origin} ${sigBytes.subarray(0, 40).toString('base64')}\n`), key.verifier, /does not verify/],
      ['a carriage return', note.replace(/\n/g, '\r\n'), key.verifier, /control character/],
    ];
    it.each(cases)('%s', (_, text, verifier, message) => {
      expect(() => parseCheckpoint(text, verifier, origin)).toThrow(badCheckpoint(message));
    });

    it('a checkpoint of another log', () => {
      expect(() => parseCheckpoint(note, key.verifier, 'other.example/log')).toThrow(badCheckpoint(/expected "other.example\/log"/));
    });

    it.each([
      ['too few lines', `${origin}\n5\n`, /at least 3 lines/],
      ['an empty extension line', `${origin}\n5\n${rootHash.toString('base64')}\n\next\n`, /must not be empty/],
      ['a leading zero', `${origin}\n05\n${rootHash.toString('base64')}\n`, /without leading zeros/],
      ['a negative size', `${origin}\n-5\n${rootHash.toString('base64')}\n`, /without leading zeros/],
      ['a size beyond 2^53-1', `${origin}\n9007199254740992\n${rootHash.toString('base64')}\n`, /at most 2\^53-1/],
      ['a 31-byte root', `${origin}\n5\n${rootHash.subarray(1).toString('base64')}\n`, /base64 of 32 bytes/],
      ['a non-canonical root', `${origin}\n5\n${rootHash.toString('base64').slice(0, 42)}3=\n`, /base64 of 32 bytes/],
      ['a hex root', `${origin}\n5\n${rootHash.toString('hex')}\n`, /base64 of 32 bytes/],
    ])('a body with %s, even correctly signed', (_, text, message) => {
      expect(() => parseCheckpoint(signNote(text, key), key.verifier, origin)).toThrow(badCheckpoint(message));
    });

    it('formatting invalid fields', () => {
      expect(() => formatCheckpoint({ origin: '', size: 1, rootHash })).toThrow(badCheckpoint());
      expect(() => formatCheckpoint({ origin: 'two\nlines', size: 1, rootHash })).toThrow(badCheckpoint());
      expect(() => formatCheckpoint({ origin, size: -1, rootHash })).toThrow(badCheckpoint());
      expect(() => formatCheckpoint({ origin, size: 1.5, rootHash })).toThrow(badCheckpoint());
      expect(() => formatCheckpoint({ origin, size: 1, rootHash: rootHash.subarray(1) })).toThrow(badCheckpoint());
    });
  });
});
