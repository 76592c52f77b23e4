import { createCipheriv } from 'node:crypto';
import { chmodSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';

/** mulberry32: tiny seeded PRNG, so a failing tree is rebuilt from its seed alone. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const MIB = 1024 * 1024;

/**
 * Names chosen to hit what differs between byte order and JS string order (U+FF5E sorts
 * after the emoji in UTF-16 but before it in UTF-8), case, digits, dots, whitespace,
 * control characters, invalid UTF-8 and the 255-byte limit.
 */
const ODD_NAMES: (string | Buffer)[] = [
  'a', 'A', 'b', 'B', '_', '-', '-rf', '~', '#x', '%', '*', '?', '\\', 'a b', ' lead', 'trail ', 'tab\there',
  'new\nline', '1', '10', '9', '..a', '.hidden', '...', 'a.b', 'a-b', 'a_b', 'aa', 'a\u00e9', 'e\u0301', '\u00e9',
  '\u03a9', '\u65e5\u672c', '\ud83d\ude00', '\uff5e', '\u200b', 'x'.repeat(255), '\u00e9'.repeat(127),
  Buffer.from([0xff, 0xfe]), Buffer.from([0x80]), Buffer.from([0x61, 0xc3]), Buffer.from([0x01, 0x7f]),
];

const SYMLINK_TARGETS = [
  '/nix/store/00000000000000000000000000000000-dangling', '/etc/passwd', '/', 'does/not/exist', '..', '.',
  '../../..', 'a b/c', '\u65e5\u672c/\ud83d\ude00', `/${'long/'.repeat(800)}end`, 'x'.repeat(4095),
];

const MODES = [0o644, 0o755, 0o700, 0o600, 0o444, 0o555, 0o711, 0o611, 0o100, 0o000, 0o4755];

/** Sizes around the writer's 1 MiB chunking and its 16 KiB headroom, and the 8-byte padding. */
const EDGE_SIZES = [MIB - 16 * 1024, MIB - 16 * 1024 + 1, MIB - 1, MIB, MIB + 1, 2 * MIB + 3];

export interface TreeOptions {
  /** Add one file of this many bytes (10 MB+ for the big-file cases). */
  bigFileBytes?: number;
  /** Add a chain of directories ending in a file at this depth (the root is depth 0). */
  chainDepth?: number;
  /** Add a directory of this many 0-8 KiB files, so the writer's 1 MiB chunks fill up mid-directory. */
  manyFiles?: number;
}

/**
 * Builds a random filesystem tree at `root` (which must not exist) from `seed`: mostly a
 * directory, sometimes a lone file or symlink. Returns a short description for messages.
 */
export function makeRandomTree(root: string, seed: number, options: TreeOptions = {}): string {
  const random = seededRandom(seed);
  const int = (n: number): number => Math.floor(random() * n);
  const pick = <T>(list: readonly T[]): T => list[int(list.length)]!;
  const key = Buffer.alloc(16);
  key.writeUInt32LE(seed >>> 0, 0);
  const keystream = createCipheriv('aes-128-ctr', key, Buffer.alloc(16));
  const bytes = (size: number): Buffer => keystream.update(Buffer.alloc(size));
  const stats = { files: 0, dirs: 0, links: 0, bytes: 0 };

  const fileSize = (): number => {
    const r = random();
    if (r < 0.15) return 0;
    if (r < 0.4) return 1 + int(16);
    if (r < 0.97) return int(6000);
    return pick(EDGE_SIZES);
  };
  const writeFile = (path: string | Buffer, size: number): void => {
    writeFileSync(path, bytes(size));
    chmodSync(path, pick(MODES));
    stats.files++;
    stats.bytes += size;
  };
  const writeLink = (path: string | Buffer): void => {
    symlinkSync(pick(SYMLINK_TARGETS), path);
    stats.links++;
  };
  const child = (dir: string | Buffer, name: string | Buffer): Buffer => Buffer.concat([Buffer.from(dir), Buffer.from('/'), Buffer.from(name)]);
  const fillDir = (dir: string | Buffer, depth: number): void => {
    mkdirSync(dir);
    stats.dirs++;
    const used = new Set<string>();
    const count = depth === 0 ? 3 + int(10) : int(depth > 3 ? 3 : 7);
    for (let i = 0; i < count; i++) {
      const name = random() < 0.5 ? pick(ODD_NAMES) : `n${int(1000)}`;
      const id = Buffer.from(name).toString('hex');
      if (used.has(id)) continue;
      used.add(id);
      const path = child(dir, name);
      const kind = random();
      if (kind < 0.55) writeFile(path, fileSize());
      else if (kind < 0.7) writeLink(path);
      else if (depth < 6) fillDir(path, depth + 1);
      else mkdirSync(path);
    }
  };

  const rootKind = Object.keys(options).length === 0 ? random() : 1;
  if (rootKind < 0.05) writeFile(root, fileSize());
  else if (rootKind < 0.1) writeLink(root);
  else fillDir(root, 0);

  if (options.chainDepth !== undefined) {
    // A chain hanging off the root: the root is depth 0, so the leaf file is at chainDepth.
    let dir: Buffer = Buffer.from(root);
    for (let depth = 1; depth < options.chainDepth; depth++) {
      dir = child(dir, depth % 2 === 0 ? 'd' : '\u00e9');
      mkdirSync(dir, { recursive: depth === 1 });
    }
    writeFileSync(child(dir, 'leaf'), bytes(3));
  }
  if (options.manyFiles !== undefined) {
    mkdirSync(`${root}/many`);
    for (let i = 0; i < options.manyFiles; i++) writeFile(`${root}/many/${i}`, int(8192));
  }
  if (options.bigFileBytes !== undefined) {
    const path = `${root}/big.bin`;
    writeFileSync(path, '');
    for (let done = 0; done < options.bigFileBytes; done += 4 * MIB) {
      writeFileSync(path, bytes(Math.min(4 * MIB, options.bigFileBytes - done)), { flag: 'a' });
    }
    chmodSync(path, 0o755);
  }
  return `seed ${seed}: ${stats.files} files, ${stats.dirs} dirs, ${stats.links} symlinks, ${stats.bytes} bytes`;
}
