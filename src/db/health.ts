import Database from 'better-sqlite3';
import { QuorumError } from '../errors.js';
import type { Logger } from '../log.js';

/**
 * SQLite result codes (and their extended forms, e.g. SQLITE_IOERR_READ) that mean the file cannot
 * be read as a database: damaged pages (a failing disk, a copy taken mid-write), another file put in
 * its place, a file gone or turned into a folder, I/O errors of the device.
 */
const UNREADABLE = ['SQLITE_CORRUPT', 'SQLITE_NOTADB', 'SQLITE_IOERR', 'SQLITE_CANTOPEN', 'SQLITE_PERM'];

/** `err` as a 'database-unreadable' QuorumError naming `file`, if that is what it says; else undefined. */
export function unreadableDatabase(err: unknown, file: string): QuorumError | undefined {
  if (err instanceof QuorumError) return err.code === 'database-unreadable' ? err : undefined;
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== 'string' || !UNREADABLE.some((c) => code === c || code.startsWith(`${c}_`))) return undefined;
  return new QuorumError('database-unreadable', `the database ${file} cannot be read (${code}: ${(err as Error).message}): restore it from a backup, or move it away to start a new ledger`, { cause: err });
}

/**
 * Whether the ledger database can still be read, for /healthz. Two sources: a query of the server
 * that failed because the database is damaged (remembered until restart: damage does not heal, and
 * the page cache may hide it from later queries), and a probe on a new connection, which reads the
 * file itself rather than cached pages, so a file replaced, removed or overwritten under the running
 * server shows at once.
 */
export class DatabaseHealth {
  private seen: string | undefined;
  private lastProblem: string | null = null;

  constructor(
    private readonly file: string,
    private readonly logger: Logger,
  ) {}

  /** Looks at an error a query threw: the 'database-unreadable' error it means (remembered), or undefined. */
  notice(err: unknown): QuorumError | undefined {
    const fault = unreadableDatabase(err, this.file);
    if (fault && this.seen === undefined) {
      this.seen = this.lastProblem = fault.message;
      this.logger.error('the ledger database is unreadable', { file: this.file, err: fault });
    }
    return fault;
  }

  /** Why the database cannot be relied on, or null. */
  problem(): string | null {
    const problem = this.seen ?? this.probe();
    if (problem !== null && problem !== this.lastProblem) this.logger.error('the ledger database is unreadable', { file: this.file, problem });
    this.lastProblem = problem;
    return problem;
  }

  private probe(): string | null {
    let db: Database.Database | undefined;
    try {
      db = new Database(this.file, { readonly: true, fileMustExist: true });
      // The schema (page 1) and the log's newest leaf: what every answer of the server depends on.
      db.prepare('SELECT COUNT(*) FROM sqlite_schema').get();
      db.prepare('SELECT MAX(idx) FROM merkle_nodes WHERE level = 0').get();
      return null;
    } catch (err) {
      return unreadableDatabase(err, this.file)?.message ?? `the database ${this.file} cannot be read: ${(err as Error).message}`;
    } finally {
      db?.close();
    }
  }
}
