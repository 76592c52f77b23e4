/**
 * The files of a NAR, as NarParser records them with `listing`, and Nix's JSON listing of them
 * (the `<hashPart>.ls` file `nix copy` writes with `write-nar-listing`, src/libstore/nar-accessor.cc
 * listNar in Nix 2.8).
 */

/** One file of a NAR. `path` is relative to the root ('' is the root itself), names joined by '/'. */
export interface NarEntry {
  path: string;
  type: 'regular' | 'directory' | 'symlink';
  /** Regular files: bytes of contents. */
  size?: number;
  executable?: boolean;
  /** Regular files: offset of the first byte of contents in the NAR. */
  narOffset?: number;
  /** Regular files: SHA-256 of the contents, hex. */
  sha256?: string;
  /** Symlinks. */
  target?: string;
}

interface Node {
  entry: NarEntry;
  children: Node[];
}

/** The entries as a tree; NAR order (depth first, names sorted) puts every parent before its children. */
function tree(entries: readonly NarEntry[]): Node {
  const byPath = new Map<string, Node>();
  let root: Node | undefined;
  for (const entry of entries) {
    const node = { entry, children: [] };
    byPath.set(entry.path, node);
    if (entry.path === '') {
      root = node;
      continue;
    }
    const slash = entry.path.lastIndexOf('/');
    byPath.get(slash === -1 ? '' : entry.path.slice(0, slash))!.children.push(node);
  }
  if (!root) throw new Error('a NAR listing has a root entry');
  return root;
}

const nameOf = (path: string) => path.slice(path.lastIndexOf('/') + 1);

/**
 * Nix's JSON for one node, with its keys in Nix's order and directory entries in byte order, as
 * listNar writes them (a JS object would put names such as "10" before "2").
 */
function nodeJson(node: Node): string {
  const e = node.entry;
  switch (e.type) {
    case 'regular':
      return `{"type":"regular","size":${e.size}${e.executable ? ',"executable":true' : ''},"narOffset":${e.narOffset}}`;
    case 'symlink':
      return `{"type":"symlink","target":${JSON.stringify(e.target)}}`;
    case 'directory':
      return `{"type":"directory","entries":{${node.children.map((c) => `${JSON.stringify(nameOf(c.entry.path))}:${nodeJson(c)}`).join(',')}}}`;
  }
}

/** The `.ls` file: `{"version":1,"root":{…}}`. */
export function nixListingJson(entries: readonly NarEntry[]): string {
  return `{"version":1,"root":${nodeJson(tree(entries))}}`;
}
