import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { QuorumError } from '../../src/errors.js';
import { TreeFrontier } from '../../src/ledger/frontier.js';
import {
  EMPTY_ROOT,
  MemoryNodeStore,
  appendLeaves,
  consistencyProof,
  inclusionProof,
  leafHash,
  nodeHash,
  rootHash,
  verifyConsistency,
  verifyInclusion,
  type NodeReader,
  type StoredNode,
} from '../../src/ledger/merkle.js';

// ---------------------------------------------------------------------------------------------
// Reference: RFC 9162 section 2.1 written as its recursive definitions (MTH, PATH, SUBPROOF), with
// its own hashing, sharing nothing with src/ledger/merkle.ts. Its verifiers rebuild the roots by
// running PATH / SUBPROOF's recursion backwards, not by the RFC's iterative steps that src uses.
// ---------------------------------------------------------------------------------------------

const sha256 = (...parts: Uint8Array[]): Buffer => {
  const h = createHash('sha256');
  for (const part of parts) h.update(part);
  return h.digest();
};
const refLeaf = (data: Uint8Array): Buffer => sha256(Buffer.from([0]), data);
const refNode = (l: Uint8Array, r: Uint8Array): Buffer => sha256(Buffer.from([1]), l, r);

/** RFC 9162's k: the largest power of two smaller than n (n > 1). */
function splitPoint(n: number): number {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

/** MTH(D[start:end]) for start < end. */
type Mth = (start: number, end: number) => Buffer;

/** MTH straight from a list of leaf hashes (memoised: sibling subtrees repeat across proofs). */
function listMth(leafHashes: readonly Buffer[]): Mth {
  const memo = new Map<string, Buffer>();
  const mth: Mth = (start, end) => {
    if (end - start === 1) return leafHashes[start]!;
    const key = `${start}:${end}`;
    let hash = memo.get(key);
    if (!hash) {
      const k = splitPoint(end - start);
      hash = refNode(mth(start, start + k), mth(start + k, end));
      memo.set(key, hash);
    }
    return hash;
  };
  return mth;
}

/** PATH(m, D[start:end]), m absolute. */
function refPath(mth: Mth, m: number, start: number, end: number): Buffer[] {
  if (end - start === 1) return [];
  const split = start + splitPoint(end - start);
  return m < split ? [...refPath(mth, m, start, split), mth(split, end)] : [...refPath(mth, m, split, end), mth(start, split)];
}

/** PROOF(m, D[0:n]) = SUBPROOF(m, D[0:n], true), 0 < m < n. */
function refProof(mth: Mth, m: number, n: number): Buffer[] {
  const subproof = (start: number, end: number, b: boolean): Buffer[] => {
    if (m === end) return b ? [] : [mth(start, end)];
    const split = start + splitPoint(end - start);
    return m <= split ? [...subproof(start, split, b), mth(split, end)] : [...subproof(split, end, false), mth(start, split)];
  };
  return subproof(0, n, true);
}

/** The root that an inclusion proof yields, undoing PATH's recursion; undefined if the proof has the wrong length. */
function refRootFromPath(leaf: Buffer, m: number, n: number, proof: readonly Buffer[]): Buffer | undefined {
  const stack = [...proof];
  const up = (start: number, end: number): Buffer | undefined => {
    if (end - start === 1) return leaf;
    const split = start + splitPoint(end - start);
    const sibling = stack.pop();
    if (!sibling) return undefined;
    const below = m < split ? up(start, split) : up(split, end);
    if (!below) return undefined;
    return m < split ? refNode(below, sibling) : refNode(sibling, below);
  };
  const root = up(0, n);
  return stack.length === 0 ? root : undefined;
}

/** [MTH(D[0:m]), MTH(D[0:n])] that a consistency proof yields, undoing SUBPROOF's recursion. */
function refRootsFromProof(m: number, n: number, proof: readonly Buffer[], firstRoot: Buffer): [Buffer, Buffer] | undefined {
  const stack = [...proof];
  // Returns [MTH of the old tree's part of D[start:end], MTH(D[start:end])].
  const up = (start: number, end: number, b: boolean): [Buffer, Buffer] | undefined => {
    if (m === end) {
      if (b) return [firstRoot, firstRoot];
      const node = stack.pop();
      return node && [node, node];
    }
    const split = start + splitPoint(end - start);
    const sibling = stack.pop();
    if (!sibling) return undefined;
    if (m <= split) {
      const below = up(start, split, b);
      return below && [below[0], refNode(below[1], sibling)];
    }
    const below = up(split, end, false);
    return below && [refNode(sibling, below[0]), refNode(sibling, below[1])];
  };
  const roots = up(0, n, true);
  return stack.length === 0 ? roots : undefined;
}

// ---------------------------------------------------------------------------------------------
// Test data
// ---------------------------------------------------------------------------------------------

const hex = (s: string): Buffer => Buffer.from(s, 'hex');
const b64 = (s: string): Buffer => Buffer.from(s, 'base64');

// RFC 6962 test tree, from transparency-dev/merkle testonly/constants.go (LeafInputs, NodeHashes, RootHashes).
const RFC6962_LEAVES = ['', '00', '10', '2021', '3031', '40414243', '5051525354555657', '606162636465666768696a6b6c6d6e6f'].map(hex);
const RFC6962_NODES = [
  [
    '6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d',
    '96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7',
    '0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7',
    '07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7',
    'bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b',
    '4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658',
    'b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f',
    '46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1',
  ],
  [
    'fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125',
    '5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e',
    '0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a',
    'ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0',
  ],
  ['d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7', '6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4'],
  ['5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328'],
];
const RFC6962_ROOTS = [
  'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
  '6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d',
  'fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125',
  'aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77',
  'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7',
  '4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4',
  '76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef',
  'ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c',
  '5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328',
];

// Happy-path probes over the same tree, from transparency-dev/merkle testdata/{inclusion,consistency}/*/happy-path.json.
const INCLUSION_PROBES = [
  { index: 0, size: 1, proof: [] },
  { index: 0, size: 8, proof: ['lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=', 'Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=', 'a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ='] },
  { index: 5, size: 8, proof: ['vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms=', 'yoVOoSjtBQtBs1/8G4e46yveRh6eO1WW7Oa51ZdaCuA=', '037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc='] },
  { index: 2, size: 3, proof: ['+sVCA+fMaWzw38tCySodnbr3CtnmIfS9jZhmLwDjwSU='] },
  { index: 1, size: 5, proof: ['bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=', 'Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=', 'vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms='] },
];
const CONSISTENCY_PROBES = [
  { first: 1, second: 1, proof: [] },
  { first: 1, second: 8, proof: ['lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=', 'Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=', 'a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ='] },
  { first: 6, second: 8, proof: ['DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=', 'yoVOoSjtBQtBs1/8G4e46yveRh6eO1WW7Oa51ZdaCuA=', '037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc='] },
  { first: 2, second: 5, proof: ['Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=', 'vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms='] },
  { first: 6, second: 7, proof: ['DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=', 'sIaT7C5yFZcTBkHoIR5+7cy0wmQTlj7ubB4u0W/7Gl8=', '037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc='] },
];

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/** A store filled by appendLeaves, batch by batch, as the ledger does. */
function buildStore(leafHashes: readonly Buffer[], batchSizes: readonly number[]): MemoryNodeStore {
  const store = new MemoryNodeStore();
  let size = 0;
  let batch = 0;
  while (size < leafHashes.length) {
    const take = Math.min(batchSizes[batch % batchSizes.length]!, leafHashes.length - size);
    store.add(appendLeaves(size, leafHashes.slice(size, size + take), store));
    size += take;
    batch += 1;
  }
  return store;
}

/** A NodeReader that counts reads, to show proofs touch O(log n) stored nodes. */
function counting(reader: NodeReader): NodeReader & { reads: number } {
  const counter = {
    reads: 0,
    node(level: number, index: number): Buffer {
      counter.reads += 1;
      return reader.node(level, index);
    },
  };
  return counter;
}

const log2ceil = (n: number): number => Math.ceil(Math.log2(n));

function flipBit(hash: Buffer, bit: number): Buffer {
  const copy = Buffer.from(hash);
  const at = Math.floor(bit / 8) % copy.length;
  copy[at] = copy[at]! ^ (1 << bit % 8);
  return copy;
}

function replaced(proof: readonly Buffer[], i: number, hash: Buffer): Buffer[] {
  return proof.map((h, j) => (j === i ? hash : h));
}

function expectBadProof(run: () => void): void {
  let error: unknown;
  try {
    run();
  } catch (e) {
    error = e;
  }
  expect(error, 'a tampered proof was accepted').toBeInstanceOf(QuorumError);
  expect((error as QuorumError).code).toBe('bad-proof');
}

/** A tree under test: the store src reads, and the reference's view of the same leaves. */
interface Tree {
  reader: NodeReader;
  mth: Mth;
  leaf: (i: number) => Buffer;
  /** Sizes up to this have a reference root. */
  maxSize: number;
  /**
   * False for the synthetic giant tree, whose equal neighbouring leaves make a proof for a
   * neighbouring index or size genuinely valid; such tamperings are only tried on distinct leaves.
   */
  distinctLeaves: boolean;
}

const treeRoot = (tree: Tree, n: number): Buffer => (n === 0 ? sha256() : tree.mth(0, n));

/** Checks index's proof in a size-leaf tree against the reference, and every tampering against the verifier. */
function checkInclusion(tree: Tree, index: number, size: number): void {
  const proof = inclusionProof(index, size, tree.reader);
  const expected = refPath(tree.mth, index, 0, size);
  expect(proof.map((h) => h.toString('hex'))).toEqual(expected.map((h) => h.toString('hex')));
  const leaf = tree.leaf(index);
  const r = treeRoot(tree, size);
  expect(refRootFromPath(leaf, index, size, proof)?.equals(r)).toBe(true);
  verifyInclusion(leaf, index, size, proof, r);

  for (let i = 0; i < proof.length; i++) expectBadProof(() => verifyInclusion(leaf, index, size, replaced(proof, i, flipBit(proof[i]!, i * 37 + index)), r));
  expectBadProof(() => verifyInclusion(flipBit(leaf, index), index, size, proof, r));
  expectBadProof(() => verifyInclusion(leaf, index, size, proof, flipBit(r, size)));
  if (proof.length > 0) expectBadProof(() => verifyInclusion(leaf, index, size, proof.slice(0, -1), r));
  expectBadProof(() => verifyInclusion(leaf, index, size, [...proof, r], r));
  expectBadProof(() => verifyInclusion(leaf, index, size, [r, ...proof], r));
  if (!tree.distinctLeaves) return;
  for (const wrongIndex of [index - 1, index + 1, size - 1 - index]) {
    if (wrongIndex !== index && wrongIndex >= 0) expectBadProof(() => verifyInclusion(leaf, wrongIndex, size, proof, r));
  }
  // Another tree size, with that size's real root: the proof is bound to its size.
  for (const wrongSize of [size - 1, size + 1, size * 2]) {
    if (wrongSize > index && wrongSize !== size && wrongSize <= tree.maxSize) expectBadProof(() => verifyInclusion(leaf, index, wrongSize, proof, treeRoot(tree, wrongSize)));
  }
}

function checkConsistency(tree: Tree, first: number, second: number): void {
  const proof = consistencyProof(first, second, tree.reader);
  const r1 = treeRoot(tree, first);
  const r2 = treeRoot(tree, second);
  verifyConsistency(first, second, proof, r1, r2);
  if (first === 0 || first === second) {
    expect(proof).toEqual([]);
    return;
  }
  const expected = refProof(tree.mth, first, second);
  expect(proof.map((h) => h.toString('hex'))).toEqual(expected.map((h) => h.toString('hex')));
  const roots = refRootsFromProof(first, second, proof, r1);
  expect(roots !== undefined && roots[0].equals(r1) && roots[1].equals(r2)).toBe(true);

  for (let i = 0; i < proof.length; i++) expectBadProof(() => verifyConsistency(first, second, replaced(proof, i, flipBit(proof[i]!, i * 53 + first)), r1, r2));
  expectBadProof(() => verifyConsistency(first, second, proof, flipBit(r1, second), r2));
  expectBadProof(() => verifyConsistency(first, second, proof, r1, flipBit(r2, first)));
  expectBadProof(() => verifyConsistency(first, second, proof, r2, r1));
  expectBadProof(() => verifyConsistency(first, second, proof.slice(0, -1), r1, r2));
  expectBadProof(() => verifyConsistency(first, second, proof.slice(1), r1, r2));
  expectBadProof(() => verifyConsistency(first, second, [...proof, r2], r1, r2));
  expectBadProof(() => verifyConsistency(first, second, [r1, ...proof], r1, r2));
  if (!tree.distinctLeaves) return;
  for (const wrongFirst of [first - 1, first + 1]) {
    if (wrongFirst !== first && wrongFirst <= second) expectBadProof(() => verifyConsistency(wrongFirst, second, proof, treeRoot(tree, wrongFirst), r2));
  }
  for (const wrongSecond of [second - 1, second + 1]) {
    if (wrongSecond >= first && wrongSecond !== second && wrongSecond <= tree.maxSize) expectBadProof(() => verifyConsistency(first, wrongSecond, proof, r1, treeRoot(tree, wrongSecond)));
  }
}

// ---------------------------------------------------------------------------------------------

describe('RFC 6962 reference tree', () => {
  const leafHashes = RFC6962_LEAVES.map(leafHash);

  it('hashes leaves and nodes with the 0x00 / 0x01 prefixes', () => {
    expect(EMPTY_ROOT.toString('hex')).toBe(RFC6962_ROOTS[0]);
    expect(leafHashes.map((h) => h.toString('hex'))).toEqual(RFC6962_NODES[0]);
    expect(nodeHash(leafHashes[0]!, leafHashes[1]!).toString('hex')).toBe(RFC6962_NODES[1]![0]);
  });

  it('stores every complete node and yields the reference root at every size, leaf by leaf', () => {
    const store = new MemoryNodeStore();
    expect(rootHash(0, store).toString('hex')).toBe(RFC6962_ROOTS[0]);
    leafHashes.forEach((hash, size) => {
      store.add(appendLeaves(size, [hash], store));
      expect(rootHash(size + 1, store).toString('hex')).toBe(RFC6962_ROOTS[size + 1]);
    });
    RFC6962_NODES.forEach((level, l) => level.forEach((hash, index) => expect(store.node(l, index).toString('hex')).toBe(hash)));
    for (let size = 0; size <= 8; size++) expect(rootHash(size, store).toString('hex')).toBe(RFC6962_ROOTS[size]);
  });

  it('appends the whole tree in one batch to the same nodes', () => {
    const nodes = appendLeaves(0, leafHashes, new MemoryNodeStore());
    expect(nodes).toHaveLength(15);
    for (const { level, index, hash } of nodes) expect(hash.toString('hex')).toBe(RFC6962_NODES[level]![index]);
  });

  it('produces and accepts the transparency-dev happy-path proofs', () => {
    const store = buildStore(leafHashes, [3]);
    const root = (n: number) => hex(RFC6962_ROOTS[n]!);
    for (const probe of INCLUSION_PROBES) {
      const proof = inclusionProof(probe.index, probe.size, store);
      expect(proof.map((h) => h.toString('base64'))).toEqual(probe.proof);
      verifyInclusion(leafHashes[probe.index]!, probe.index, probe.size, probe.proof.map(b64), root(probe.size));
    }
    for (const probe of CONSISTENCY_PROBES) {
      const proof = consistencyProof(probe.first, probe.second, store);
      expect(proof.map((h) => h.toString('base64'))).toEqual(probe.proof);
      verifyConsistency(probe.first, probe.second, probe.proof.map(b64), root(probe.first), root(probe.second));
    }
  });
});

describe('trees up to 10,007 leaves against the RFC 9162 recursive definitions', () => {
  const N = 10_007;
  const leafHashes = Array.from({ length: N }, (_, i) => refLeaf(Buffer.from(`entry ${i}`)));
  const mth = listMth(leafHashes);
  // Random batch sizes, as group commit produces them; the seed makes failures reproducible.
  const store = buildStore(leafHashes, fc.sample(fc.integer({ min: 1, max: 700 }), { numRuns: 60, seed: 9162 }));
  const tree: Tree = { reader: store, mth, leaf: (i) => leafHashes[i]!, maxSize: N, distinctLeaves: true };

  it('stores exactly the complete subtrees, and the root at every size matches MTH', () => {
    for (let size = 1; size <= N; size++) expect(rootHash(size, store).equals(mth(0, size)), `size ${size}`).toBe(true);
    for (let level = 0; 2 ** level <= N; level++) {
      for (let index = 0; (index + 1) * 2 ** level <= N; index += 1 + Math.floor(index / 3)) {
        expect(store.node(level, index).equals(mth(index * 2 ** level, (index + 1) * 2 ** level))).toBe(true);
      }
      expect(() => store.node(level, Math.floor(N / 2 ** level))).toThrow(/not in the in-memory store/);
    }
  });

  it('builds the same nodes whatever the batch sizes', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: 300 }), { minLength: 1, maxLength: 20 }), fc.integer({ min: 1, max: 3000 }), (batches, size) => {
        const other = buildStore(leafHashes.slice(0, size), batches);
        expect(rootHash(size, other).equals(mth(0, size))).toBe(true);
        for (let level = 0; 2 ** level <= size; level++) {
          const last = Math.floor(size / 2 ** level) - 1;
          expect(other.node(level, last).equals(store.node(level, last))).toBe(true);
        }
      }),
      { numRuns: 40, seed: 1 },
    );
  });

  it('a frontier started on a stored tree yields its root and exactly the nodes the store would append', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 4000 }), fc.integer({ min: 1, max: 3000 }), (start, count) => {
        const frontier = TreeFrontier.of(start, store);
        const created: StoredNode[] = [];
        for (let i = start; i < start + count; i++) frontier.push(leafHashes[i]!, created);
        expect(frontier.root().equals(mth(0, start + count))).toBe(true);
        const prefix = buildStore(leafHashes.slice(0, start), start > 0 ? [start] : []);
        const appended = appendLeaves(start, leafHashes.slice(start, start + count), prefix);
        const key = (n: StoredNode) => `${n.level}/${n.index}/${n.hash.toString('hex')}`;
        expect(created.map(key).sort()).toEqual(appended.map(key).sort());
      }),
      { numRuns: 40, seed: 6962 },
    );
  });

  it('every inclusion and consistency proof in trees of 1 to 64 leaves', () => {
    for (let size = 1; size <= 64; size++) {
      for (let index = 0; index < size; index++) checkInclusion(tree, index, size);
      for (let first = 0; first <= size; first++) checkConsistency(tree, first, size);
    }
  });

  it('inclusion proofs at random indices and sizes', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: N }).chain((size) => fc.tuple(fc.constant(size), fc.integer({ min: 0, max: size - 1 }))),
        ([size, index]) => checkInclusion(tree, index, size),
      ),
      { numRuns: 400, seed: 2, examples: [[[N, 0]], [[N, N - 1]], [[8192, 8191]], [[8193, 8192]], [[N, 8192]]] },
    );
  });

  it('consistency proofs between random sizes', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: N }).chain((second) => fc.tuple(fc.integer({ min: 0, max: second }), fc.constant(second))),
        ([first, second]) => checkConsistency(tree, first, second),
      ),
      { numRuns: 400, seed: 3, examples: [[[1, N]], [[N - 1, N]], [[8192, N]], [[4096, 8192]], [[8191, 8193]], [[0, N]], [[N, N]]] },
    );
  });

  it('reads O(log n) stored nodes per root, proof and append', () => {
    const reader = counting(store);
    for (const size of [N, 8191, 8192, 5000]) {
      reader.reads = 0;
      rootHash(size, reader);
      expect(reader.reads).toBeLessThanOrEqual(log2ceil(size) + 1);
      reader.reads = 0;
      inclusionProof(Math.floor(size / 3), size, reader);
      expect(reader.reads).toBeLessThanOrEqual(2 * log2ceil(size) + 2);
      reader.reads = 0;
      consistencyProof(Math.floor(size / 3), size, reader);
      expect(reader.reads).toBeLessThanOrEqual(2 * log2ceil(size) + 2);
      reader.reads = 0;
      appendLeaves(size - 100, leafHashes.slice(size - 100, size), reader);
      expect(reader.reads).toBeLessThanOrEqual(log2ceil(size));
    }
  });
});

