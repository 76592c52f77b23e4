import Database from 'better-sqlite3';
import { readFileSync } from 'node:fs';
import { SCHEMA_FILE } from './paths.js';

export type Db = Database.Database;

let schemaText: string | undefined;
function schema(): string {
  schemaText ??= readFileSync(SCHEMA_FILE, 'utf8');
  return schemaText;
}

/**
 * Opens (and creates) the ledger database. WAL with synchronous=FULL: a COMMIT returns only after the
 * WAL is fsync'd, which is what makes "2xx means durable" true; group commit keeps fsyncs rare.
 */
export function openDb(file: string): Db {
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.pragma('foreign_keys = ON');
  db.pragma('busy_timeout = 10000');
  // Ingest touches index pages at random (paths are hashes): keep a large share of them in memory.
  db.pragma('cache_size = -131072');
  // A WAL that grew during a burst is cut back to this size once it restarts, not kept at its peak.
  db.pragma('journal_size_limit = 67108864');
  db.exec(schema());
  return db;
}
