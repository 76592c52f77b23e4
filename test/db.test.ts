import Database from 'better-sqlite3';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { openDb } from '../src/db.js';
import { SCHEMA_VERSION } from '../src/db/migrations.js';
import { MerkleLog } from '../src/ledger/log.js';
import { parseAttestation } from '../src/ledger/attestation.js';
import { createLogger } from '../src/log.js';
import { generateSecretKey } from '../src/nix/keys.js';
import { openService } from '../src/service.js';
import { appendAttestations202611, ledger202611 } from './helpers/ledger202611.js';
import { tempDir } from './helpers/nix.js';
import { randomNarHash, randomStorePath, signedAttestation, testConfig } from './helpers/ledger.js';

/** Everything about a database's layout that the schema decides: tables with their columns, indexes, triggers. */
function layout(db: Database.Database) {
  const objects = db.prepare("SELECT type, name, tbl_name FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name").all() as Array<{ type: string; name: string; tbl_name: string }>;
  return objects.map((o) => {
    if (o.type === 'table') {
      const wr = (db.pragma('table_list') as Array<{ name: string; wr: number }>).find((t) => t.name === o.name)?.wr;
      return { ...o, wr, columns: db.pragma(`table_xinfo("${o.name}")`) };
    }
    if (o.type === 'index') return { ...o, columns: db.pragma(`index_xinfo("${o.name}")`), partial: /\bWHERE\b/i.test(String(db.prepare('SELECT sql FROM sqlite_schema WHERE name = ?').pluck().get(o.name) ?? '')) };
    return { ...o, sql: String(db.prepare('SELECT sql FROM sqlite_schema WHERE name = ?').pluck().get(o.name)).replace(/\s+/g, ' ') };
  });
}

/** A ledger as nix-quorum wrote it in 2026-11, with a registry, policies and attestations. */
function ledgerOf202611(file: string) {
  const db = ledger202611(file);
  const alice = generateSecretKey('alice-1');
  const bob = generateSecretKey('bob-1');
  const addBuilder = db.prepare('INSERT INTO builders (name, public_key, added_at, revoked_at) VALUES (?, ?, ?, ?)');
  addBuilder.run('alice-1', alice.publicKey.raw, 1000, null);
  addBuilder.run('bob-1', bob.publicKey.raw, 2000, 5000);
  // The alias attack of old: alice's key under a second name.
  addBuilder.run('alice-alias-1', alice.publicKey.raw, 3000, null);
  // The identity point: anybody can sign for it.
  addBuilder.run('nobody-1', Buffer.concat([Buffer.from([1]), Buffer.alloc(31)]), 4000, null);
  db.exec("INSERT INTO policies (name, threshold, on_conflict, all_builders, updated_at) VALUES ('default', 2, 'block', 1, 100), ('strict', 2, 'ignore', 0, 200)");
  db.exec("INSERT INTO policy_builders (policy, builder_name) VALUES ('strict', 'bob-1'), ('strict', 'alice-1')");
  appendAttestations202611(db, 1, [0, 1].map((i) => parseAttestation({ ...signedAttestation(alice, { outPath: randomStorePath(`p${i}`), narHash: randomNarHash() }), narinfoSignature: null })));
  db.close();
  return { alice, bob };
}

describe('the schema and its numbered migrations', () => {
  it('makes a new ledger from schema.sql, at the latest version', () => {
    const dir = tempDir('db');
    try {
      const db = openDb(join(dir, 'ledger.sqlite'));
      expect(db.pragma('user_version', { simple: true })).toBe(SCHEMA_VERSION);
      expect(db.prepare("SELECT COUNT(*) FROM sqlite_schema WHERE name = 'operator_leaves'").pluck().get()).toBe(1);
      db.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('migrates a 2026-11 ledger once: its registry and policies become leaves after its attestations, and its layout is a new ledger\'s', () => {
    const dir = tempDir('db');
    try {
      const file = join(dir, 'ledger.sqlite');
      const { alice, bob } = ledgerOf202611(file);
      const said: string[] = [];
      const db = openDb(file, (line) => said.push(line));
      expect(said).toHaveLength(4);
      expect(said[3]).toBe('migration 4 (2026-12-02, mirror staging and evidence): created mirror_staging and mirror_evidence');
      expect(said[1]).toBe('migration 2 (2026-12-02, witness cosignatures): added the tables cosignatures, witness_logs and witness_evidence');
      expect(said[2]).toBe('migration 3 (2026-12-02, build logs and NAR listings): created nar_listings and build_logs (NARs stored before have no listing)');
      expect(said[0]).toMatch(/^migration 1 \(2026-12-02, registry and policy leaves in the log\): appended the registry \(2 builders, 1 revocations\) and 2 policies to the log as leaves 2 to 6/);
      expect(said[0]).toMatch(/not carried over, and never counting again: alice-alias-1 \(same key as alice-1\), nobody-1 \(it is a point of small order/);
      expect(db.prepare('SELECT leaf_index, leaf FROM operator_leaves ORDER BY leaf_index').raw().all()).toEqual([
        [2, `nix-quorum-builder-v1;add;alice-1;${alice.publicKey.raw.toString('base64')};1000`],
        [3, `nix-quorum-builder-v1;add;bob-1;${bob.publicKey.raw.toString('base64')};2000`],
        [4, 'nix-quorum-builder-v1;revoke;bob-1;;5000'],
        [5, 'nix-quorum-policy-v1;default;2;block;*;100'],
        [6, 'nix-quorum-policy-v1;strict;2;ignore;alice-1,bob-1;200'],
      ]);
      expect(new MerkleLog(db).size()).toBe(7);
      expect(db.prepare('SELECT name, added_leaf, revoked_leaf FROM builders ORDER BY id').raw().all()).toEqual([
        ['alice-1', 2, null],
        ['bob-1', 3, 4],
        ['alice-alias-1', null, null],
        ['nobody-1', null, null],
      ]);

      const fresh = openDb(join(dir, 'fresh.sqlite'));
      expect(layout(db)).toEqual(layout(fresh));
      fresh.close();
      db.close();

      const again: string[] = [];
      openDb(file, (line) => again.push(line)).close();
      expect(again).toEqual([]);

      // The server derives its registry from these leaves: the alias and the identity key never count.
      const service = openService(testConfig(dir), createLogger('error'));
      try {
        expect(service.registry.active().map((b) => b.name)).toEqual(['alice-1']);
        expect(service.log.size()).toBe(7);
      } finally {
        service.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses a ledger of a newer schema, and one older than the 2026-11 layout, changing nothing', () => {
    const dir = tempDir('db');
    try {
      const newer = join(dir, 'newer.sqlite');
      openDb(newer).close();
      const n = new Database(newer);
      n.pragma(`user_version = ${SCHEMA_VERSION + 1}`);
      n.close();
      expect(() => openDb(newer)).toThrow(/schema version \d+, newer than this nix-quorum knows/);

      const older = join(dir, 'older.sqlite');
      ledgerOf202611(older);
      const o = new Database(older);
      o.exec('ALTER TABLE nars DROP COLUMN file_crc32');
      o.close();
      expect(() => openDb(older)).toThrow(/predates the 2026-11 layout \(table nars lacks file_crc32\)/);
      const after = new Database(older);
      expect(after.pragma('user_version', { simple: true })).toBe(0);
      expect(after.prepare("SELECT COUNT(*) FROM sqlite_schema WHERE name = 'operator_leaves'").pluck().get()).toBe(0);
      after.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
