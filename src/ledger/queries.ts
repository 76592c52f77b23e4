import type { Db } from '../db.js';
import type { HashPart } from '../nix/storePath.js';
import { STORE_DIR } from '../nix/storePath.js';
import { BUILDER_PREFIX, encodeLeaf, POLICY_PREFIX } from './leaf.js';
import type { Attestation } from './statement.js';

/** Read-side queries over the ledger shared by the JSON API, the web pages and the CLI. */

export interface AttestationRecord {
  leafIndex: number;
  builder: string;
  drvPath: string;
  outputName: string;
  outPath: string;
  narHash: string;
  narSize: number;
  references: string[];
  signature: string;
  narinfoSignature: string | null;
  createdAt: string;
}

interface AttestationRow {
  leaf_index: number;
  builder: string;
  drv_path: string;
  output_name: string;
  out_path: string;
  nar_hash: string;
  nar_size: number;
  refs: string;
  signature: Buffer;
  narinfo_signature: string | null;
  created_at: number;
}

const SELECT_ATTESTATION = `SELECT a.leaf_index, b.name AS builder, a.drv_path, a.output_name, a.out_path, a.nar_hash, a.nar_size, a.refs,
  a.signature, a.narinfo_signature, a.created_at FROM attestations a JOIN builders b ON b.id = a.builder_id`;

export function toRecord(r: AttestationRow): AttestationRecord {
  return {
    leafIndex: r.leaf_index,
    builder: r.builder,
    drvPath: r.drv_path,
    outputName: r.output_name,
    outPath: r.out_path,
    narHash: r.nar_hash,
    narSize: r.nar_size,
    references: r.refs === '' ? [] : r.refs.split(','),
    signature: r.signature.toString('base64'),
    narinfoSignature: r.narinfo_signature,
    createdAt: new Date(r.created_at).toISOString(),
  };
}

/** Store paths are `/nix/store/<hash>-<name>`: all paths of a hash part are one index range. */
export function hashPartRange(hashPart: HashPart): [string, string] {
  return [`${STORE_DIR}/${hashPart}-`, `${STORE_DIR}/${hashPart}.`];
}

/** The attestations of a hash part in log order, after leaf `after`, at most `limit` of them. */
export function attestationsOfHashPart(db: Db, hashPart: HashPart, { after = -1, limit = Number.MAX_SAFE_INTEGER }: { after?: number; limit?: number } = {}): AttestationRecord[] {
  const [lo, hi] = hashPartRange(hashPart);
  return (db.prepare(`${SELECT_ATTESTATION} WHERE a.out_path >= ? AND a.out_path < ? AND a.leaf_index > ? ORDER BY a.leaf_index LIMIT ?`).all(lo, hi, after, limit) as AttestationRow[]).map(toRecord);
}

/** The output paths of a hash part (one, unless builders disagree on the name behind it). */
export function outPathsOfHashPart(db: Db, hashPart: HashPart): string[] {
  const [lo, hi] = hashPartRange(hashPart);
  return db.prepare('SELECT DISTINCT out_path FROM attestations WHERE out_path >= ? AND out_path < ? ORDER BY out_path').pluck().all(lo, hi) as string[];
}

export function attestationsByLeaf(db: Db, start: number, end: number): AttestationRecord[] {
  return (db.prepare(`${SELECT_ATTESTATION} WHERE a.leaf_index >= ? AND a.leaf_index < ? ORDER BY a.leaf_index`).all(start, end) as AttestationRow[]).map(toRecord);
}

export interface ConflictRecord {
  builder: string;
  outPath: string;
  first: AttestationRecord;
  second: AttestationRecord;
  detectedAt: string;
}

