import type { NarEntry } from '../nix/nar/listing.js';

/** What a file is in one content: everything of its NAR entry but its offset (which moves whenever an earlier file's size does). */
export interface FileVersion {
  type: NarEntry['type'];
  size?: number;
  executable?: boolean;
  sha256?: string;
  target?: string;
}

export interface FileDifference {
  path: string;
  /** One per listing compared, in their order; null where that content has no such file. */
  versions: Array<FileVersion | null>;
}

/** Differences past this many are counted, not listed: a rebuilt compiler may differ in every file. */
export const MAX_LISTED_DIFFERENCES = 1000;

function versionOf(e: NarEntry): FileVersion {
  return {
    type: e.type,
    ...(e.size !== undefined ? { size: e.size } : {}),
    ...(e.executable ? { executable: true } : {}),
    ...(e.sha256 !== undefined ? { sha256: e.sha256 } : {}),
    ...(e.target !== undefined ? { target: e.target } : {}),
  };
}

const same = (a: FileVersion | null, b: FileVersion | null) => JSON.stringify(a) === JSON.stringify(b);

/**
 * The files that are not the same in every listing (missing in some, or another type, size, mode,
 * contents or target), in path order; at most `max` of them, with how many there are in all.
 */
export function diffListings(listings: ReadonlyArray<readonly NarEntry[]>, max = MAX_LISTED_DIFFERENCES): { files: FileDifference[]; total: number } {
  const byPath = new Map<string, Array<FileVersion | null>>();
  listings.forEach((entries, i) => {
    for (const e of entries) {
      let versions = byPath.get(e.path);
      if (!versions) byPath.set(e.path, (versions = listings.map(() => null)));
      versions[i] = versionOf(e);
    }
  });
  const files: FileDifference[] = [];
  let total = 0;
  for (const path of [...byPath.keys()].sort()) {
    const versions = byPath.get(path)!;
    if (versions.every((v) => same(v, versions[0]!))) continue;
    total++;
    if (files.length < max) files.push({ path, versions });
  }
  return { files, total };
}
