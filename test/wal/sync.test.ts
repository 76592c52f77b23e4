import Database from 'better-sqlite3';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { WalSync } from '../../src/wal/sync.js';
import { tempDir } from '../helpers/nix.js';

describe('WalSync', () => {
  let dir: string;
  let db: Database.Database;
  beforeEach(() => {
    dir = tempDir('walsync');
    db = new Database(join(dir, 'db.sqlite'));
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    db.exec('CREATE TABLE t (x INTEGER)');
  });
  afterEach(() => {
    db.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('flushes the WAL of a NORMAL commit, and callers waiting during a flush share the next one', async () => {
    const sync = new WalSync(join(dir, 'db.sqlite-wal'));
    try {
      db.prepare('INSERT INTO t VALUES (1)').run();
      await sync.sync();
      expect(sync.syncs).toBe(1);
      // Twenty commits, each followed by a sync request while the first flush may still run.
      const waits = Array.from({ length: 20 }, (_, i) => {
        db.prepare('INSERT INTO t VALUES (?)').run(i);
        return sync.sync();
      });
      await Promise.all(waits);
      // The first request starts a flush; the nineteen after it arrived while it ran and share one more.
      expect(sync.syncs).toBe(3);
    } finally {
      sync.close();
    }
  });

  it('rejects every waiter when the WAL cannot be opened', async () => {
    const sync = new WalSync(join(dir, 'missing.sqlite-wal'));
    const results = await Promise.allSettled([sync.sync(), sync.sync()]);
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected']);
    expect(String((results[0] as PromiseRejectedResult).reason)).toMatch(/ENOENT/);
  });
});
