import { rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openDb, type Db } from '../../src/db.js';
import { createLogger } from '../../src/log.js';
import { WalCheckpointer, type CheckpointResult } from '../../src/wal/checkpointer.js';
import { tempDir } from '../helpers/nix.js';

describe('WalCheckpointer', () => {
  let dir: string;
  let db: Db;
  beforeEach(() => {
    dir = tempDir('walckpt');
    db = openDb(join(dir, 'ledger.sqlite'));
  });
  afterEach(() => {
    if (db.open) db.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('takes checkpoints off the committing connection and copies every frame on its timer', async () => {
    const checkpointer = new WalCheckpointer(db, createLogger('error'), 50);
    expect(db.pragma('wal_autocheckpoint', { simple: true })).toBe(0);
    const results: CheckpointResult[] = [];
    checkpointer.onCheckpoint((r) => results.push(r));
    // More than SQLite's 1,000-page auto-checkpoint threshold, so without the worker nothing would be copied.
    const insert = db.prepare("INSERT INTO meta (key, value) VALUES (?, hex(randomblob(2000)))");
    db.transaction(() => {
      for (let i = 0; i < 3000; i++) insert.run(`k${i}`);
    })();
    for (let i = 0; i < 100 && !results.some((r) => r.log > 1000 && r.checkpointed === r.log); i++) await new Promise((r) => setTimeout(r, 50));
    expect(results.some((r) => r.log > 1000 && r.checkpointed === r.log)).toBe(true);
    checkpointer.close();
    db.close();
    // The last connection to close checkpoints and removes the WAL; the data is in the database file.
    expect(() => statSync(join(dir, 'ledger.sqlite-wal'))).toThrow(/ENOENT/);
    db = openDb(join(dir, 'ledger.sqlite'));
    expect(db.prepare('SELECT COUNT(*) FROM meta WHERE key LIKE ?').pluck().get('k%')).toBe(3000);
  });
});
