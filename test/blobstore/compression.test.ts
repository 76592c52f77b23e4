import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  COMPRESSION_LEVELS,
  COMPRESSION_METHODS,
  compressStream,
  decompressStream,
  fileExtension,
  parseCompressionMethod,
  type CompressionMethod,
} from '../../src/blobstore/compression.js';
import { narHashFromDigest, parseNarHash } from '../../src/nix/hash.js';
import { nix32Encode } from '../../src/nix/nix32.js';
import { serializeNarInfo } from '../../src/nix/narinfo.js';
import { parseStorePath } from '../../src/nix/storePath.js';
import { chrootBuildFlags, describeNix, nix, nixEnv, tempDir } from '../helpers/nix.js';

async function run(input: Buffer, transform: NodeJS.ReadWriteStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  await pipeline(
    Readable.from([input]),
    transform,
    async function* (source: AsyncIterable<unknown>) {
      for await (const chunk of source) chunks.push(chunk as Buffer);
    },
  );
  return Buffer.concat(chunks);
}

/** Text, repeated text and incompressible bytes, as in a NAR of a package. */
const sample = Buffer.concat([Buffer.from('#!/bin/sh\nexec "$@"\n'.repeat(2000)), randomBytes(50_000), Buffer.from(JSON.stringify({ a: [1, 2, 3] }).repeat(500))]);

describe('compression at rest', () => {
  it('round-trips every method at its lowest, default and highest level', async () => {
    for (const method of COMPRESSION_METHODS) {
      const levels = method === 'none' ? [undefined] : [COMPRESSION_LEVELS[method].min, undefined, COMPRESSION_LEVELS[method].max];
      for (const level of levels) {
        const packed = await run(sample, compressStream(method, level));
        if (method !== 'none') expect(packed.length, `${method} ${level}`).toBeLessThan(sample.length);
        expect((await run(packed, decompressStream(method))).equals(sample), `${method} ${level}`).toBe(true);
      }
    }
  });

  it('refuses unknown methods and out-of-range levels, saying what is allowed', () => {
    expect(() => parseCompressionMethod('xz')).toThrow('compression must be one of none, gzip, br, got "xz"');
    expect(parseCompressionMethod('br')).toBe('br');
    expect(() => compressStream('br', 12)).toThrow('br level must be an integer from 0 to 11, got 12');
    expect(() => compressStream('gzip', 0)).toThrow('gzip level must be an integer from 1 to 9, got 0');
  });

  it('names files the way Nix does', () => {
    expect(COMPRESSION_METHODS.map((method) => `nar/x.nar${fileExtension(method)}`)).toEqual(['nar/x.nar', 'nar/x.nar.gz', 'nar/x.nar.br']);
  });
});

describeNix('Nix 2.8 substitutes NARs compressed by each method', () => {
  const dir = tempDir('compression');
  let path: string;
  let nar: Buffer;

  beforeAll(() => {
    const builder = join(dir, 'builder');
    writeFileSync(
      join(dir, 'x.nix'),
      'derivation { name = "compressed"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "/bin/mkdir -p $out/bin && /bin/cp /bin/ls $out/bin/ && /bin/echo data > $out/data" ]; }',
    );
    path = nix('nix-build', ['--store', builder, ...chrootBuildFlags, '--no-out-link', join(dir, 'x.nix')]).trim();
    nar = execFileSync('nix', ['store', 'dump-path', '--store', builder, path], { env: nixEnv, maxBuffer: 1 << 30 });
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it.each(COMPRESSION_METHODS.map((method) => [method]))('%s', async (method: CompressionMethod) => {
    // A binary cache holding just this path, written by us; a fresh client store substitutes it.
    const cache = join(dir, `cache-${method}`);
    mkdirSync(join(cache, 'nar'), { recursive: true });
    const file = await run(nar, compressStream(method));
    const fileHash = narHashFromDigest(createHash('sha256').update(file).digest());
    const url = `nar/${nix32Encode(createHash('sha256').update(file).digest())}.nar${fileExtension(method)}`;
    writeFileSync(join(cache, url), file);
    writeFileSync(join(cache, 'nix-cache-info'), 'StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n');
    const narHash = narHashFromDigest(createHash('sha256').update(nar).digest());
    writeFileSync(
      join(cache, `${path.slice(11, 43)}.narinfo`),
      serializeNarInfo({ storePath: parseStorePath(path), url, compression: method, fileHash, fileSize: file.length, narHash, narSize: nar.length, references: [], sigs: [] }),
    );
    const client = join(dir, `client-${method}`);
    nix('nix-store', ['--store', client, '-r', path, '--option', 'substituters', `file://${cache}`, '--option', 'require-sigs', 'false']);
    const substituted = execFileSync('nix', ['store', 'dump-path', '--store', client, path], { env: nixEnv, maxBuffer: 1 << 30 });
    expect(substituted.equals(nar)).toBe(true);
    expect(parseNarHash(JSON.parse(nix('nix', ['path-info', '--store', client, '--json', path]))[0].narHash)).toBe(narHash);
  });
});
