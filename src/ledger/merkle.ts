import { createHash } from 'node:crypto';
import { QuorumError } from '../errors.js';

/**
 * The RFC 9162 (section 2.1) Merkle tree of the ledger, independent of storage.
 *
 * Storage model: the store keeps the hash of every COMPLETE, aligned subtree. Node (level, index)
 * covers leaves [index * 2^level, (index + 1) * 2^level); level 0 is the leaf hash. A complete node
 * never changes once its last leaf is appended, so the store is append-only. Any other subtree hash
 * (the right edge of a tree whose size is not a power of two) is computed on demand from at most
 * one complete node per level, so roots and proofs take O(log n) reads and never load the tree.
 *
 * Sizes and indices are plain numbers up to 2^53 - 1 and never go through JS bitwise operators
 * (which truncate to 32 bits): halving is Math.floor(x / 2), bit tests are x % 2.
 */

export const HASH_SIZE = 32;

/** RFC 9162 MTH({}) = SHA-256 of the empty string. */
export const EMPTY_ROOT: Buffer = createHash('sha256').digest();

const LEAF_PREFIX = Buffer.from([0x00]);
const NODE_PREFIX = Buffer.from([0x01]);

/** SHA-256(0x00 || leaf): the hash of one log entry. */
export function leafHash(leaf: Uint8Array): Buffer {
  return createHash('sha256').update(LEAF_PREFIX).update(leaf).digest();
}

/** SHA-256(0x01 || left || right): an interior node. */
export function nodeHash(left: Uint8Array, right: Uint8Array): Buffer {
  return createHash('sha256').update(NODE_PREFIX).update(left).update(right).digest();
}

/** Reads the hash of a complete subtree; throws if the store does not have it. */
export interface NodeReader {
  node(level: number, index: number): Buffer;
}

export interface StoredNode {
  level: number;
  index: number;
  hash: Buffer;
}

/**
 * The complete nodes that appear when `leafHashes` are appended to a tree of `size` leaves:
 * each new leaf, then every parent it completes. Nodes created earlier in the same batch are
 * read from the batch itself; only the existing tree's right edge is read from `reader`.
 */
export function appendLeaves(size: number, leafHashes: readonly Buffer[], reader: NodeReader): StoredNode[] {
  checkCount(size, 'size');
  const created: StoredNode[] = [];
  const batch = new Map<string, Buffer>();
  const read = (level: number, index: number): Buffer => batch.get(`${level}/${index}`) ?? reader.node(level, index);
  leafHashes.forEach((hash, offset) => {
    checkHash(hash, `leafHashes[${offset}]`);
    let level = 0;
    let index = size + offset;
    let node = hash;
    for (;;) {
      created.push({ level, index, hash: node });
      batch.set(`${level}/${index}`, node);
      // A left child (even index) waits for its sibling; a right child completes its parent.
      if (index % 2 === 0) break;
      node = nodeHash(read(level, index - 1), node);
      level += 1;
      index = (index - 1) / 2;
    }
  });
  return created;
}

/** MTH(D[0:size]) from the stored complete nodes. */
export function rootHash(size: number, reader: NodeReader): Buffer {
  checkCount(size, 'size');
  return size === 0 ? EMPTY_ROOT : subtreeHash(0, size, reader);
}

/** RFC 9162 2.1.3.1 PATH(index, D[0:size]), leaf-side sibling first. */
export function inclusionProof(index: number, size: number, reader: NodeReader): Buffer[] {
  checkCount(size, 'size');
  checkCount(index, 'index');
  if (index >= size) throw new QuorumError('bad-range', `leaf index ${index} is not in a tree of ${size} leaves; ask for an index below the tree size`, { field: 'index' });
  // Walk PATH's recursion from the root down, collecting the sibling of each step; RFC order is bottom-up.
  const siblings: Buffer[] = [];
  let start = 0;
  let end = size;
  while (end - start > 1) {
    const split = start + largestPowerOfTwoBelow(end - start);
    if (index < split) {
      siblings.push(subtreeHash(split, end, reader));
      end = split;
    } else {
      siblings.push(subtreeHash(start, split, reader));
      start = split;
    }
  }
  return siblings.reverse();
}

/**
 * RFC 9162 2.1.4.1 PROOF(first, D[0:second]) = SUBPROOF(first, D[0:second], true).
 * Empty when first == second or first == 0: there is nothing to prove (see verifyConsistency).
 */
