import type { Statement } from 'better-sqlite3';
import type { Db } from '../db.js';
import type { NarHash } from '../nix/hash.js';

/** A NAR the server can serve: where its (compressed) bytes are and what they hash to. */
export interface NarRecord {
  narHash: NarHash;
  narSize: number;
  /** Key in the blob store, or an absolute URL for a NAR held by an upstream cache. */
  blobKey: string;
  compression: string;
  fileHash: string;
  fileSize: number;
  /** CRC-32 of the stored bytes, checked on downloads; null for NARs held upstream and rows from before it was recorded. */
  fileCrc32: number | null;
  createdAt: number;
}

interface NarRow {
  nar_hash: string;
  nar_size: number;
  blob_key: string;
  compression: string;
  file_hash: string;
  file_size: number;
  file_crc32: number | null;
  created_at: number;
}

const fromRow = (r: NarRow): NarRecord => ({
  narHash: r.nar_hash as NarHash,
  narSize: r.nar_size,
  blobKey: r.blob_key,
  compression: r.compression,
  fileHash: r.file_hash,
  fileSize: r.file_size,
  fileCrc32: r.file_crc32,
  createdAt: r.created_at,
});

export const isUpstreamKey = (blobKey: string) => /^https?:\/\//.test(blobKey);

/** The nars table: which NARs exist. A row is written only after its blob is durable. */
export class NarCatalog {
  private readonly byHash: Statement<[string], NarRow>;
  private readonly advertised: Statement<[string, string], NarRow>;
  private readonly insertRow: Statement<unknown[]>;
  private readonly deleteCollectable: Statement<[Record<string, string | number>], NarRow>;
  private readonly quorumOn: Statement<[string], number>;

  constructor(private readonly db: Db) {
    this.byHash = db.prepare('SELECT * FROM nars WHERE nar_hash = ?');
    this.advertised = db.prepare(
      "SELECT * FROM nars n WHERE n.nar_hash = ? AND EXISTS (SELECT 1 FROM decisions d WHERE d.nar_hash = n.nar_hash AND d.policy = ? AND d.status = 'quorum')",
    );
    this.insertRow = db.prepare(
      'INSERT OR IGNORE INTO nars (nar_hash, nar_size, blob_key, compression, file_hash, file_size, file_crc32, uploaded_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
    );
    this.deleteCollectable = db.prepare(
      `DELETE FROM nars
       WHERE nar_hash = @narHash AND blob_key = @blobKey
         AND NOT EXISTS (SELECT 1 FROM decisions d WHERE d.nar_hash = @narHash AND d.status = 'quorum')
         AND (created_at < @unadvertisedBefore
              OR (@attested = 0 AND created_at < @unattestedBefore
                  AND NOT EXISTS (SELECT 1 FROM attestations a WHERE a.leaf_index > @lastLeaf AND a.nar_hash = @narHash)))
       RETURNING *`,
    );
    this.quorumOn = db.prepare("SELECT 1 FROM decisions WHERE nar_hash = ? AND status = 'quorum' LIMIT 1");
  }

  get(narHash: string): NarRecord | undefined {
    const row = this.byHash.get(narHash);
    return row && fromRow(row);
  }

  /**
   * The NAR's row if some path with it has quorum under `policy`: what the NAR route may serve. The
   * quorum is checked on every download, as for narinfos: Nix caches narinfos for days, and a
   * revoked key must stop counting for those clients as well.
   */
  getAdvertised(narHash: string, policy: string): NarRecord | undefined {
    const row = this.advertised.get(narHash, policy);
    return row && fromRow(row);
  }

  add(record: Omit<NarRecord, 'createdAt'>, uploadedBy: number | null): void {
    this.insertRow.run(record.narHash, record.narSize, record.blobKey, record.compression, record.fileHash, record.fileSize, record.fileCrc32, uploadedBy, Date.now());
  }


  /** Deletes the row of `narHash` only while it still names `blobKey`; true if a row went. */
  remove(narHash: string, blobKey: string): boolean {
    return this.db.prepare('DELETE FROM nars WHERE nar_hash = ? AND blob_key = ?').run(narHash, blobKey).changes > 0;
  }

  /** A decision with status 'quorum' (under any policy) names this NAR: a path is or will be advertised with it. */
  neededByQuorum(narHash: string): boolean {
    return this.quorumOn.get(narHash) !== undefined;
  }

  count(): number {
    return this.db.prepare('SELECT COUNT(*) FROM nars').pluck().get() as number;
  }

  /**
   * NARs garbage collection may delete (src/nars/gc.ts): no decision under any policy has quorum
   * on them, and they are unattested and older than `unattestedBefore`, or older than
   * `unadvertisedBefore`. `lastLeaf` is the newest attestation this answer saw (one snapshot), so
   * removeIfCollectable can re-check "unattested" by reading only the leaves added since.
   */
  collectable(cutoffs: CollectCutoffs): { nars: CollectableNar[]; lastLeaf: number } {
    return this.db.transaction(() => {
      const lastLeaf = this.db.prepare('SELECT COALESCE(MAX(leaf_index), -1) FROM attestations').pluck().get() as number;
      // The IN subquery is computed once per statement (attestations has no nar_hash index).
      const rows = this.db
        .prepare(
          `SELECT nar_hash, blob_key, file_size, attested FROM (
             SELECT n.nar_hash, n.blob_key, n.file_size, n.created_at, n.nar_hash IN (SELECT nar_hash FROM attestations) AS attested
             FROM nars n
             WHERE n.created_at < @unattestedBefore
               AND NOT EXISTS (SELECT 1 FROM decisions d WHERE d.nar_hash = n.nar_hash AND d.status = 'quorum'))
           WHERE attested = 0 OR created_at < @unadvertisedBefore
           ORDER BY nar_hash`,
        )
        .all(cutoffs) as Array<{ nar_hash: string; blob_key: string; file_size: number; attested: number }>;
      const nars = rows.map((r) => ({ narHash: r.nar_hash as NarHash, blobKey: r.blob_key, fileSize: r.file_size, attested: r.attested === 1 }));
      return { nars, lastLeaf };
    })();
  }

  /**
   * Deletes `nar`'s row if it is still collectable, re-checking in one transaction what may have
   * changed since collectable(): a quorum decision, a new attestation (after `lastLeaf`; leaves are
   * never removed, so an attested NAR stays attested), or a re-upload (a fresh created_at).
   */
  removeIfCollectable(nar: CollectableNar, cutoffs: CollectCutoffs, lastLeaf: number): NarRecord | undefined {
    const row = this.deleteCollectable.get({ ...cutoffs, narHash: nar.narHash, blobKey: nar.blobKey, attested: nar.attested ? 1 : 0, lastLeaf });
    return row && fromRow(row);
  }
}

/** Times (unix ms) before which a NAR without quorum may be collected; see NarCatalog.collectable. */
export interface CollectCutoffs {
  /** Uploads precede their attestations, so an unattested NAR is only garbage after a grace period. */
  unattestedBefore: number;
  /** The retention period for attested NARs whose paths never reached quorum. */
  unadvertisedBefore: number;
}

export interface CollectableNar {
  narHash: NarHash;
  blobKey: string;
  fileSize: number;
  /** Some attestation names this NAR (as of the snapshot it was found in). */
  attested: boolean;
}