describe('a 131,075-leaf tree', () => {
  it('gives proofs equal to the reference at large sizes', () => {
    const N = 2 ** 17 + 3;
    const leafHashes = Array.from({ length: N }, (_, i) => refLeaf(Buffer.from(`big ${i}`)));
    const tree: Tree = { reader: buildStore(leafHashes, [4093, 1, 65536, 17]), mth: listMth(leafHashes), leaf: (i) => leafHashes[i]!, maxSize: N, distinctLeaves: true };
    for (const [index, size] of [[0, N], [N - 1, N], [2 ** 17, N], [2 ** 17 - 1, 2 ** 17], [99_999, 100_000], [77_777, 2 ** 17 + 1]] as const) checkInclusion(tree, index, size);
    for (const [first, second] of [[1, N], [2 ** 16, N], [2 ** 17, N], [2 ** 17 - 1, 2 ** 17], [100_000, N], [N - 1, N], [12_345, 100_000]] as const) checkConsistency(tree, first, second);
  });
});

describe('trees beyond 2^32 leaves (no 32-bit truncation)', () => {
  // A consistent tree too big to materialise: all 2^20 leaves of block b hash to the same value, so
  // nodes up to level 20 are one chain of equal pairs per block and only the levels above differ.
  const BLOCK_LEVEL = 20;
  const blockLeaf = (block: number): Buffer => refLeaf(Buffer.from(`block ${block}`));
  const memo = new Map<string, Buffer>();
  const synthetic = (level: number, index: number): Buffer => {
    // Below the block level a node depends only on its block and level.
    const key = level <= BLOCK_LEVEL ? `${level}/block ${Math.floor(index / 2 ** (BLOCK_LEVEL - level))}` : `${level}/${index}`;
    let hash = memo.get(key);
    if (!hash) {
      hash = level === 0 ? blockLeaf(Math.floor(index / 2 ** BLOCK_LEVEL)) : refNode(synthetic(level - 1, 2 * index), synthetic(level - 1, 2 * index + 1));
      memo.set(key, hash);
    }
    return hash;
  };
  const S = 2 ** 32 + 5 * 2 ** BLOCK_LEVEL + 777;
  const leaf = (i: number): Buffer => blockLeaf(Math.floor(i / 2 ** BLOCK_LEVEL));
  // MTH by the RFC recursion, taking the synthetic tree's complete nodes for aligned power-of-two ranges.
  const mth: Mth = (start, end) => {
    const width = end - start;
    const level = Math.log2(width);
    if (Number.isInteger(level) && start % width === 0) return synthetic(level, start / width);
    const split = start + splitPoint(width);
    return refNode(mth(start, split), mth(split, end));
  };
  const tree: Tree = { reader: { node: synthetic }, mth, leaf, maxSize: S, distinctLeaves: false };

  it('appends at an index above 2^32 and computes the root there', () => {
    const size = S - 40;
    const created = appendLeaves(size, Array.from({ length: 40 }, (_, j) => leaf(size + j)), tree.reader);
    expect(created.length).toBeGreaterThan(40);
    for (const { level, index, hash } of created) expect(hash.equals(synthetic(level, index)), `node ${level}/${index}`).toBe(true);
    expect(rootHash(S, tree.reader).equals(mth(0, S))).toBe(true);
  });

  it('proves inclusion for indices around 2^31 and 2^32, and rejects the index 2^32 away', () => {
    for (const index of [0, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 32 + 1, 2 ** 32 + 3 * 2 ** BLOCK_LEVEL + 5, S - 1]) {
      checkInclusion(tree, index, S);
      const other = index >= 2 ** 32 ? index - 2 ** 32 : index + 2 ** 32;
      if (other < S) expectBadProof(() => verifyInclusion(leaf(index), other, S, inclusionProof(index, S, tree.reader), mth(0, S)));
    }
  });

  it('proves consistency across 2^32', () => {
    for (const first of [1, 2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 32 + 1, S - 1]) checkConsistency(tree, first, S);
    checkConsistency(tree, 2 ** 32, 2 ** 32 + 1);
    checkConsistency(tree, 2 ** 32 - 1, 2 ** 32);
  });

  it('random sizes and indices up to 2^32 + 5 Mi', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: S }).chain((size) => fc.tuple(fc.constant(size), fc.integer({ min: 0, max: size - 1 }))), ([size, index]) => {
        checkInclusion(tree, index, size);
        checkConsistency(tree, index + 1, size);
      }),
      { numRuns: 30, seed: 4 },
    );
  });
});