export function conflicts(db: Db, options: { limit: number; outPath?: string }): ConflictRecord[] {
  const rows = db
    .prepare(
      `SELECT b.name AS builder, c.out_path, c.first_leaf, c.second_leaf, c.detected_at FROM conflicts c JOIN builders b ON b.id = c.builder_id
       ${options.outPath ? 'WHERE c.out_path = ?' : ''} ORDER BY c.detected_at DESC, c.second_leaf DESC LIMIT ?`,
    )
    .all(...(options.outPath ? [options.outPath, options.limit] : [options.limit])) as Array<{ builder: string; out_path: string; first_leaf: number; second_leaf: number; detected_at: number }>;
  const byLeaf = db.prepare(`${SELECT_ATTESTATION} WHERE a.leaf_index = ?`);
  return rows.map((r) => ({
    builder: r.builder,
    outPath: r.out_path,
    first: toRecord(byLeaf.get(r.first_leaf) as AttestationRow),
    second: toRecord(byLeaf.get(r.second_leaf) as AttestationRow),
    detectedAt: new Date(r.detected_at).toISOString(),
  }));
}

/** The typed attestation of a stored record (the database only holds validated values). */
export function attestationOf(r: AttestationRecord): Attestation {
  return {
    drvPath: r.drvPath,
    outputName: r.outputName,
    outPath: r.outPath,
    narHash: r.narHash,
    narSize: r.narSize,
    references: r.references,
    builder: r.builder,
    signature: Buffer.from(r.signature, 'base64'),
    narinfoSignature: r.narinfoSignature,
  } as Attestation;
}

/** One leaf of the log as the entries API serves it. */
export interface LeafRecord {
  index: number;
  leaf: Buffer;
  kind: 'attestation' | 'builder' | 'policy';
  /** Attestations only: who signed it and when it was logged. */
  builder?: string;
  createdAt?: string;
}

/**
 * The leaves from `start` on, before `end`, of every kind, in log order: attestations re-encoded
 * from their rows, registry and policy leaves as stored. The page ends once it holds `maxBytes` of
 * leaves (at least one leaf), so a page of the largest leaves stays small enough to send.
 */
export function leavesByIndex(db: Db, start: number, end: number, maxBytes = Number.MAX_SAFE_INTEGER): LeafRecord[] {
  const stated = (db.prepare('SELECT leaf_index, leaf FROM operator_leaves WHERE leaf_index >= ? AND leaf_index < ? ORDER BY leaf_index').raw().all(start, end) as Array<[number, string]>).map(
    ([index, text]): LeafRecord => ({ index, leaf: Buffer.from(text, 'utf8'), kind: text.startsWith(`${POLICY_PREFIX};`) ? 'policy' : 'builder' }),
  );
  const leaves: LeafRecord[] = [];
  let bytes = 0;
  let next = 0;
  const take = (leaf: LeafRecord) => {
    leaves.push(leaf);
    bytes += leaf.leaf.length;
  };
  for (const row of db.prepare(`${SELECT_ATTESTATION} WHERE a.leaf_index >= ? AND a.leaf_index < ? ORDER BY a.leaf_index`).iterate(start, end) as IterableIterator<AttestationRow>) {
    while (next < stated.length && stated[next]!.index < row.leaf_index && bytes < maxBytes) take(stated[next++]!);
    if (bytes >= maxBytes) break;
    const r = toRecord(row);
    take({ index: r.leafIndex, leaf: encodeLeaf(attestationOf(r)), kind: 'attestation', builder: r.builder, createdAt: r.createdAt });
  }
  while (next < stated.length && bytes < maxBytes) take(stated[next++]!);
  return leaves;
}

/**
 * The registry leaves of every name revoked before leaf `below`: each revocation with the add leaf
 * that bound the name (and so its key), in log order. What a verifying client needs to honour
 * revocations of the keys it pinned.
 */
export function revokedNameLeaves(db: Db, below: number): Array<{ index: number; leaf: Buffer }> {
  const rows = db.prepare(`SELECT leaf_index, leaf FROM operator_leaves WHERE leaf_index < ? AND leaf LIKE '${BUILDER_PREFIX};%' ORDER BY leaf_index`).raw().all(below) as Array<[number, string]>;
  const nameOf = (text: string) => text.split(';')[2]!;
  const revoked = new Set(rows.filter(([, text]) => text.startsWith(`${BUILDER_PREFIX};revoke;`)).map(([, text]) => nameOf(text)));
  return rows.filter(([, text]) => revoked.has(nameOf(text))).map(([index, text]) => ({ index, leaf: Buffer.from(text, 'utf8') }));
}
