import Database from 'better-sqlite3';
import { readFileSync } from 'node:fs';
import { QuorumError } from './errors.js';
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
  migrate(db);
  db.exec(schema());
  return db;
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

interface TableColumn {
  name: string;
  type: string;
  notnull: number;
  dflt_value: string | null;
  pk: number;
}

/** Columns and layout of each ordinary table, as comparable text. */
function tableShapes(db: Db): Map<string, string> {
  const tables = db.pragma('table_list') as Array<{ schema: string; name: string; type: string; wr: number; strict: number }>;
  const shapes = new Map<string, string>();
  for (const t of tables) {
    if (t.schema !== 'main' || t.type !== 'table' || t.name.startsWith('sqlite_')) continue;
    const columns = (db.pragma(`table_xinfo("${t.name}")`) as TableColumn[]).map((c) => [c.name, c.type, c.notnull, c.dflt_value, c.pk]);
    shapes.set(t.name, JSON.stringify({ withoutRowid: t.wr, strict: t.strict, columns }));
  }
  return shapes;
}

/**
 * Brings the tables of an existing database to schema.sql. A table whose columns or layout differ is
 * rebuilt the way SQLite documents for changes ALTER TABLE cannot make (a new table, the columns both
 * have copied, the old one dropped, the new one renamed); triggers are dropped first and come back,
 * with the rebuilt tables' indexes, when schema.sql is applied. One transaction: all or nothing.
 */
function migrate(db: Db): void {
  const wanted = new Database(':memory:');
  try {
    wanted.exec(schema());
    const target = tableShapes(wanted);
    const stale = () => {
      const current = tableShapes(db);
      return [...target].filter(([name, shape]) => current.has(name) && current.get(name) !== shape).map(([name]) => name);
    };
    if (stale().length === 0) return;
    // Has no effect inside a transaction; a rebuild drops tables that others reference.
    db.pragma('foreign_keys = OFF');
    try {
      db.transaction(() => {
        const tables = stale();
        if (tables.length === 0) return;
        for (const trigger of db.prepare("SELECT name FROM sqlite_schema WHERE type = 'trigger'").pluck().all() as string[]) db.exec(`DROP TRIGGER "${trigger}"`);
        for (const name of tables) {
          const sql = wanted.prepare("SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = ?").pluck().get(name) as string;
          const rebuilt = `${name}_rebuilt`;
          db.exec(`CREATE TABLE "${rebuilt}"${sql.slice(`CREATE TABLE ${name}`.length)}`);
          const have = new Set((db.pragma(`table_xinfo("${name}")`) as TableColumn[]).map((c) => c.name));
          const columns = (wanted.pragma(`table_xinfo("${name}")`) as TableColumn[]).filter((c) => have.has(c.name)).map((c) => `"${c.name}"`).join(', ');
          db.exec(`INSERT INTO "${rebuilt}" (${columns}) SELECT ${columns} FROM "${name}"; DROP TABLE "${name}"; ALTER TABLE "${rebuilt}" RENAME TO "${name}"`);
        }
        db.exec(schema());
        const broken = db.pragma('foreign_key_check') as unknown[];
        if (broken.length > 0) throw new QuorumError('schema-migration', `rebuilding ${tables.join(', ')} for schema.sql would break ${broken.length} foreign key references`);
      }).immediate();
    } finally {
      db.pragma('foreign_keys = ON');
    }
  } finally {
    wanted.close();
  }
}