export function consistencyProof(first: number, second: number, reader: NodeReader): Buffer[] {
  checkCount(first, 'first');
  checkCount(second, 'second');
  if (first > second) throw new QuorumError('bad-range', `consistency from ${first} to ${second} leaves: the first tree size must not exceed the second`, { field: 'first' });
  if (first === 0 || first === second) return [];
  // Walk SUBPROOF's recursion from the root down. `whole` is its flag b: true while the subtree starts
  // at leaf 0, where the old tree's root is the verifier's own first_hash and need not be sent.
  const hashes: Buffer[] = [];
  let start = 0;
  let end = second;
  let whole = true;
  while (first !== end) {
    const split = start + largestPowerOfTwoBelow(end - start);
    if (first <= split) {
      hashes.push(subtreeHash(split, end, reader));
      end = split;
    } else {
      hashes.push(subtreeHash(start, split, reader));
      start = split;
      whole = false;
    }
  }
  // SUBPROOF(m, D[m], b): nothing when the old tree is this subtree itself, else its hash.
  if (!whole) hashes.push(subtreeHash(start, end, reader));
  return hashes.reverse();
}

/**
 * Verifies an inclusion proof per RFC 9162 2.1.3.2; throws QuorumError 'bad-proof' saying what failed.
 * `leafHash` is the leaf's hash (leafHash(entry)), not the entry itself.
 */
