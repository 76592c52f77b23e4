import { describe, expect, it } from 'vitest';
import { diffListings } from '../../src/nars/diff.js';
import type { NarEntry } from '../../src/nix/nar/listing.js';

const dir = (path: string): NarEntry => ({ path, type: 'directory' });
const file = (path: string, sha256: string, size = 4, narOffset = 100): NarEntry => ({ path, type: 'regular', size, sha256, narOffset });

describe('diffListings', () => {
  it('names the files that differ in contents, size, mode, type or presence, ignoring NAR offsets', () => {
    const a = [dir(''), file('bin/x', 'aa', 4, 100), file('same', 'ss', 2, 200), file('time', 't1'), { path: 'link', type: 'symlink', target: 'x' } as NarEntry, file('only-a', 'oa')];
    const b = [dir(''), file('bin/x', 'aa', 4, 900), file('same', 'ss', 2, 999), file('time', 't2'), { path: 'link', type: 'symlink', target: 'y' } as NarEntry, { ...file('mode', 'm'), executable: true }];
    const { files, total } = diffListings([a, b]);
    expect(total).toBe(4);
    expect(files.map((f) => f.path)).toEqual(['link', 'mode', 'only-a', 'time']);
    expect(files.find((f) => f.path === 'time')!.versions).toEqual([
      { type: 'regular', size: 4, sha256: 't1' },
      { type: 'regular', size: 4, sha256: 't2' },
    ]);
    expect(files.find((f) => f.path === 'only-a')!.versions[1]).toBeNull();
    expect(files.find((f) => f.path === 'mode')!.versions).toEqual([null, { type: 'regular', size: 4, sha256: 'm', executable: true }]);
  });

  it('finds nothing between equal listings, and caps what it lists but not what it counts', () => {
    const many = (tag: string) => [dir(''), ...Array.from({ length: 30 }, (_, i) => file(`f${String(i).padStart(2, '0')}`, `${tag}${i}`))];
    expect(diffListings([many('x'), many('x')])).toEqual({ files: [], total: 0 });
    const { files, total } = diffListings([many('x'), many('y'), many('x')], 10);
    expect(total).toBe(30);
    expect(files).toHaveLength(10);
    expect(files[0]).toEqual({ path: 'f00', versions: [{ type: 'regular', size: 4, sha256: 'x0' }, { type: 'regular', size: 4, sha256: 'y0' }, { type: 'regular', size: 4, sha256: 'x0' }] });
  });
});
