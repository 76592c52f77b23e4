import type { Db } from '../db.js';

/**
 * One attestation of an output path, as ingest (duplicates, conflicts), the quorum decisions and the
 * web index read them.
 */
export interface PathVote {
  leafIndex: number;
  builderId: number;
  /** The builder's key name. */
  builder: string;
  drvPath: string;
  outputName: string;
  narHash: string;
  narSize: number;
  /** Full store paths, sorted, joined by ','. */
  refs: string;
  narinfoSignature: string | null;
}

/** Every attestation of an output path, in log order. */
export type VotesOf = (outPath: string) => readonly PathVote[];

export function pathVotes(db: Db): VotesOf {
  const stmt = db.prepare<[string], PathVote>(
    `SELECT a.leaf_index AS leafIndex, a.builder_id AS builderId, b.name AS builder, a.drv_path AS drvPath, a.output_name AS outputName,
       a.nar_hash AS narHash, a.nar_size AS narSize, a.refs, a.narinfo_signature AS narinfoSignature
     FROM attestations a JOIN builders b ON b.id = a.builder_id WHERE a.out_path = ? ORDER BY a.leaf_index`,
  );
  return (outPath) => stmt.all(outPath);
}
