import type { Statement } from 'better-sqlite3';
import type { Db } from '../db.js';
import type { LogHead } from './judge.js';

/** The latest checkpoint a witness cosigned for one log. */
export interface WitnessedHead extends LogHead {
  /** The checkpoint with the log signature lines that verified. */
  note: string;
  /** POSIX seconds: the timestamp of the cosignature on it. */
  cosignedAt: number;
}

export interface Evidence {
  id: number;
  origin: string;
  receivedAt: string;
  status: number;
  reason: string;
  oldSize: number;
  proof: string[];
  note: string;
  witnessSize: number | null;
  witnessNote: string | null;
}

/** A log key could fill the disk with refused checkpoints; the first ones are the evidence that matters. */
export const MAX_EVIDENCE_PER_LOG = 1000;

interface EvidenceRow {
  id: number;
  origin: string;
  received_at: number;
  status: number;
  reason: string;
  old_size: number;
  proof: string;
  note: string;
  witness_size: number | null;
  witness_note: string | null;
}

/**
 * The witness's records (tables witness_logs, witness_evidence). Reads and writes are plain
 * statements: the caller runs them inside the one transaction that checks and updates (Witness).
 */
export class WitnessState {
  private readonly getHead: Statement<[string], { tree_size: number; root_hash: Buffer; note: string; cosigned_at: number }>;
  private readonly putHead: Statement<[string, number, Buffer, string, number]>;
  private readonly countEvidence: Statement<[string], { n: number }>;
  private readonly putEvidence: Statement<[string, number, number, string, number, string, string, number | null, string | null]>;

  constructor(private readonly db: Db) {
    this.getHead = db.prepare('SELECT tree_size, root_hash, note, cosigned_at FROM witness_logs WHERE origin = ?');
    this.putHead = db.prepare('INSERT OR REPLACE INTO witness_logs (origin, tree_size, root_hash, note, cosigned_at) VALUES (?, ?, ?, ?, ?)');
    this.countEvidence = db.prepare('SELECT count(*) AS n FROM witness_evidence WHERE origin = ?');
    this.putEvidence = db.prepare(
      'INSERT OR IGNORE INTO witness_evidence (origin, received_at, status, reason, old_size, proof, note, witness_size, witness_note) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
    );
  }

  head(origin: string): WitnessedHead | undefined {
    const row = this.getHead.get(origin);
    return row && { size: row.tree_size, rootHash: row.root_hash, note: row.note, cosignedAt: row.cosigned_at };
  }

  setHead(origin: string, head: WitnessedHead): void {
    this.putHead.run(origin, head.size, head.rootHash, head.note, head.cosignedAt);
  }

  /** Keeps a refused checkpoint (the same request once); false when the log's quota is full. */
  keepEvidence(e: { origin: string; status: number; reason: string; oldSize: number; proof: Buffer[]; note: string; held: WitnessedHead | undefined }): boolean {
    if (this.countEvidence.get(e.origin)!.n >= MAX_EVIDENCE_PER_LOG) return false;
    this.putEvidence.run(e.origin, Date.now(), e.status, e.reason, e.oldSize, e.proof.map((h) => h.toString('base64')).join('\n'), e.note, e.held?.size ?? null, e.held?.note ?? null);
    return true;
  }

  /** Evidence, newest first, of one log or all; `before` (an id) pages back. */
  evidence(options: { origin?: string; limit: number; before?: number }): Evidence[] {
    const rows = this.db
      .prepare('SELECT * FROM witness_evidence WHERE (@origin IS NULL OR origin = @origin) AND (@before IS NULL OR id < @before) ORDER BY id DESC LIMIT @limit')
      .all({ origin: options.origin ?? null, before: options.before ?? null, limit: options.limit }) as EvidenceRow[];
    return rows.map((r) => ({
      id: r.id,
      origin: r.origin,
      receivedAt: new Date(r.received_at).toISOString(),
      status: r.status,
      reason: r.reason,
      oldSize: r.old_size,
      proof: r.proof === '' ? [] : r.proof.split('\n'),
      note: r.note,
      witnessSize: r.witness_size,
      witnessNote: r.witness_note,
    }));
  }

  /** Every log this witness cosigned, with its latest size (metrics, the monitoring route). */
  heads(): Array<{ origin: string; size: number }> {
    return (this.db.prepare('SELECT origin, tree_size FROM witness_logs').all() as Array<{ origin: string; tree_size: number }>).map((r) => ({ origin: r.origin, size: r.tree_size }));
  }
}