export function verifyInclusion(leafHashValue: Uint8Array, index: number, size: number, proof: readonly Uint8Array[], root: Uint8Array): void {
  checkProofCount(index, 'index');
  checkProofCount(size, 'size');
  checkProofHash(leafHashValue, 'leaf hash');
  checkProofHash(root, 'root hash');
  proof.forEach((hash, i) => checkProofHash(hash, `inclusion proof hash ${i}`));

  // 1. leaf_index must be below tree_size.
  if (index >= size) badProof(`leaf index ${index} is not below the tree size ${size}`);
  // 2. fn = leaf_index, sn = tree_size - 1.
  let fn = index;
  let sn = size - 1;
  // 3. r = hash.
  let r: Buffer = Buffer.from(leafHashValue);
  // 4. Fold in each proof hash p.
  for (const p of proof) {
    // 4a. A proof longer than the path to the root fails.
    if (sn === 0) badProof(`inclusion proof has ${proof.length} hashes, more than leaf ${index} of a ${size}-leaf tree needs`);
    // 4b. p is a left sibling when fn is a right child or on the right edge (fn == sn).
    if (fn % 2 === 1 || fn === sn) {
      r = nodeHash(p, r);
      // Climb past levels where this node has no right sibling (right edge of an unbalanced tree).
      if (fn % 2 === 0) {
        while (!(fn % 2 === 1 || fn === 0)) {
          fn = Math.floor(fn / 2);
          sn = Math.floor(sn / 2);
        }
      }
    } else {
      r = nodeHash(r, p);
    }
    // 4c. Up one level.
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  // 5. sn must have reached the root, and r must equal the root hash.
  if (sn !== 0) badProof(`inclusion proof has ${proof.length} hashes, too few for leaf ${index} of a ${size}-leaf tree`);
  if (!r.equals(root)) badProof(`inclusion proof for leaf ${index} of a ${size}-leaf tree leads to root ${r.toString('base64')}, not the expected ${Buffer.from(root).toString('base64')}`);
}

/**
 * Verifies that the tree of `second` leaves with `secondRoot` extends the tree of `first` leaves
 * with `firstRoot`, per RFC 9162 2.1.4.2; throws QuorumError 'bad-proof' saying what failed.
 *
 * RFC 9162 defines proofs only for 0 < first < second. The two trivial cases are accepted with an
 * EMPTY proof only: first == second when the roots are equal, and first == 0 when firstRoot is the
 * empty-tree root (the empty tree is a prefix of every tree; like Sigsum, unlike transparency-dev/merkle,
 * which rejects first == 0, so an auditor whose last seen checkpoint was the empty log needs no special
 * case). Neither case says anything about secondRoot beyond that: check it against a signed checkpoint.
 */
export function verifyConsistency(first: number, second: number, proof: readonly Uint8Array[], firstRoot: Uint8Array, secondRoot: Uint8Array): void {
  checkProofCount(first, 'first size');
  checkProofCount(second, 'second size');
  checkProofHash(firstRoot, 'first root hash');
  checkProofHash(secondRoot, 'second root hash');
  proof.forEach((hash, i) => checkProofHash(hash, `consistency proof hash ${i}`));

  if (first > second) badProof(`the first tree size ${first} exceeds the second tree size ${second}`);
  if (first === 0 && !EMPTY_ROOT.equals(firstRoot)) badProof(`a tree of 0 leaves must have the empty root ${EMPTY_ROOT.toString('base64')}`);
  if (first === 0 || first === second) {
    if (proof.length !== 0) badProof(`consistency from ${first} to ${second} leaves needs an empty proof, got ${proof.length} hashes`);
    if (first === second && !Buffer.from(firstRoot).equals(secondRoot)) badProof(`two trees of ${first} leaves have different roots: the log forked`);
    return;
  }

  // 1. An empty consistency_path fails.
  if (proof.length === 0) badProof(`consistency proof from ${first} to ${second} leaves is empty`);
  // 2. When first is an exact power of 2 the old root is itself a node on the path: prepend it.
  const path = isPowerOfTwo(first) ? [firstRoot, ...proof] : [...proof];
  // 3. fn = first - 1, sn = second - 1.
  let fn = first - 1;
  let sn = second - 1;
  // 4. Skip the levels where the old tree's last leaf is a right child (those nodes are not in the proof).
  while (fn % 2 === 1) {
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  // 5. fr and sr both start at the first path value.
  let fr: Buffer = Buffer.from(path[0]!);
  let sr: Buffer = Buffer.from(path[0]!);
  // 6. Fold in each subsequent value c.
  for (const c of path.slice(1)) {
    // 6a. A proof longer than the path to the new root fails.
    if (sn === 0) badProof(`consistency proof from ${first} to ${second} leaves has ${proof.length} hashes, too many`);
    // 6b. c is a left sibling: it belongs to both trees.
    if (fn % 2 === 1 || fn === sn) {
      fr = nodeHash(c, fr);
      sr = nodeHash(c, sr);
      if (fn % 2 === 0) {
        while (!(fn % 2 === 1 || fn === 0)) {
          fn = Math.floor(fn / 2);
          sn = Math.floor(sn / 2);
        }
      }
    } else {
      // 6b otherwise: c is a right sibling, only in the new tree.
      sr = nodeHash(sr, c);
    }
    // 6c. Up one level.
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  // 7. The path must reach the new root, and both computed roots must match.
  if (sn !== 0) badProof(`consistency proof from ${first} to ${second} leaves has ${proof.length} hashes, too few`);
  if (!fr.equals(firstRoot)) badProof(`consistency proof from ${first} to ${second} leaves does not lead to the first root ${Buffer.from(firstRoot).toString('base64')}`);
  if (!sr.equals(secondRoot)) badProof(`consistency proof from ${first} to ${second} leaves does not lead to the second root ${Buffer.from(secondRoot).toString('base64')}`);
}

/** An in-memory NodeReader, e.g. for an auditor rebuilding the tree from fetched entries. */
export class MemoryNodeStore implements NodeReader {
  private readonly nodes = new Map<string, Buffer>();

  add(nodes: Iterable<StoredNode>): void {
    for (const { level, index, hash } of nodes) this.nodes.set(`${level}/${index}`, hash);
  }

  node(level: number, index: number): Buffer {
    const hash = this.nodes.get(`${level}/${index}`);
    if (!hash) throw new QuorumError('missing-node', `Merkle node level ${level} index ${index} is not in the in-memory store`);
    return hash;
  }
}

/**
 * MTH(D[start:end]) for a subtree of PATH/SUBPROOF's recursion, where start is a multiple of the
 * smallest power of two >= end - start. Such a range splits into complete nodes of strictly
 * decreasing size from the left, and its hash folds them from the right (MTH's left part is
 * always the largest complete power of two).
 */
function subtreeHash(start: number, end: number, reader: NodeReader): Buffer {
  const parts: Buffer[] = [];
  let at = start;
  while (at < end) {
    let width = 1;
    let level = 0;
    while (at % (width * 2) === 0 && at + width * 2 <= end) {
      width *= 2;
      level += 1;
    }
    parts.push(reader.node(level, at / width));
    at += width;
  }
  let hash = parts.pop()!;
  while (parts.length > 0) hash = nodeHash(parts.pop()!, hash);
  return hash;
}

/** The largest power of two strictly below n (n >= 2): RFC 9162's k. */
function largestPowerOfTwoBelow(n: number): number {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

function isPowerOfTwo(n: number): boolean {
  let k = 1;
  while (k < n) k *= 2;
  return k === n;
}

function checkCount(n: number, field: string): void {
  if (!Number.isSafeInteger(n) || n < 0) throw new QuorumError('bad-range', `${field} must be a whole number from 0 to 2^53-1, got ${n}`, { field });
}

function checkHash(hash: Uint8Array, field: string): void {
  if (hash.length !== HASH_SIZE) throw new QuorumError('bad-hash', `${field} must be a ${HASH_SIZE}-byte SHA-256 hash, got ${hash.length} bytes`, { field });
}

// Verifier inputs come from a server under audit: every malformed value is a failed proof.
function checkProofCount(n: number, what: string): void {
  if (!Number.isSafeInteger(n) || n < 0) badProof(`${what} must be a whole number from 0 to 2^53-1, got ${n}`);
}

function checkProofHash(hash: Uint8Array, what: string): void {
  if (!(hash instanceof Uint8Array) || hash.length !== HASH_SIZE) badProof(`${what} must be ${HASH_SIZE} bytes, got ${hash instanceof Uint8Array ? hash.length : typeof hash}`);
}

function badProof(message: string): never {
  throw new QuorumError('bad-proof', message);
}
