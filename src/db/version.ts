import type { Statement } from 'better-sqlite3';
import type { Db } from '../db.js';

/**
 * What caches of database state are keyed on. SQLite's `data_version` moves when another connection
 * (another process: an admin command, an editor of the file) commits; a commit of this connection
 * does not move it, so this process's own changes bump `generation` (touch) instead.
 *
 * `data_version` is read at most once per event-loop turn: ingest asks for the registry several
 * times per attestation, and a commit elsewhere during one synchronous turn is seen from the next,
 * as for any request that raced it. This process's own changes are seen at once.
 */
export class DbVersion {
  private readonly statement: Statement<[], number>;
  /** Bumped by this process's own changes. */
  generation = 0;
  private read: number | undefined;

  constructor(db: Db) {
    this.statement = db.prepare<[], number>('PRAGMA data_version').pluck();
  }

  /** SQLite's data_version, as of this event-loop turn. */
  dataVersion(): number {
    if (this.read === undefined) {
      this.read = this.statement.get()!;
      setImmediate(() => (this.read = undefined));
    }
    return this.read;
  }

  /** Called after this process changed state that caches hold. */
  touch(): void {
    this.generation++;
  }
}

/** A value derived from the database, loaded again whenever the database version moved. */
export class Derived<T> {
  private value: T | undefined;
  private dataVersion = -1;
  private generation = -1;

  constructor(
    private readonly version: DbVersion,
    private readonly load: () => T,
  ) {}

  get(): T {
    const dataVersion = this.version.dataVersion();
    if (this.value === undefined || dataVersion !== this.dataVersion || this.version.generation !== this.generation) {
      this.value = this.load();
      this.dataVersion = dataVersion;
      this.generation = this.version.generation;
    }
    return this.value;
  }
}
