import Database from 'better-sqlite3';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { QuorumError } from './errors.js';

/** Files of the data directory, created on first start. */
export function dataPaths(dataDir: string) {
  return {
    db: join(dataDir, 'ledger.sqlite'),
    adminToken: join(dataDir, 'admin-token'),
    cacheSecretKey: join(dataDir, 'cache-key.secret'),
    cachePublicKey: join(dataDir, 'cache-key.public'),
    noteSignerKey: join(dataDir, 'log-key.secret'),
    noteVerifierKey: join(dataDir, 'log-key.vkey'),
    nars: join(dataDir, 'nars'),
    lock: join(dataDir, 'serve.lock'),
    /** Where a running server says how to reach it, for admin commands given --data. */
    server: join(dataDir, 'server.json'),
    witnessDb: join(dataDir, 'witness.sqlite'),
    witnessSecretKey: join(dataDir, 'witness-key.secret'),
    witnessVerifierKey: join(dataDir, 'witness-key.vkey'),
  };
}

/** Refuses a data directory without a ledger: every command but serve (which creates one) acts on an existing ledger. */
export function requireLedger(dataDir: string): void {
  if (!existsSync(dataPaths(dataDir).db)) {
    throw new QuorumError('bad-data-dir', `no ledger in ${dataDir}: give the server's data directory with --data (nix-quorum serve --data DIR creates one)`, { field: 'data' });
  }
}

/**
 * An exclusive hold on a data directory, so that one process at a time writes its ledger: a second
 * server would run its own group commit, caches and checkpoints on the same log. The hold is an
 * exclusive SQLite lock (a POSIX lock the kernel drops when the process dies, even by SIGKILL).
 */
export class DataDirLock {
  private constructor(private readonly db: Database.Database) {}

  /** Takes the hold, or throws 'data-dir-locked' if another process has it. */
  static acquire(dataDir: string): DataDirLock {
    const db = new Database(dataPaths(dataDir).lock, { timeout: 0 });
    try {
      db.pragma('locking_mode = EXCLUSIVE');
      // The first write takes the exclusive lock; EXCLUSIVE locking mode keeps it until close.
      db.exec('CREATE TABLE IF NOT EXISTS held (pid INTEGER); DELETE FROM held;');
      db.prepare('INSERT INTO held (pid) VALUES (?)').run(process.pid);
      return new DataDirLock(db);
    } catch (error) {
      db.close();
      if ((error as { code?: string }).code === 'SQLITE_BUSY') {
        throw new QuorumError('data-dir-locked', `the data directory ${dataDir} is in use by another nix-quorum process (a running server, or an admin command)`, { field: 'data' });
      }
      throw error;
    }
  }

  /** Whether another process holds the directory now. */
  static held(dataDir: string): boolean {
    if (!existsSync(dataPaths(dataDir).lock)) return false;
    try {
      DataDirLock.acquire(dataDir).release();
      return false;
    } catch (error) {
      if (error instanceof QuorumError && error.code === 'data-dir-locked') return true;
      throw error;
    }
  }

  release(): void {
    if (this.db.open) this.db.close();
  }
}

/** Reads the admin token, refusing one too short to be a secret (an empty file would open the admin API to anyone). */
export function readAdminToken(file: string): string {
  const token = readFileSync(file, 'utf8').trim();
  if (token.length < MIN_TOKEN_LENGTH) {
    throw new QuorumError(
      'bad-config',
      `${file} holds ${token.length === 0 ? 'no admin token' : `an admin token of only ${token.length} characters`}: it must be at least ${MIN_TOKEN_LENGTH}; ` +
        `make one with \`openssl rand -hex 32 > ${file}\`, or delete the file to have a new one made`,
      { field: 'admin-token' },
    );
  }
  return token;
}

const MIN_TOKEN_LENGTH = 32;

/** Secret files another user can read, for a warning at start (they are created 0600). */
export function looseSecrets(files: string[]): Array<{ file: string; mode: string }> {
  return files.filter((f) => existsSync(f) && (statSync(f).mode & 0o077) !== 0).map((file) => ({ file, mode: (statSync(file).mode & 0o777).toString(8) }));
}

export function removeQuietly(file: string): void {
  rmSync(file, { force: true });
}

/** What writeFileDurable names its temp file: `<file>.tmp-<pid>`. */
const TEMP_FILE = /\.tmp-[0-9]+$/;

/** Writes a file durably and atomically (temp, fsync, rename, fsync dir) with the given mode; a failed write (a full disk) leaves no temp file. */
export function writeFileDurable(file: string, content: string, mode = 0o644): void {
  mkdirSync(dirname(file), { recursive: true });
  const tmp = `${file}.tmp-${process.pid}`;
  try {
    const fd = openSync(tmp, 'w', mode);
    try {
      writeSync(fd, content);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, file);
  } catch (error) {
    rmSync(tmp, { force: true });
    throw error;
  }
  const dir = openSync(dirname(file), 'r');
  try {
    fsyncSync(dir);
  } finally {
    closeSync(dir);
  }
}

/**
 * Removes the temp files writeFileDurable left in the data directory when a process died between
 * its write and its rename (a SIGKILL, a power cut). Only while holding DataDirLock: then no other
 * nix-quorum process writes there, and this one's writes are synchronous, so none is in flight.
 * Returns the names removed.
 */
export function removeLeftoverTempFiles(dataDir: string): string[] {
  const names = readdirSync(dataDir).filter((name) => TEMP_FILE.test(name));
  for (const name of names) rmSync(join(dataDir, name), { force: true });
  return names;
}

/** Reads a secret file, creating it with `make()` (mode 0600) if it does not exist yet. */
export function readOrCreate(file: string, make: () => string, mode = 0o600): string {
  if (!existsSync(file)) writeFileDurable(file, make(), mode);
  return readFileSync(file, 'utf8').trim();
}

export function newAdminToken(): string {
  return randomBytes(32).toString('hex');
}
