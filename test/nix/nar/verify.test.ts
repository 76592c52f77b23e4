import { createHash } from 'node:crypto';
import { mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough, Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { QuorumError } from '../../../src/errors.js';
import { narHashFromDigest } from '../../../src/nix/hash.js';
import { dumpNar, encodeString, encodeStrings, NarParser, NarVerifier, verifyNar } from '../../../src/nix/nar/index.js';
import { tempDir } from '../../helpers/nix.js';

type Token = string | Buffer;

const entry = (name: Token, node: Token[]): Token[] => ['entry', '(', 'name', name, 'node', ...node, ')'];
const regular = (contents: Token, executable = false): Token[] =>
  ['(', 'type', 'regular', ...(executable ? ['executable', ''] : []), 'contents', contents, ')'];
const symlink = (target: Token): Token[] => ['(', 'type', 'symlink', 'target', target, ')'];
const directory = (...entries: Token[][]): Token[] => ['(', 'type', 'directory', ...entries.flat(), ')'];
const nar = (root: Token[]): Token[] => ['nix-archive-1', ...root];

/** The valid NAR every malformed case below is derived from (its tree is built on disk too). */
const validEntries = (): Token[][] => [
  entry('bin', directory(entry('hello', regular('echo hi\n', true)))),
  entry('empty', regular('')),
  entry('link', symlink('/nix/store/00000000000000000000000000000000-x')),
  entry('readme', regular('hi')),
];
const VALID = nar(directory(...validEntries()));

const encode = (tokens: Token[]): Buffer => encodeStrings(...tokens);

/** Offset of the `occurrence`-th token equal to `token` in the encoding of `tokens`. */
function offsetOf(tokens: Token[], token: Token, occurrence = 1): number {
  let seen = 0;
  let offset = 0;
  for (const t of tokens) {
    if (Buffer.from(t).equals(Buffer.from(token)) && ++seen === occurrence) return offset;
    offset += encodeString(t).length;
  }
  throw new Error(`token ${String(token)} not found`);
}

/** Replaces the `occurrence`-th `token` with `replacement` tokens. */
function replaceToken(tokens: Token[], token: Token, replacement: Token[], occurrence = 1): Token[] {
  const out: Token[] = [];
  let seen = 0;
  for (const t of tokens) {
    if (Buffer.from(t).equals(Buffer.from(token)) && ++seen === occurrence) out.push(...replacement);
    else out.push(t);
  }
  if (seen < occurrence) throw new Error(`token ${String(token)} not found`);
  return out;
}

async function* once(bytes: Uint8Array): AsyncGenerator<Uint8Array> {
  yield bytes;
}

async function* byteByByte(bytes: Uint8Array): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < bytes.length; i++) yield bytes.subarray(i, i + 1);
}

/** Runs the verifier and returns its QuorumError (failing the test if it accepted or crashed). */
async function rejection(bytes: Buffer): Promise<QuorumError> {
  const err = await verifyNar(once(bytes)).then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!(err instanceof QuorumError)) throw new Error(`expected a QuorumError, got ${String(err)}`);
  expect(err.code).toBe('bad-nar');
  // Chunking must not change the verdict.
  const split = await verifyNar(byteByByte(bytes)).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect((split as Error | undefined)?.message).toBe(err.message);
  return err;
}

