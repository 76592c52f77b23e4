import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';

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
  };
}

/** Writes a file durably and atomically (temp, fsync, rename, fsync dir) with the given mode. */
export function writeFileDurable(file: string, content: string, mode = 0o644): void {
  mkdirSync(dirname(file), { recursive: true });
  const tmp = `${file}.tmp-${process.pid}`;
  const fd = openSync(tmp, 'w', mode);
  try {
    writeSync(fd, content);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, file);
  const dir = openSync(dirname(file), 'r');
  try {
    fsyncSync(dir);
  } finally {
    closeSync(dir);
  }
}

/** Reads a secret file, creating it with `make()` (mode 0600) if it does not exist yet. */
export function readOrCreate(file: string, make: () => string, mode = 0o600): string {
  if (!existsSync(file)) writeFileDurable(file, make(), mode);
  return readFileSync(file, 'utf8').trim();
}

export function newAdminToken(): string {
  return randomBytes(32).toString('hex');
}
