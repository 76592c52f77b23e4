import { createHash } from 'node:crypto';
import { lstatSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync, mkdirSync, symlinkSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { dumpNar, encodeString, encodeStrings, NarParser, nixListingJson, type NarEntry } from '../../../src/nix/nar/index.js';
import { describeNix, nix, tempDir } from '../../helpers/nix.js';
import { makeRandomTree } from './randomTree.js';

async function narOf(path: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of dumpNar(path)) chunks.push(Buffer.from(chunk));
  return Buffer.concat(chunks);
}

function listingOf(nar: Buffer, chunk = nar.length, options: { maxListed?: number } = {}): readonly NarEntry[] | undefined {
  const parser = new NarParser({ listing: true, ...options });
  for (let i = 0; i < nar.length; i += chunk) parser.update(nar.subarray(i, i + chunk));
  parser.finish();
  return parser.listing;
}

/** The oracle: the filesystem itself, walked in NAR order (names sorted by bytes), contents hashed from disk. */
function walk(root: string, path = ''): Array<Omit<NarEntry, 'narOffset'>> {
  const full = path === '' ? root : Buffer.concat([Buffer.from(root), Buffer.from('/'), Buffer.from(path, 'latin1')]).toString('latin1');
  const st = lstatSync(Buffer.from(full, 'latin1'));
  const name = Buffer.from(path, 'latin1').toString('utf8');
  if (st.isSymbolicLink()) return [{ path: name, type: 'symlink', target: readlinkSync(Buffer.from(full, 'latin1'), { encoding: 'buffer' }).toString('utf8') }];
  if (st.isFile()) {
    const contents = readFileSync(Buffer.from(full, 'latin1'));
    return [{ path: name, type: 'regular', size: contents.length, ...(st.mode & 0o100 ? { executable: true } : {}), sha256: createHash('sha256').update(contents).digest('hex') }];
  }
  const children = (readdirSync(Buffer.from(full, 'latin1'), { encoding: 'buffer' }) as Buffer[]).sort(Buffer.compare);
  return [{ path: name, type: 'directory' }, ...children.flatMap((c) => walk(root, path === '' ? c.toString('latin1') : `${path}/${c.toString('latin1')}`))];
}

const withoutOffsets = (entries: readonly NarEntry[]) => entries.map(({ narOffset: _, ...e }) => e);

describe('NAR listing made while parsing', () => {
  const dirs: string[] = [];
  afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

  it('records every file with its type, size, mode, contents hash and offset, whatever the chunking', () => {
    const contents = 'echo hi\n';
    const tokens = ['nix-archive-1', '(', 'type', 'directory', 'entry', '(', 'name', 'bin', 'node', '(', 'type', 'directory', 'entry', '(', 'name', 'hello', 'node', '(', 'type', 'regular', 'executable', '', 'contents', contents, ')', ')', ')', ')', 'entry', '(', 'name', 'link', 'node', '(', 'type', 'symlink', 'target', '../x', ')', ')', ')'];
    const nar = encodeStrings(...tokens);
    // The contents' length field starts after every token before it; the bytes 8 further on.
    const contentsAt = tokens.slice(0, tokens.indexOf(contents)).reduce((n, t) => n + encodeString(t).length, 0) + 8;
    const expected: NarEntry[] = [
      { path: '', type: 'directory' },
      { path: 'bin', type: 'directory' },
      { path: 'bin/hello', type: 'regular', executable: true, size: 8, narOffset: contentsAt, sha256: createHash('sha256').update(contents).digest('hex') },
      { path: 'link', type: 'symlink', target: '../x' },
    ];
    for (const chunk of [1, 7, 8, 64, nar.length]) expect(listingOf(nar, chunk), `chunks of ${chunk}`).toEqual(expected);
    expect(nar.subarray(contentsAt, contentsAt + 8).toString()).toBe(contents);
    expect(nixListingJson(expected)).toBe(
      `{"version":1,"root":{"type":"directory","entries":{"bin":{"type":"directory","entries":{"hello":{"type":"regular","size":8,"executable":true,"narOffset":${contentsAt}}}},"link":{"type":"symlink","target":"../x"}}}}`,
    );
  });

  it('equals the filesystem it was dumped from, for random trees of odd names, modes and sizes', async () => {
    for (const seed of [1, 2, 3, 4, 5, 6]) {
      const dir = tempDir('listing');
      dirs.push(dir);
      const root = join(dir, 'tree');
      makeRandomTree(root, seed, { manyFiles: seed === 6 ? 300 : undefined });
      const nar = await narOf(root);
      const listing = listingOf(nar, 65536)!;
      expect(withoutOffsets(listing), `seed ${seed}`).toEqual(walk(root));
      // Each offset points at the file's contents in the NAR.
      for (const e of listing.filter((x) => x.type === 'regular' && x.size! > 0)) {
        expect(createHash('sha256').update(nar.subarray(e.narOffset!, e.narOffset! + e.size!)).digest('hex')).toBe(e.sha256);
      }
    }
  });

  it('keeps directory entries in byte order in the JSON, as Nix does (a JS object would put "10" before "2")', () => {
    const entries: NarEntry[] = [{ path: '', type: 'directory' }, ...['10', '2', 'a'].map((n): NarEntry => ({ path: n, type: 'symlink', target: 't' }))];
    expect(nixListingJson(entries)).toBe('{"version":1,"root":{"type":"directory","entries":{"10":{"type":"symlink","target":"t"},"2":{"type":"symlink","target":"t"},"a":{"type":"symlink","target":"t"}}}}');
  });

  it('lists nothing for a NAR of more files than it may keep, and still verifies it', () => {
    const dir = tempDir('listing-many');
    dirs.push(dir);
    mkdirSync(join(dir, 'many'));
    for (let i = 0; i < 20; i++) writeFileSync(join(dir, 'many', `f${i}`), `${i}`);
    return narOf(join(dir, 'many')).then((nar) => {
      expect(listingOf(nar, nar.length, { maxListed: 21 })).toHaveLength(21);
      expect(listingOf(nar, nar.length, { maxListed: 20 })).toBeUndefined();
    });
  });
});

describeNix('NAR listing against Nix (nix store ls --json on a local store)', () => {
  it('gives the tree `nix store ls --json -R` prints, less the offsets a local store does not know', async () => {
    const dir = tempDir('listing-nix');
    try {
      const src = join(dir, 'src');
      mkdirSync(join(src, 'bin'), { recursive: true });
      writeFileSync(join(src, 'bin', 'tool'), '#!/bin/sh\necho tool\n');
      chmodSync(join(src, 'bin', 'tool'), 0o755);
      writeFileSync(join(src, 'empty'), '');
      writeFileSync(join(src, 'data'), Buffer.alloc(100_000, 7));
      symlinkSync('bin/tool', join(src, 'link'));
      for (const n of ['10', '2', 'Z', 'a']) writeFileSync(join(src, n), n);
      const store = join(dir, 'store');
      const path = nix('nix-store', ['--store', store, '--add', src]).trim();
      const ours = JSON.parse(nixListingJson(listingOf(await narOf(src))!)) as { version: number; root: unknown };
      const theirs = JSON.parse(nix('nix', ['--store', store, 'store', 'ls', '--json', '-R', path])) as unknown;
      const stripOffsets = (v: unknown): unknown => JSON.parse(JSON.stringify(v, (k, x: unknown) => (k === 'narOffset' ? undefined : x)));
      expect(ours.version).toBe(1);
      expect(stripOffsets(ours.root)).toEqual(theirs);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
