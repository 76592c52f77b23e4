import type { Statement } from 'better-sqlite3';
import type { Db } from '../db.js';
import { QuorumError } from '../errors.js';
import { appendLeaves, consistencyProof, inclusionProof, leafHash, rootHash, type NodeReader, type StoredNode } from './merkle.js';

/**
 * The RFC 9162 tree over the attestations table, persisted as complete-subtree hashes
 * (merkle_nodes) so roots and proofs take O(log n) indexed reads.
 */
export class MerkleLog implements NodeReader {
  private readonly getNode: Statement<[number, number], { hash: Buffer }>;
  private readonly putNode: Statement<[number, number, Buffer]>;

  constructor(private readonly db: Db) {
    this.getNode = db.prepare('SELECT hash FROM merkle_nodes WHERE level = ? AND idx = ?');
    this.putNode = db.prepare('INSERT INTO merkle_nodes (level, idx, hash) VALUES (?, ?, ?)');
  }

  node(level: number, index: number): Buffer {
    const row = this.getNode.get(level, index);
    if (!row) throw new QuorumError('missing-node', `Merkle node level ${level} index ${index} is missing from the database`);
    return row.hash;
  }

  /** Current number of leaves. Leaves are appended densely, so the highest level-0 index + 1. */
  size(): number {
    const row = this.db.prepare('SELECT MAX(idx) AS m FROM merkle_nodes WHERE level = 0').get() as { m: number | null };
    return row.m === null ? 0 : row.m + 1;
  }

  /** Appends leaves (raw leaf bytes) at `size`; call inside the ingest transaction. */
  append(size: number, leaves: Buffer[]): void {
    this.appendNodes(appendLeaves(size, leaves.map(leafHash), this));
  }

  /** Stores the complete nodes of appended leaves, computed by the caller (a TreeFrontier replaying them). */
  appendNodes(nodes: readonly StoredNode[]): void {
    for (const n of nodes) this.putNode.run(n.level, n.index, n.hash);
  }

  root(size: number): Buffer {
    return rootHash(size, this);
  }

  inclusionProof(index: number, size: number): Buffer[] {
    return inclusionProof(index, size, this);
  }

  consistencyProof(first: number, second: number): Buffer[] {
    return consistencyProof(first, second, this);
  }
}
