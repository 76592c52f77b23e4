import { EMPTY_ROOT, nodeHash, type NodeReader, type StoredNode } from './merkle.js';

/**
 * The right edge of a growing Merkle tree: one hash per complete subtree, O(log n) memory.
 * Enough to know the RFC 9162 root at every size while leaves stream past, which is what an
 * auditor replaying millions of entries needs.
 */
export class TreeFrontier {
  private readonly levels: number[] = [];
  private readonly hashes: Buffer[] = [];
  size = 0;

  /** The frontier of a stored tree of `size` leaves: its complete subtrees, largest first (O(log n) reads). */
  static of(size: number, reader: NodeReader): TreeFrontier {
    const frontier = new TreeFrontier();
    let start = 0;
    // The largest power of two that fits what is left, leftmost first; no 32-bit operators (sizes exceed 2^31).
    for (let level = Math.floor(Math.log2(Math.max(1, size))) + 1; level >= 0; level--) {
      const width = 2 ** level;
      if (start + width > size) continue;
      frontier.levels.push(level);
      frontier.hashes.push(reader.node(level, start / width));
      start += width;
    }
    frontier.size = size;
    return frontier;
  }

  /**
   * Appends a leaf; with `created`, also hands over the complete nodes it completes (the leaf and
   * its new parents), which are what a MerkleLog stores for those leaves.
   */
  push(leafHash: Buffer, created?: StoredNode[]): void {
    let level = 0;
    let hash = leafHash;
    created?.push({ level: 0, index: this.size, hash });
    while (this.levels.length > 0 && this.levels[this.levels.length - 1] === level) {
      this.levels.pop();
      hash = nodeHash(this.hashes.pop()!, hash);
      level++;
      // Node (level, i) ends at this leaf: i = (size + 1) / 2^level - 1.
      created?.push({ level, index: (this.size + 1) / 2 ** level - 1, hash });
    }
    this.levels.push(level);
    this.hashes.push(hash);
    this.size++;
  }

  /** MTH of the leaves pushed so far: complete subtrees folded right to left. */
  root(): Buffer {
    if (this.hashes.length === 0) return EMPTY_ROOT;
    let hash = this.hashes[this.hashes.length - 1]!;
    for (let i = this.hashes.length - 2; i >= 0; i--) hash = nodeHash(this.hashes[i]!, hash);
    return hash;
  }
}