describe('edge cases', () => {
  const leafHashes = Array.from({ length: 5 }, (_, i) => leafHash(Buffer.from([i])));
  const store = buildStore(leafHashes, [5]);
  const r = (n: number) => rootHash(n, store);

  it('the empty tree: no inclusion, consistent only with its own root', () => {
    expect(rootHash(0, store).equals(EMPTY_ROOT)).toBe(true);
    expectBadProof(() => verifyInclusion(leafHashes[0]!, 0, 0, [], EMPTY_ROOT));
    verifyConsistency(0, 0, [], EMPTY_ROOT, EMPTY_ROOT);
    expectBadProof(() => verifyConsistency(0, 0, [], EMPTY_ROOT, r(1)));
    expectBadProof(() => verifyConsistency(0, 0, [EMPTY_ROOT], EMPTY_ROOT, EMPTY_ROOT));
  });

  it('first == 0: an empty proof from the empty root, nothing else', () => {
    expect(consistencyProof(0, 5, store)).toEqual([]);
    verifyConsistency(0, 5, [], EMPTY_ROOT, r(5));
    expectBadProof(() => verifyConsistency(0, 5, [], r(1), r(5)));
    expectBadProof(() => verifyConsistency(0, 5, [EMPTY_ROOT], EMPTY_ROOT, r(5)));
  });

  it('first == second: an empty proof and equal roots', () => {
    expect(consistencyProof(3, 3, store)).toEqual([]);
    verifyConsistency(3, 3, [], r(3), r(3));
    expectBadProof(() => verifyConsistency(3, 3, [], r(3), r(4)));
    expectBadProof(() => verifyConsistency(3, 3, [r(3)], r(3), r(3)));
  });

  it('a one-leaf tree: the root is the leaf hash, the proof is empty', () => {
    expect(inclusionProof(0, 1, store)).toEqual([]);
    verifyInclusion(leafHashes[0]!, 0, 1, [], r(1));
    expectBadProof(() => verifyInclusion(leafHashes[0]!, 0, 1, [leafHashes[1]!], r(1)));
  });

  it('rejects indices and sizes out of range, with the RFC verifiers and the proof builders', () => {
    const proof = inclusionProof(4, 5, store);
    expectBadProof(() => verifyInclusion(leafHashes[4]!, 5, 5, proof, r(5)));
    expectBadProof(() => verifyInclusion(leafHashes[4]!, 4, 4, proof, r(4)));
    expectBadProof(() => verifyConsistency(5, 4, [], r(5), r(4)));
    expectBadProof(() => verifyInclusion(leafHashes[4]!, -1, 5, proof, r(5)));
    expectBadProof(() => verifyInclusion(leafHashes[4]!, 4, 2 ** 53, proof, r(5)));
    expectBadProof(() => verifyInclusion(leafHashes[4]!, 4.5, 5, proof, r(5)));
    expectBadProof(() => verifyInclusion(leafHashes[4]!, 4, 5, [...proof.slice(0, -1), proof.at(-1)!.subarray(1)], r(5)));
    expectBadProof(() => verifyInclusion(leafHashes[4]!.subarray(1), 4, 5, proof, r(5)));
    expect(() => inclusionProof(5, 5, store)).toThrow(expect.objectContaining({ code: 'bad-range', field: 'index' }));
    expect(() => inclusionProof(0, 0, store)).toThrow(expect.objectContaining({ code: 'bad-range' }));
    expect(() => consistencyProof(5, 4, store)).toThrow(expect.objectContaining({ code: 'bad-range', field: 'first' }));
    expect(() => rootHash(-1, store)).toThrow(expect.objectContaining({ code: 'bad-range' }));
    expect(() => rootHash(2 ** 53, store)).toThrow(expect.objectContaining({ code: 'bad-range' }));
    expect(() => rootHash(6, store)).toThrow(expect.objectContaining({ code: 'missing-node' }));
    expect(() => appendLeaves(5, [Buffer.alloc(31)], store)).toThrow(expect.objectContaining({ code: 'bad-hash' }));
  });
});
