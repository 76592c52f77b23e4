import type { Statement } from 'better-sqlite3';
import type { Db } from '../db.js';
import { hashPartOf, type StorePath } from '../nix/storePath.js';

/** What a builder's upload of a build log is; uncompressed logs longer than this are cut to their end by the agent. */
export const MAX_LOG_BYTES = 32 * 1024 * 1024;
/** Build logs travel and rest brotli-compressed (Nix decompresses `Content-Encoding: br` itself). */
export const LOG_ENCODING = 'br';

/** A stored build log: one row of build_logs (schema.sql). */
export interface BuildLog {
  drvPath: string;
  builderId: number;
  blobKey: string;
  fileHash: string;
  fileSize: number;
  logSize: number;
  signedAt: number;
  signature: Buffer;
  createdAt: number;
}

interface Row {
  drv_path: string;
  builder_id: number;
  blob_key: string;
  file_hash: string;
  file_size: number;
  log_size: number;
  signed_at: number;
  signature: Buffer;
  created_at: number;
}

const fromRow = (r: Row): BuildLog => ({
  drvPath: r.drv_path,
  builderId: r.builder_id,
  blobKey: r.blob_key,
  fileHash: r.file_hash,
  fileSize: r.file_size,
  logSize: r.log_size,
  signedAt: r.signed_at,
  signature: r.signature,
  createdAt: r.created_at,
});

/** Where a builder's log of a derivation is kept: store path names may hold characters blob keys may not. */
export function logBlobKey(drvPath: StorePath, builderId: number): string {
  return `log/${hashPartOf(drvPath)}/${builderId}.${LOG_ENCODING}`;
}

/** The build_logs table. */
export class BuildLogs {
  private readonly byKey: Statement<[string, number], Row>;
  private readonly insertRow: Statement<unknown[]>;
  private readonly attestedBy: Statement<[string, number], number>;
  private readonly preferredFor: Statement<[{ drv: string; policy: string }], Row>;

  constructor(private readonly db: Db) {
    this.byKey = db.prepare('SELECT * FROM build_logs WHERE drv_path = ? AND builder_id = ?');
    this.insertRow = db.prepare(
      'INSERT OR IGNORE INTO build_logs (drv_path, builder_id, blob_key, file_hash, file_size, log_size, signed_at, signature, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
    );
    this.attestedBy = db.prepare<[string, number], number>('SELECT 1 FROM attestations WHERE drv_path = ? AND builder_id = ? LIMIT 1').pluck();
    // The log `nix log` gets: of a key whose attestation of an output agrees with the policy's quorum,
    // else of a key not revoked, else any; the first delivered among equals.
    this.preferredFor = db.prepare(
      `SELECT l.* FROM build_logs l JOIN builders b ON b.id = l.builder_id WHERE l.drv_path = @drv
       ORDER BY EXISTS (SELECT 1 FROM attestations a JOIN decisions d ON d.out_path = a.out_path AND d.nar_hash = a.nar_hash
                        WHERE a.drv_path = l.drv_path AND a.builder_id = l.builder_id AND d.policy = @policy AND d.status = 'quorum') DESC,
                b.revoked_at IS NULL DESC, l.created_at
       LIMIT 1`,
    );
  }

  get(drvPath: string, builderId: number): BuildLog | undefined {
    const row = this.byKey.get(drvPath, builderId);
    return row && fromRow(row);
  }

  /** Whether the builder attested an output of the derivation: only then may it deliver the log. */
  attested(drvPath: string, builderId: number): boolean {
    return this.attestedBy.get(drvPath, builderId) !== undefined;
  }

  /** Records a log whose blob is durable; the first log of a key for a derivation stays. */
  add(log: Omit<BuildLog, 'createdAt'>): void {
    this.insertRow.run(log.drvPath, log.builderId, log.blobKey, log.fileHash, log.fileSize, log.logSize, log.signedAt, log.signature, Date.now());
  }

  preferred(drvPath: string, policy: string): BuildLog | undefined {
    const row = this.preferredFor.get({ drv: drvPath, policy });
    return row && fromRow(row);
  }

  /** Names of the keys that delivered a log of each derivation. */
  builders(drvPaths: readonly string[]): Map<string, string[]> {
    const stmt = this.db.prepare<[string], string>('SELECT b.name FROM build_logs l JOIN builders b ON b.id = l.builder_id WHERE l.drv_path = ? ORDER BY b.name').pluck();
    return new Map(drvPaths.map((d) => [d, stmt.all(d)]));
  }
}
