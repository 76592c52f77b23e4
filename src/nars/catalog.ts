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
  createdAt: number;
}

interface NarRow {
  nar_hash: string;
  nar_size: number;
  blob_key: string;
  compression: string;
  file_hash: string;
  file_size: number;
  created_at: number;
}

const fromRow = (r: NarRow): NarRecord => ({
  narHash: r.nar_hash as NarHash,
  narSize: r.nar_size,
  blobKey: r.blob_key,
  compression: r.compression,
  fileHash: r.file_hash,
  fileSize: r.file_size,
  createdAt: r.created_at,
});

export const isUpstreamKey = (blobKey: string) => /^https?:\/\//.test(blobKey);

/** The nars table: which NARs exist. A row is written only after its blob is durable. */
export class NarCatalog {
  private readonly byHash: Statement<[string], NarRow>;
  private readonly insertRow: Statement<unknown[]>;
  private readonly added: Array<(narHash: NarHash) => void> = [];

  constructor(private readonly db: Db) {
    this.byHash = db.prepare('SELECT * FROM nars WHERE nar_hash = ?');
    this.insertRow = db.prepare(
      'INSERT OR IGNORE INTO nars (nar_hash, nar_size, blob_key, compression, file_hash, file_size, uploaded_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
    );
  }

  get(narHash: string): NarRecord | undefined {
    const row = this.byHash.get(narHash);
    return row && fromRow(row);
  }

  add(record: Omit<NarRecord, 'createdAt'>, uploadedBy: number | null): void {
    this.insertRow.run(record.narHash, record.narSize, record.blobKey, record.compression, record.fileHash, record.fileSize, uploadedBy, Date.now());
    for (const listener of this.added) listener(record.narHash);
  }

  /** Called after a NAR is catalogued (paths waiting only for their NAR become advertised). */
  onAdd(listener: (narHash: NarHash) => void): void {
    this.added.push(listener);
  }

  remove(narHash: string): void {
    this.db.prepare('DELETE FROM nars WHERE nar_hash = ?').run(narHash);
  }
}
