import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QuorumError } from '../../../src/errors.js';
import { parseNarHash, type NarHash } from '../../../src/nix/hash.js';
import { dumpNar, hashPath, MAX_DEPTH, verifyNar } from '../../../src/nix/nar/index.js';
import { describeNix, nixEnv, tempDir } from '../../helpers/nix.js';
import { makeRandomTree, seededRandom, type TreeOptions } from './randomTree.js';

const TREES = 200;

/** A few seeds get the expensive shapes; the rest are plain random trees. */
function optionsFor(seed: number): TreeOptions {
  if (seed === 0) return { bigFileBytes: 12 * 1024 * 1024 };
  if (seed === 1) return { bigFileBytes: 10 * 1024 * 1024 + 5 };
  if (seed === 2) return { chainDepth: MAX_DEPTH - 1 };
  if (seed === 3) return { chainDepth: 40 };
  if (seed === 4) return { manyFiles: 1000 };
  return {};
}

async function collect(source: AsyncIterable<Buffer>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of source) chunks.push(chunk);
  return Buffer.concat(chunks);
}

/** Re-chunks bytes at random boundaries, so the parser sees splits everywhere. */
async function* randomPieces(bytes: Buffer, seed: number): AsyncGenerator<Uint8Array> {
  const random = seededRandom(seed);
  for (let at = 0; at < bytes.length; ) {
    const size = 1 + Math.floor(random() * (random() < 0.5 ? 16 : 200_000));
    yield bytes.subarray(at, at + size);
    at += size;
  }
}

function nixDump(path: string): Buffer {
  return execFileSync('nix-store', ['--dump', path], { env: nixEnv, maxBuffer: 256 * 1024 * 1024 });
}

function firstDifference(a: Buffer, b: Buffer): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return n;
}

describeNix('dumpNar and hashPath match nix-store --dump and nix hash path', () => {
  let dir = '';
  const trees: { root: string; description: string }[] = [];
  const nixHashes: NarHash[] = [];

  beforeAll(() => {
    dir = tempDir('nar-trees');
    for (let seed = 0; seed < TREES; seed++) {
      const root = join(dir, `t${seed}`);
      trees.push({ root, description: makeRandomTree(root, seed, optionsFor(seed)) });
    }
    // One `nix hash path` for all trees; it prints one SRI hash per path, in order.
    const lines = execFileSync('nix', ['hash', 'path', '--type', 'sha256', ...trees.map((t) => t.root)], {
      env: nixEnv,
      encoding: 'utf8',
    })
      .trim()
      .split('\n');
    expect(lines).toHaveLength(TREES);
    for (const line of lines) nixHashes.push(parseNarHash(line));
  });

  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it.each(Array.from({ length: TREES }, (_, seed) => seed))('random tree, seed %i', async (seed) => {
    const { root, description } = trees[seed]!;
    const theirs = nixDump(root);
    const ours = await collect(dumpNar(root));
    if (!ours.equals(theirs)) {
      expect.fail(
        `${description}: our NAR (${ours.length} bytes) differs from nix-store --dump (${theirs.length} bytes) at byte ${firstDifference(ours, theirs)}`,
      );
    }
    const expected = { narHash: nixHashes[seed], narSize: theirs.length };
    expect(await hashPath(root), description).toEqual(expected);
    expect(await verifyNar(dumpNar(root)), description).toEqual(expected);
    expect(await verifyNar(randomPieces(theirs, seed)), description).toEqual(expected);
  });

  it('refuses nesting at Nix\'s maximum depth, both dumping and parsing (Nix 2.8 still dumps it)', async () => {
    const root = join(dir, 'too-deep');
    let path = root;
    for (let depth = 0; depth <= MAX_DEPTH; depth++) {
      mkdirSync(path);
      path = join(path, 'd');
    }
    const dumping = collect(dumpNar(root));
    await expect(dumping).rejects.toThrow(QuorumError);
    await expect(dumping).rejects.toThrow(/maximum NAR directory depth of 64/);
    const parsing = verifyNar(randomPieces(nixDump(root), 1));
    await expect(parsing).rejects.toMatchObject({ code: 'bad-nar' });
    await expect(parsing).rejects.toThrow(/exceeds the maximum NAR depth of 64/);
  });
});

describe('dumpNar edge cases', () => {
  let dir = '';
  beforeAll(() => {
    dir = tempDir('nar-dump');
  });
  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it('names a missing path', async () => {
    const missing = join(dir, 'missing');
    await expect(collect(dumpNar(missing))).rejects.toMatchObject({
      code: 'nar-dump',
      message: expect.stringContaining(missing),
    });
  });

  it('refuses a FIFO, as Nix does', async () => {
    const fifo = join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    await expect(collect(dumpNar(dir))).rejects.toMatchObject({
      code: 'nar-dump',
      message: expect.stringMatching(/fifo is neither a regular file, a directory nor a symlink/),
    });
    rmSync(fifo);
  });

  it('reports a file that shrinks between lstat and read', async () => {
    const root = join(dir, 'shrinking');
    mkdirSync(root);
    const file = join(root, 'big');
    writeFileSync(file, Buffer.alloc(3 * 1024 * 1024, 1));
    const chunks = dumpNar(root);
    // The first chunk holds everything up to the big file's size field: lstat is done, reading is not.
    await chunks.next();
    truncateSync(file, 1000);
    await expect(chunks.next()).rejects.toMatchObject({
      code: 'nar-dump',
      message: `${file} shrank while being dumped: expected ${3 * 1024 * 1024} bytes, found only 1000`,
    });
  });

  it('lets the event loop run during a long dump', async () => {
    const big = join(dir, 'long');
    writeFileSync(big, Buffer.alloc(40 * 1024 * 1024, 2));
    let loopRan = false;
    setImmediate(() => {
      loopRan = true;
    });
    let bytesBeforeLoopRan = 0;
    let total = 0;
    for await (const chunk of dumpNar(big, { reuseBuffers: true })) {
      if (!loopRan) bytesBeforeLoopRan += chunk.length;
      total += chunk.length;
    }
    expect(loopRan).toBe(true);
    expect(bytesBeforeLoopRan).toBeLessThan(total / 2);
  });

  it('closes the file when the consumer stops in the middle of a large file', async () => {
    const big = join(dir, 'big');
    writeFileSync(big, Buffer.alloc(5 * 1024 * 1024, 1));
    const openFds = (): number => readdirSync('/proc/self/fd').length;
    const before = openFds();
    let seen = 0;
    for await (const chunk of dumpNar(big)) {
      seen += chunk.length;
      if (seen > 2 * 1024 * 1024) break;
    }
    expect(seen).toBeGreaterThan(2 * 1024 * 1024);
    expect(openFds()).toBe(before);
  });
});
