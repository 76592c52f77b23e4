import type { Statement } from 'better-sqlite3';
import type { Db } from '../db.js';
import type { BuilderRegistry } from './registry.js';
import type { Attestation } from './statement.js';

/**
 * One attestation of an output path, as ingest (duplicates, conflicts), the quorum decisions and the
 * web index read them.
 */
export interface PathVote {
  leafIndex: number;
  builderId: number;
  /** The builder's key name. */
  builder: string;
  /** The key it votes with (keyIdOf); a row the log never registered gets a key of its own that nothing trusts. */
  key: string;
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

type VoteRow = [number, number, string, string, string, string, number, string, string | null];

/** What a builder row votes with: its registered key, else a placeholder no policy trusts. */
export function voterKey(registry: BuilderRegistry, builderId: number): string {
  return registry.keyOf(builderId) ?? `unregistered:${builderId}`;
}

export function pathVotes(db: Db, registry: BuilderRegistry): VotesOf {
  // Rows as arrays, made into objects here: better-sqlite3 builds row objects several times slower.
  const stmt = db
    .prepare<[string], VoteRow>(
      `SELECT a.leaf_index, a.builder_id, b.name, a.drv_path, a.output_name, a.nar_hash, a.nar_size, a.refs, a.narinfo_signature
       FROM attestations a JOIN builders b ON b.id = a.builder_id WHERE a.out_path = ? ORDER BY a.leaf_index`,
    )
    .raw();
  return (outPath) =>
    stmt.all(outPath).map(([leafIndex, builderId, builder, drvPath, outputName, narHash, narSize, refs, narinfoSignature]) => ({
      leafIndex,
      builderId,
      builder,
      key: voterKey(registry, builderId),
      drvPath,
      outputName,
      narHash,
      narSize,
      refs,
      narinfoSignature,
    }));
}

/** The vote of attestation `a` (`refs`: its references joined), logged at `leafIndex` by the builder row `builderId` voting with `key`. */
export function voteOf(a: Attestation, refs: string, leafIndex: number, builderId: number, key: string): PathVote {
  return { leafIndex, builderId, builder: a.builder, key, drvPath: a.drvPath, outputName: a.outputName, narHash: a.narHash, narSize: a.narSize, refs, narinfoSignature: a.narinfoSignature };
}

/** The attestations and conflicts tables, as ingest appends to them and a mirror replays them. */
export class AttestationRows {
  private readonly insertRow: Statement<unknown[]>;
  private readonly insertConflict: Statement<unknown[]>;

  constructor(db: Db) {
    this.insertRow = db.prepare(
      `INSERT INTO attestations (leaf_index, builder_id, drv_path, output_name, out_path, nar_hash, nar_size, refs, signature, narinfo_signature, created_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    this.insertConflict = db.prepare('INSERT OR IGNORE INTO conflicts (builder_id, out_path, first_leaf, second_leaf, detected_at) VALUES (?, ?, ?, ?, ?)');
  }

  insert(a: Attestation, vote: PathVote, createdAt: number): void {
    this.insertRow.run(vote.leafIndex, vote.builderId, vote.drvPath, vote.outputName, a.outPath, vote.narHash, vote.narSize, vote.refs, a.signature, vote.narinfoSignature, createdAt);
  }

  /** A second content for `outPath` by the builder row `builderId`: leaf `second` differs from leaf `first`. */
  conflict(builderId: number, outPath: string, first: number, second: number, detectedAt: number): void {
    this.insertConflict.run(builderId, outPath, first, second, detectedAt);
  }
}
