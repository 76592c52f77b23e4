import Database from 'better-sqlite3';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { openDb } from '../src/db.js';
import { tempDir } from './helpers/nix.js';
import { randomNarHash, randomStorePath } from './helpers/ledger.js';

// The decisions table as schema.sql defined it before it became a rowid table with cache_sig.
const OLD_DECISIONS = `
CREATE TABLE decisions (
  policy TEXT NOT NULL, out_path TEXT NOT NULL, status TEXT NOT NULL CHECK (status IN ('quorum', 'pending', 'blocked')),
  nar_hash TEXT, nar_size INTEGER, refs TEXT, deriver TEXT, sigs TEXT, agreeing INTEGER NOT NULL, reason TEXT NOT NULL,
  updated_at INTEGER NOT NULL, PRIMARY KEY (policy, out_path)
) WITHOUT ROWID;
CREATE INDEX decisions_status ON decisions (policy, status);
CREATE INDEX decisions_nar ON decisions (nar_hash);`;

describe('openDb on a database of an older schema', () => {
  it('rebuilds a table whose layout changed, keeps its rows, and brings back its triggers and indexes', () => {
    const dir = tempDir('db');
    const file = join(dir, 'ledger.sqlite');
    try {
      openDb(file).close();
      const old = new Database(file);
      for (const trigger of old.prepare("SELECT name FROM sqlite_schema WHERE type = 'trigger'").pluck().all() as string[]) old.exec(`DROP TRIGGER ${trigger}`);
      old.exec(`DROP TABLE decisions; ${OLD_DECISIONS}`);
      const [advertised, pending, later] = [randomStorePath('a'), randomStorePath('b'), randomStorePath('c')];
      const narHash = randomNarHash();
      const insert = old.prepare('INSERT INTO decisions (policy, out_path, status, nar_hash, nar_size, refs, deriver, sigs, agreeing, reason, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)');
      insert.run('default', advertised, 'quorum', narHash, 120, '', null, 'b1:sig', 2, '2 of 2 trusted keys agree (threshold 2)', 1);
      insert.run('default', pending, 'pending', null, null, null, null, null, 1, '1 of 2 trusted keys agree; 2 needed', 2);
      old.prepare("INSERT INTO nars (nar_hash, nar_size, blob_key, compression, file_hash, file_size, created_at) VALUES (?, 120, 'nar/x.nar', 'none', ?, 120, 1)").run(narHash, narHash);
      old.exec("INSERT INTO web_advertised (policy, paths) VALUES ('default', 1)");
      old.close();

      const db = openDb(file);
      const layout = (db.pragma('table_list') as Array<{ name: string; wr: number }>).find((t) => t.name === 'decisions');
      expect(layout?.wr).toBe(0);
      expect(db.prepare('SELECT out_path, status, nar_hash, sigs, cache_sig, reason FROM decisions ORDER BY updated_at').all()).toEqual([
        { out_path: advertised, status: 'quorum', nar_hash: narHash, sigs: 'b1:sig', cache_sig: null, reason: '2 of 2 trusted keys agree (threshold 2)' },
        { out_path: pending, status: 'pending', nar_hash: null, sigs: null, cache_sig: null, reason: '1 of 2 trusted keys agree; 2 needed' },
      ]);
      const indexes = db.prepare("SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'decisions'").pluck().all();
      expect(indexes).toEqual(expect.arrayContaining(['decisions_quorum_nar']));
      expect(indexes).not.toContain('decisions_status');
      expect(indexes).not.toContain('decisions_nar');
      // The web counters' triggers are back: a second advertised path with a NAR counts.
      db.prepare("INSERT INTO decisions (policy, out_path, status, nar_hash, nar_size, refs, agreeing, reason, updated_at) VALUES ('default', ?, 'quorum', ?, 120, '', 2, 'r', 3)").run(later, narHash);
      expect(db.prepare("SELECT paths FROM web_advertised WHERE policy = 'default'").pluck().get()).toBe(2);
      db.close();

      const again = openDb(file);
      expect(again.prepare('SELECT COUNT(*) FROM decisions').pluck().get()).toBe(3);
      again.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// The advertised-paths trigger on decisions as schema.sql defined it before it fired only on a change of status or NAR.
const OLD_ADVERTISED_TRIGGER = `
CREATE TRIGGER web_advertised_decision_update AFTER UPDATE ON decisions BEGIN
  UPDATE web_advertised SET paths = paths - 1
    WHERE policy = OLD.policy AND OLD.status = 'quorum' AND EXISTS (SELECT 1 FROM nars WHERE nar_hash = OLD.nar_hash);
  INSERT INTO web_advertised (policy, paths)
    SELECT NEW.policy, 1 WHERE NEW.status = 'quorum' AND EXISTS (SELECT 1 FROM nars WHERE nar_hash = NEW.nar_hash)
    ON CONFLICT (policy) DO UPDATE SET paths = paths + 1;
END;`;

describe('openDb on a database with the older advertised-paths trigger', () => {
  it('replaces it, so each decision counts once however often it is updated', () => {
    const dir = tempDir('db');
    const file = join(dir, 'trigger.sqlite');
    try {
      const first = openDb(file);
      first.exec('DROP TRIGGER web_advertised_decision_change');
      first.exec(OLD_ADVERTISED_TRIGGER);
      first.close();

      const db = openDb(file);
      const narHash = randomNarHash();
      db.prepare("INSERT INTO nars (nar_hash, nar_size, blob_key, compression, file_hash, file_size, created_at) VALUES (?, 120, 'nar/x.nar', 'none', ?, 120, 1)").run(narHash, narHash);
      const outPath = randomStorePath('a');
      db.prepare("INSERT INTO decisions (policy, out_path, status, nar_hash, nar_size, refs, agreeing, reason, updated_at) VALUES ('default', ?, 'quorum', ?, 120, '', 2, 'r', 1)").run(outPath, narHash);
      const advertised = () => db.prepare("SELECT paths FROM web_advertised WHERE policy = 'default'").pluck().get();
      expect(advertised()).toBe(1);
      db.prepare("UPDATE decisions SET agreeing = 3, cache_sig = 'k:sig' WHERE out_path = ?").run(outPath);
      expect(advertised()).toBe(1);
      db.prepare("UPDATE decisions SET status = 'blocked', nar_hash = NULL WHERE out_path = ?").run(outPath);
      expect(advertised()).toBe(0);
      db.prepare("UPDATE decisions SET status = 'quorum', nar_hash = ? WHERE out_path = ?").run(narHash, outPath);
      expect(advertised()).toBe(1);
      db.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

const columns = (db: ReturnType<typeof openDb>, table: string) => db.prepare('SELECT name FROM pragma_table_info(?)').pluck().all(table) as string[];

describe('openDb on a database without a column added since', () => {
  it('adds the column, keeping its rows, and opens it again unchanged', () => {
    const dir = tempDir('db');
    const file = join(dir, 'older.sqlite');
    const older = openDb(file);
    // A database written before nars.file_crc32 existed.
    older.exec('ALTER TABLE nars DROP COLUMN file_crc32');
    older.prepare("INSERT INTO nars (nar_hash, nar_size, blob_key, compression, file_hash, file_size, created_at) VALUES ('sha256:x', 1, 'nar/x.nar', 'none', 'sha256:x', 1, 0)").run();
    expect(columns(older, 'nars')).not.toContain('file_crc32');
    older.close();

    for (let i = 0; i < 2; i++) {
      const db = openDb(file);
      expect(columns(db, 'nars')).toContain('file_crc32');
      expect(db.prepare('SELECT nar_hash, file_crc32 FROM nars').all()).toEqual([{ nar_hash: 'sha256:x', file_crc32: null }]);
      db.close();
    }
    rmSync(dir, { recursive: true, force: true });
  });
});
