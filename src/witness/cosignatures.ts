import type { Statement } from 'better-sqlite3';
import { commitUnsynced, type Db } from '../db.js';
import { QuorumError } from '../errors.js';
import type { CheckpointPublisher, StoredCheckpoint } from '../ledger/checkpoints.js';
import type { Cosignature } from './cosignature.js';

/** A stored cosignature: the witness's vkey text, its signature line and timestamp. */
export interface StoredCosignature {
  witness: string;
  line: string;
  timestamp: number;
}

export interface CosignedCheckpoint {
  checkpoint: StoredCheckpoint;
  cosignatures: StoredCosignature[];
  /** The checkpoint note, the log's signature line followed by the cosignature lines. */
  note: string;
}

/** The ledger's witness cosignatures (table cosignatures), each verified before it was stored. */
export class CosignatureStore {
  private readonly put: Statement<[number, string, string, number, number]>;
  private readonly ofSize: Statement<[number], StoredCosignature>;
  private readonly latestOf: Statement<[string], number | null>;

  constructor(private readonly db: Db) {
    this.put = db.prepare('INSERT OR REPLACE INTO cosignatures (tree_size, witness, line, timestamp, created_at) VALUES (?, ?, ?, ?, ?)');
    this.ofSize = db.prepare('SELECT witness, line, timestamp FROM cosignatures WHERE tree_size = ? ORDER BY witness');
    this.latestOf = db.prepare('SELECT MAX(tree_size) FROM cosignatures WHERE witness = ?').pluck() as Statement<[string], number | null>;
  }

  /**
   * Stores a cosignature without waiting for the disk: one lost in a crash is asked for again (the
   * witness answers 409 with the size it cosigned, then cosigns the same tree once more).
   */
  add(size: number, cosignature: Cosignature): void {
    commitUnsynced(this.db, () => this.put.run(size, cosignature.witness.text, cosignature.line, cosignature.timestamp, Date.now()));
  }

  of(size: number): StoredCosignature[] {
    return this.ofSize.all(size);
  }

  /** The largest tree size this witness cosigned for us, if any. */
  latestSize(witness: string): number | undefined {
    return this.latestOf.get(witness) ?? undefined;
  }

  /** Cosignatures of several sizes (the web's recent checkpoints), by size. */
  ofSizes(sizes: readonly number[]): Map<number, StoredCosignature[]> {
    const bySize = new Map<number, StoredCosignature[]>(sizes.map((s) => [s, []]));
    if (sizes.length === 0) return bySize;
    const rows = this.db
      .prepare(`SELECT tree_size, witness, line, timestamp FROM cosignatures WHERE tree_size IN (${sizes.map(() => '?').join(',')}) ORDER BY witness`)
      .all(...sizes) as Array<StoredCosignature & { tree_size: number }>;
    for (const { tree_size, ...c } of rows) bySize.get(tree_size)!.push(c);
    return bySize;
  }

  /**
   * The newest checkpoint with at least `minimum` cosignatures, counting only the witnesses in
   * `witnesses` (vkey texts) when given, with those cosignatures; undefined if there is none.
   * Clients that require M of N witnesses verify against this one.
   */
  newestCosigned(minimum: number, witnesses?: readonly string[]): CosignedCheckpoint | undefined {
    const only = witnesses ? `WHERE witness IN (${witnesses.map(() => '?').join(',')})` : '';
    const size = this.db
      .prepare(`SELECT tree_size FROM cosignatures ${only} GROUP BY tree_size HAVING count(*) >= ? ORDER BY tree_size DESC LIMIT 1`)
      .pluck()
      .get(...(witnesses ?? []), minimum) as number | undefined;
    if (size === undefined) return undefined;
    const row = this.db.prepare('SELECT tree_size, root_hash, note, created_at FROM checkpoints WHERE tree_size = ?').get(size) as
      | { tree_size: number; root_hash: Buffer; note: string; created_at: number }
      | undefined;
    if (!row) return undefined;
    const checkpoint = { size: row.tree_size, rootHash: row.root_hash, note: row.note, createdAt: row.created_at };
    return this.with(checkpoint, witnesses);
  }

  /** A checkpoint with every cosignature stored for it (of `witnesses` only, when given). */
  with(checkpoint: StoredCheckpoint, witnesses?: readonly string[]): CosignedCheckpoint {
    const cosignatures = this.of(checkpoint.size).filter((c) => !witnesses || witnesses.includes(c.witness));
    return { checkpoint, cosignatures, note: `${checkpoint.note}${cosignatures.map((c) => c.line).join('')}` };
  }
}

/**
 * GET /api/v1/log/checkpoint: the newest checkpoint with every cosignature we have for it; with
 * `?cosigned=M`, the newest that has at least M (404 'not-witnessed' if none has).
 */
export function servedCheckpoint(store: CosignatureStore, checkpoints: CheckpointPublisher, cosigned: unknown): string {
  if (cosigned === undefined || cosigned === '') return store.with(checkpoints.latest() ?? checkpoints.publish()).note;
  if (typeof cosigned !== 'string' || !/^(0|[1-9][0-9]{0,3})$/.test(cosigned)) throw new QuorumError('bad-query', 'cosigned must be a whole number of cosignatures, e.g. cosigned=2', { field: 'cosigned' });
  const minimum = Number(cosigned);
  if (minimum === 0) return store.with(checkpoints.latest() ?? checkpoints.publish()).note;
  const found = store.newestCosigned(minimum);
  if (!found) throw new QuorumError('not-witnessed', `no checkpoint of this log has ${minimum} witness cosignatures yet`, { field: 'cosigned' });
  return found.note;
}
