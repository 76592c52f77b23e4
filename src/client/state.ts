import Database from 'better-sqlite3';
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { readOrCreate } from '../dataDir.js';
import type { Db } from '../db.js';
import { formatPublicKey, formatSecretKey, generateSecretKey, parseSecretKey, type SecretKey } from '../nix/keys.js';
import type { VerifiedHead } from '../verification/consistency.js';

/** The newest checkpoint this client verified for a log, with its note (cosignatures included). */
export interface StoredHead extends VerifiedHead {
  note: string;
  verifiedAt: number;
}

export interface Evidence {
  detectedAt: number;
  ledger: string;
  code: string;
  detail: string;
  verifiedNote: string | null;
  offeredNote: string;
}

/*
 * STATE/client.sqlite: the client's own, apart from the server's schema.sql. WAL with
 * synchronous=FULL: a head is on disk before anything verified against it is answered, so a
 * restart never forgets the newest checkpoint (and with it the rollback check).
 */
const SCHEMA = `
CREATE TABLE IF NOT EXISTS heads (
  origin      TEXT PRIMARY KEY,
  tree_size   INTEGER NOT NULL,
  root_hash   BLOB NOT NULL,
  note        TEXT NOT NULL,
  verified_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS evidence (
  id            INTEGER PRIMARY KEY,
  detected_at   INTEGER NOT NULL,
  ledger        TEXT NOT NULL,
  code          TEXT NOT NULL,
  detail        TEXT NOT NULL,
  verified_note TEXT,
  offered_note  TEXT NOT NULL,
  UNIQUE (code, offered_note)
);`;

/** The state directory: the client's signing key, its newest verified checkpoint, the evidence it kept. */
export class ClientState {
  readonly key: SecretKey;
  /** Whether this start created the key (the nix.conf lines are new to the user). */
  readonly created: boolean;
  private readonly db: Db;

  constructor(readonly dir: string) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const secret = join(dir, 'client-key.secret');
    let created = false;
    this.key = parseSecretKey(
      readOrCreate(secret, () => {
        created = true;
        return formatSecretKey(generateSecretKey(`nix-quorum-client-${randomBytes(4).toString('hex')}-1`));
      }),
      secret,
    );
    readOrCreate(join(dir, 'client-key.public'), () => formatPublicKey(this.key.publicKey), 0o644);
    this.created = created;
    this.db = new Database(join(dir, 'client.sqlite'));
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = FULL');
    this.db.pragma('busy_timeout = 10000');
    this.db.exec(SCHEMA);
  }

  head(origin: string): StoredHead | null {
    const row = this.db.prepare('SELECT tree_size, root_hash, note, verified_at FROM heads WHERE origin = ?').get(origin) as { tree_size: number; root_hash: Buffer; note: string; verified_at: number } | undefined;
    return row ? { size: row.tree_size, rootHash: row.root_hash, note: row.note, verifiedAt: row.verified_at } : null;
  }

  /** Stores a newer head; a concurrent `--check` may have stored a larger one: the larger stays. */
  storeHead(origin: string, head: StoredHead): void {
    this.db
      .prepare(
        `INSERT INTO heads (origin, tree_size, root_hash, note, verified_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (origin) DO UPDATE SET tree_size = excluded.tree_size, root_hash = excluded.root_hash, note = excluded.note, verified_at = excluded.verified_at
         WHERE excluded.tree_size >= heads.tree_size`,
      )
      .run(origin, head.size, head.rootHash, head.note, head.verifiedAt);
  }

  /** Keeps what the log's key signed that does not follow from what was verified; true if it is new. */
  keepEvidence(e: Evidence): boolean {
    return (
      this.db
        .prepare('INSERT OR IGNORE INTO evidence (detected_at, ledger, code, detail, verified_note, offered_note) VALUES (?, ?, ?, ?, ?, ?)')
        .run(e.detectedAt, e.ledger, e.code, e.detail, e.verifiedNote, e.offeredNote).changes > 0
    );
  }

  evidence(limit = 100): Evidence[] {
    return (this.db.prepare('SELECT detected_at, ledger, code, detail, verified_note, offered_note FROM evidence ORDER BY id DESC LIMIT ?').all(limit) as Array<Record<string, unknown>>).map((r) => ({
      detectedAt: r.detected_at as number,
      ledger: r.ledger as string,
      code: r.code as string,
      detail: r.detail as string,
      verifiedNote: r.verified_note as string | null,
      offeredNote: r.offered_note as string,
    }));
  }

  close(): void {
    this.db.close();
  }
}