describe('verifyNar on valid NARs', () => {
  let dir = '';
  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('the hand-built reference NAR is what dumpNar writes for the same tree', async () => {
    dir = tempDir('nar-verify');
    const root = join(dir, 'root');
    mkdirSync(join(root, 'bin'), { recursive: true });
    writeFileSync(join(root, 'bin', 'hello'), 'echo hi\n', { mode: 0o755 });
    writeFileSync(join(root, 'empty'), '');
    symlinkSync('/nix/store/00000000000000000000000000000000-x', join(root, 'link'));
    writeFileSync(join(root, 'readme'), 'hi', { mode: 0o644 });
    const chunks: Buffer[] = [];
    for await (const chunk of dumpNar(root)) chunks.push(chunk);
    expect(Buffer.concat(chunks).equals(encode(VALID))).toBe(true);
  });

  it('returns SHA-256 and length of the bytes, however they are chunked', async () => {
    const bytes = encode(VALID);
    const expected = { narHash: narHashFromDigest(createHash('sha256').update(bytes).digest()), narSize: bytes.length };
    expect(await verifyNar(once(bytes))).toEqual(expected);
    expect(await verifyNar(byteByByte(bytes))).toEqual(expected);
  });

  it('accepts every root type and names that are odd but legal', async () => {
    for (const root of [
      regular(''),
      regular('x'.repeat(17), true),
      symlink('x'.repeat(4095)),
      directory(),
      directory(entry('-', regular('')), entry('...', regular('')), entry('.a', regular('')), entry('x'.repeat(255), regular(''))),
      // Byte order: 0xEF (U+FF5E) sorts before 0xF0 (emoji) although UTF-16 order says otherwise.
      directory(entry('\uff5e', regular('')), entry('\ud83d\ude00', regular(''))),
      directory(entry(Buffer.from([0x7f]), regular('')), entry(Buffer.from([0x80]), regular('')), entry(Buffer.from([0xff]), regular(''))),
    ]) {
      await expect(verifyNar(once(encode(nar(root))))).resolves.toMatchObject({ narSize: encode(nar(root)).length });
    }
  });

  it('accepts nesting up to depth 63 and refuses depth 64, as Nix does', async () => {
    const nested = (levels: number): Token[] => (levels === 0 ? regular('') : directory(entry('d', nested(levels - 1))));
    await expect(verifyNar(once(encode(nar(nested(63)))))).resolves.toBeDefined();
    const err = await rejection(encode(nar(nested(64))));
    const tokens = nar(nested(64));
    expect(err.message).toBe(`bad NAR: directory nesting at byte ${offsetOf(tokens, 'node', 64)} exceeds the maximum NAR depth of 64`);
  });
});

