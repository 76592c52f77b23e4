import Database from 'better-sqlite3';
import { readFileSync } from 'node:fs';
import { MIGRATIONS, SCHEMA_VERSION } from './db/migrations.js';
import { QuorumError } from './errors.js';
import { asStorageFull } from './faults/storageFull.js';
import { unreadableDatabase } from './db/health.js';
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
 * A new database is made from schema.sql; an older one is migrated (`onMigrated` hears each step).
 */
export function openDb(file: string, onMigrated: (line: string) => void = () => {}): Db {
  let db: Db | undefined;
  try {
    db = new Database(file);
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = FULL');
    db.pragma('foreign_keys = ON');
    db.pragma('busy_timeout = 10000');
    // Ingest touches index pages at random (paths are hashes): keep a large share of them in memory.
    db.pragma('cache_size = -131072');
    // A WAL that grew during a burst is cut back to this size once it restarts, not kept at its peak.
    db.pragma('journal_size_limit = 67108864');
    migrate(db, onMigrated);
    // Indexes a bulk load dropped (dropIndexes) and a crash kept it from building again.
    restoreIndexes(db);
    return db;
  } catch (error) {
    db?.close();
    // A damaged or foreign file, or a full disk, is said in one line (the CLI prints it), not as a stack.
    throw unreadableDatabase(error, file) ?? asStorageFull(error, `opening the ledger database ${file}`) ?? error;
  }
}

/**
 * schema.sql's plain (not UNIQUE) CREATE INDEX statements, by index name. A UNIQUE index is a rule,
 * not a speed-up: it is never dropped, and building it on a tampered database would fail its open.
 */
function schemaIndexes(): Map<string, string> {
  return new Map([...schema().matchAll(/^CREATE INDEX IF NOT EXISTS (\w+) [^;]+;/gm)].map((m) => [m[1]!, m[0]]));
}

/**
 * Drops indexes of schema.sql, for a bulk load: its rows are cheaper to index once, sorted, than with
 * a random page write each as they come. restoreIndexes builds them again, and so does every open,
 * so a crash in between leaves no index missing.
 */
export function dropIndexes(db: Db, names: readonly string[]): void {
  const known = schemaIndexes();
  for (const name of names) {
    if (!known.has(name)) throw new Error(`${name} is not an index of schema.sql`);
    db.exec(`DROP INDEX IF EXISTS ${name}`);
  }
}

/** Builds the indexes of schema.sql the database lacks, of `names` or all (see dropIndexes). */
export function restoreIndexes(db: Db, names?: readonly string[]): void {
  for (const [name, statement] of schemaIndexes()) if (!names || names.includes(name)) db.exec(statement);
}

/**
 * A database without tables is new: schema.sql, at the latest version. Otherwise each migration
 * newer than its `user_version` runs, in order, each in one transaction with its version bump.
 */
function migrate(db: Db, onMigrated: (line: string) => void): void {
  const version = db.pragma('user_version', { simple: true }) as number;
  if (version > SCHEMA_VERSION) throw new QuorumError('schema-migration', `this ledger has schema version ${version}, newer than this nix-quorum knows (${SCHEMA_VERSION}): run a newer nix-quorum`);
  const fresh = db.prepare("SELECT COUNT(*) FROM sqlite_schema WHERE type = 'table'").pluck().get() === 0;
  if (fresh) {
    db.transaction(() => {
      db.exec(schema());
      db.pragma(`user_version = ${SCHEMA_VERSION}`);
    }).immediate();
    return;
  }
  for (const m of MIGRATIONS) {
    if (m.version <= version) continue;
    const line = db.transaction(() => {
      // Another process may have migrated meanwhile.
      if ((db.pragma('user_version', { simple: true }) as number) >= m.version) return undefined;
      const said = m.up(db);
      db.pragma(`user_version = ${m.version}`);
      return said;
    }).immediate();
    if (line !== undefined) onMigrated(`migration ${m.version} (${m.date}, ${m.name}): ${line}`);
  }
}

/**
 * Runs `fn` in a transaction whose COMMIT writes the WAL without waiting for the disk
 * (synchronous=NORMAL). What it writes may be acknowledged only after a WalSync that started later
 * resolves, or it must be data that is made again when missing (a crash may lose it, never half of it).
 */
export function commitUnsynced<T>(db: Db, fn: () => T): T {
  // Restored afterwards, not assumed FULL: a bulk loader may run the connection with OFF.
  const before = db.pragma('synchronous', { simple: true }) as number;
  // A pragma, not a prepared statement: SQLite applies this one when it compiles it.
  db.pragma('synchronous = NORMAL');
  try {
    return db.transaction(fn)();
  } finally {
    db.pragma(`synchronous = ${before}`);
  }
}

/**
 * Another connection to a database openDb opened, for reads only (the substituter's lookups, see
 * QuorumLookup): the same page cache size, and no writes.
 */
export function openReader(file: string): Db {
  const db = new Database(file);
  db.pragma('busy_timeout = 10000');
  db.pragma('cache_size = -131072');
  db.pragma('query_only = ON');
  return db;
}