describe('verifyNar rejects malformed NARs with a precise message', () => {
  const cases: { name: string; tokens: Token[]; message: RegExp; at?: number }[] = [
    {
      name: 'wrong magic',
      tokens: replaceToken(VALID, 'nix-archive-1', ['nix-archive-2']),
      message: /^bad NAR: not a NAR: expected the magic "nix-archive-1" at byte 0, got "nix-archive-2"$/,
    },
    {
      name: 'magic longer than the real one',
      tokens: replaceToken(VALID, 'nix-archive-1', ['nix-archive-1x']),
      message: /^bad NAR: not a NAR: .*got a string length of 14$/,
    },
    {
      name: 'unknown keyword instead of "type"',
      tokens: replaceToken(VALID, 'type', ['tipe'], 2),
      message: /expected "type" at byte (\d+), got "tipe"/,
      at: offsetOf(VALID, 'type', 2),
    },
    {
      name: 'unknown file type',
      tokens: replaceToken(VALID, 'regular', ['socket']),
      message: /unknown file type "socket" at byte (\d+)/,
      at: offsetOf(VALID, 'regular'),
    },
    {
      name: 'non-empty executable marker',
      tokens: replaceToken(VALID, '', ['yes']),
      message: /the "executable" marker at byte (\d+) must have an empty value, got 3 bytes/,
      at: offsetOf(VALID, ''),
    },
    {
      name: 'misspelt "executable"',
      tokens: replaceToken(VALID, 'executable', ['executible']),
      message: /expected "executable" or "contents" at byte (\d+), got "executible"/,
      at: offsetOf(VALID, 'executable'),
    },
    {
      name: 'field after the contents',
      tokens: replaceToken(VALID, 'hi', ['hi', 'executable', '']),
      message: /expected "\)" at byte (\d+), got "executable"/,
      at: offsetOf(VALID, 'hi') + 16,
    },
    {
      name: 'missing "node" keyword',
      tokens: replaceToken(VALID, 'node', []),
      message: /expected "node" at byte (\d+), got "\("/,
    },
    {
      name: 'unknown tag inside a directory',
      tokens: replaceToken(VALID, 'entry', ['entries']),
      message: /expected "entry" or "\)" at byte (\d+), got "entries"/,
      at: offsetOf(VALID, 'entry'),
    },
    {
      name: 'unsorted entries',
      tokens: nar(directory(...[...validEntries()].reverse())),
      message: /directory entries not sorted at byte (\d+): "link" comes after "readme" \(byte order required\)/,
      at: offsetOf(nar(directory(...[...validEntries()].reverse())), 'link'),
    },
    {
      name: 'entries sorted by UTF-16 instead of bytes',
      tokens: nar(directory(entry('\ud83d\ude00', regular('')), entry('\uff5e', regular('')))),
      message: /directory entries not sorted at byte (\d+): "\uff5e" comes after "\ud83d\ude00"/,
    },
    {
      name: 'duplicate entry',
      tokens: nar(directory(entry('a', regular('')), entry('a', symlink('b')))),
      message: /duplicate entry name "a" at byte (\d+)/,
      at: offsetOf(nar(directory(entry('a', regular('')), entry('a', symlink('b')))), 'a', 2),
    },
    { name: 'empty name', tokens: replaceToken(VALID, 'empty', ['']), message: /invalid entry name "" at byte (\d+): it is empty/ },
    { name: 'name "."', tokens: replaceToken(VALID, 'empty', ['.']), message: /invalid entry name "\." at byte (\d+): it is "\."/ },
    { name: 'name ".."', tokens: replaceToken(VALID, 'empty', ['..']), message: /invalid entry name "\.\." at byte (\d+): it is "\.\."/ },
    { name: 'name with "/"', tokens: replaceToken(VALID, 'empty', ['e/f']), message: /invalid entry name "e\/f" at byte (\d+): it contains "\/"/ },
    {
      name: 'name with NUL',
      tokens: replaceToken(VALID, 'empty', ['e\0f']),
      message: /invalid entry name "e\\u0000f" at byte (\d+): it contains a NUL byte/,
      at: offsetOf(VALID, 'empty'),
    },
    {
      name: 'name over 255 bytes',
      tokens: replaceToken(VALID, 'readme', ['r'.repeat(256)]),
      message: /string of 256 bytes at byte (\d+) is longer than the 255-byte limit for an entry name/,
      at: offsetOf(VALID, 'readme'),
    },
    {
      name: 'symlink target over 4095 bytes',
      tokens: replaceToken(VALID, '/nix/store/00000000000000000000000000000000-x', ['t'.repeat(4096)]),
      message: /string of 4096 bytes at byte (\d+) is longer than the 4095-byte limit for a symlink target/,
    },
    {
      name: 'empty symlink target',
      tokens: replaceToken(VALID, '/nix/store/00000000000000000000000000000000-x', ['']),
      message: /empty symlink target at byte (\d+)/,
    },
    {
      name: 'symlink target with NUL',
      tokens: replaceToken(VALID, '/nix/store/00000000000000000000000000000000-x', ['/a\0b']),
      message: /symlink target "\/a\\u0000b" at byte (\d+) contains a NUL byte/,
    },
    {
      name: 'keyword over 32 bytes',
      tokens: replaceToken(VALID, 'contents', ['c'.repeat(33)]),
      message: /string of 33 bytes at byte (\d+) is longer than the 32-byte limit for "contents"/,
      at: offsetOf(VALID, 'contents'),
    },
    {
      name: 'two NARs back to back',
      tokens: [...VALID, ...VALID],
      message: /trailing data at byte (\d+) after the end of the NAR/,
      at: encode(VALID).length,
    },
  ];

  it.each(cases)('$name', async ({ tokens, message, at }) => {
    const err = await rejection(encode(tokens));
    expect(err.message).toMatch(message);
    if (at !== undefined) expect(Number(message.exec(err.message)![1])).toBe(at);
  });

  const valid = encode(VALID);
  const withByte = (offset: number, value: number): Buffer => {
    const copy = Buffer.from(valid);
    copy[offset] = value;
    return copy;
  };

  it('not a NAR at all (gzip header)', async () => {
    const err = await rejection(Buffer.from('1f8b0800000000000003cbc8e40200', 'hex'));
    expect(err.message).toMatch(/^bad NAR: not a NAR: .* at byte 0/);
  });

  it('a string length of 2^63 + 1', async () => {
    const at = offsetOf(VALID, '(');
    const bytes = withByte(at + 7, 0x80);
    const err = await rejection(bytes);
    expect(err.message).toBe(`bad NAR: string of 9223372036854775809 bytes at byte ${at} is longer than the 32-byte limit for "("`);
  });

  it('a file size beyond 2^53', async () => {
    const at = offsetOf(VALID, 'echo hi\n');
    const err = await rejection(withByte(at + 7, 0x01));
    expect(err.message).toBe(`bad NAR: file size 72057594037927944 at byte ${at} is too large`);
  });

  it('a file size larger than the bytes that follow', async () => {
    const at = offsetOf(VALID, 'echo hi\n');
    const err = await rejection(withByte(at + 3, 0x01));
    expect(err.message).toBe(`bad NAR: NAR is truncated: input ends at byte ${valid.length} inside the contents of a regular file`);
  });

  it('nonzero padding after a string', async () => {
    const at = offsetOf(VALID, 'bin') + 8 + 3; // "bin" is padded with 5 zero bytes
    const err = await rejection(withByte(at + 2, 0x01));
    expect(err.message).toBe(`bad NAR: nonzero padding byte 0x01 at byte ${at + 2}`);
  });

  it('nonzero padding after file contents', async () => {
    const at = offsetOf(VALID, 'hi') + 8 + 2;
    const err = await rejection(withByte(at + 5, 0xff));
    expect(err.message).toBe(`bad NAR: nonzero padding byte 0xff at byte ${at + 5}`);
  });

  it('one trailing byte', async () => {
    const err = await rejection(Buffer.concat([valid, Buffer.from([0])]));
    expect(err.message).toBe(`bad NAR: trailing data at byte ${valid.length} after the end of the NAR`);
  });

  it('every truncation of the reference NAR, including empty input', async () => {
    for (let length = 0; length < valid.length; length++) {
      const err = await rejection(valid.subarray(0, length));
      expect(err.message).toMatch(new RegExp(`^bad NAR: NAR is truncated: input ends at byte ${length} (inside|while expecting) `));
    }
  });

  it('never crashes or accepts garbage silently under random mutations', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.nat(valid.length - 1), fc.integer({ min: 0, max: 255 }), fc.constantFrom('set', 'insert', 'delete')), {
          minLength: 1,
          maxLength: 4,
        }),
        async (edits) => {
          const bytes = [...valid];
          for (const [offset, value, op] of edits) {
            const at = Math.min(offset, bytes.length);
            if (op === 'set') bytes[at] = value;
            else if (op === 'insert') bytes.splice(at, 0, value);
            else bytes.splice(at, 1);
          }
          const input = Buffer.from(bytes);
          const outcome = await verifyNar(once(input)).then(
            (result) => result,
            (err: unknown) => (err instanceof Error ? err : new Error(String(err))),
          );
          if (outcome instanceof Error) {
            expect(outcome).toBeInstanceOf(QuorumError);
            expect((outcome as QuorumError).code).toBe('bad-nar');
          } else {
            // Accepted only if it still is a NAR: then the hash is over exactly these bytes.
            expect(outcome.narSize).toBe(input.length);
            expect(outcome.narHash).toBe(narHashFromDigest(createHash('sha256').update(input).digest()));
          }
        },
      ),
      { numRuns: 2000, seed: 20260822 },
    );
  });

  it('stays failed after the first error', () => {
    const parser = new NarParser();
    expect(() => parser.update(encode(replaceToken(VALID, 'type', ['tipe'])))).toThrow(/got "tipe"/);
    expect(() => parser.update(Buffer.alloc(8))).toThrow(/got "tipe"/);
    expect(() => parser.finish()).toThrow(/got "tipe"/);
  });
});

describe('NarVerifier (pass-through stream)', () => {
  const valid = encode(VALID);

  async function collectThrough(chunks: Buffer[]): Promise<{ verifier: NarVerifier; output: Buffer; error: unknown }> {
    const verifier = new NarVerifier();
    const out: Buffer[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, callback) {
        out.push(chunk);
        callback();
      },
    });
    const error = await pipeline(Readable.from(chunks), verifier, new PassThrough(), sink).then(
      () => undefined,
      (err: unknown) => err,
    );
    return { verifier, output: Buffer.concat(out), error };
  }

  it('passes the bytes through unchanged and exposes narHash/narSize after finish', async () => {
    const chunks = [valid.subarray(0, 5), valid.subarray(5, 100), valid.subarray(100)];
    const { verifier, output, error } = await collectThrough(chunks);
    expect(error).toBeUndefined();
    expect(output.equals(valid)).toBe(true);
    expect(verifier.result).toEqual(await verifyNar(once(valid)));
  });

  it('has no result before finish', () => {
    const verifier = new NarVerifier();
    verifier.write(valid.subarray(0, 10));
    expect(verifier.result).toBeUndefined();
    verifier.destroy();
  });

  it('errors the pipeline on a bad chunk and does not pass that chunk on', async () => {
    const bad = encode(replaceToken(VALID, 'regular', ['socket']));
    const cut = offsetOf(VALID, 'type', 2);
    const { verifier, output, error } = await collectThrough([bad.subarray(0, cut), bad.subarray(cut)]);
    expect(error).toBeInstanceOf(QuorumError);
    expect(error).toMatchObject({ code: 'bad-nar', message: expect.stringMatching(/unknown file type "socket"/) });
    expect(output.equals(bad.subarray(0, cut))).toBe(true);
    expect(verifier.result).toBeUndefined();
  });

  it('errors the pipeline when the stream ends inside the NAR', async () => {
    const { error } = await collectThrough([valid.subarray(0, valid.length - 8)]);
    expect(error).toMatchObject({ code: 'bad-nar', message: expect.stringMatching(/NAR is truncated: input ends at byte/) });
  });
});
