import type { Db } from '../db.js';
import { QuorumError } from '../errors.js';
import { policyLeafText, registryLeafText, type PolicyEntry } from '../ledger/leaf.js';
import { MerkleLog } from '../ledger/log.js';
import { keyIdOf } from '../ledger/registryRules.js';
import { publicKeyProblem } from '../nix/ed25519Point.js';

/**
 * Numbered migrations of an existing ledger, oldest first. `PRAGMA user_version` is the number of
 * the last one applied; a new ledger is made from schema.sql and starts at the latest number. Each
 * runs in one transaction with the version bump: all or nothing. A migration says what it changed in
 * one log line. Add one for every change of schema.sql that touches existing tables or data.
 */
export interface Migration {
  version: number;
  /** When it was written, for the reader of an old ledger. */
  date: string;
  name: string;
  up(db: Db): string;
}

/** Columns of the 2026-11 layout, the last one the inferred rebuild (before numbered migrations) produced. */
const LAYOUT_2026_11: Record<string, string[]> = {
  builders: ['id', 'name', 'public_key', 'added_at', 'revoked_at'],
  decisions: ['policy', 'out_path', 'status', 'nar_hash', 'nar_size', 'refs', 'deriver', 'sigs', 'cache_sig', 'agreeing', 'reason', 'updated_at'],
  nars: ['nar_hash', 'nar_size', 'blob_key', 'compression', 'file_hash', 'file_size', 'uploaded_by', 'created_at', 'file_crc32'],
  policies: ['name', 'threshold', 'on_conflict', 'all_builders', 'updated_at'],
};

function columns(db: Db, table: string): string[] {
  return (db.pragma(`table_info("${table}")`) as Array<{ name: string }>).map((c) => c.name);
}

/**
 * 1. The registry and the policies go into the log (design.md: "a ledger that predates them appends
 * the current registry and policies as leaves when it is upgraded"): one add leaf per builder in
 * registration order, a revoke leaf per revoked one, a policy leaf per policy, appended after the
 * existing leaves. A key under a second name, or of small order, breaks the identity rule and is not
 * carried over: such a row never counts again, and the log line names it.
 */
const registryInLog: Migration = {
  version: 1,
  date: '2026-12-02',
  name: 'registry and policy leaves in the log',
  up(db) {
    for (const [table, wanted] of Object.entries(LAYOUT_2026_11)) {
      const have = columns(db, table);
      if (wanted.some((c) => !have.includes(c))) {
        throw new QuorumError('schema-migration', `this ledger predates the 2026-11 layout (table ${table} lacks ${wanted.filter((c) => !have.includes(c)).join(', ')}): open it once with nix-quorum 0.1.0 of 2026-11 first`);
      }
    }
    db.exec(`
      CREATE TABLE operator_leaves (leaf_index INTEGER PRIMARY KEY, leaf TEXT NOT NULL);
      ALTER TABLE builders ADD COLUMN added_leaf INTEGER;
      ALTER TABLE builders ADD COLUMN revoked_leaf INTEGER;
      ALTER TABLE policies ADD COLUMN leaf_index INTEGER;`);
    const log = new MerkleLog(db);
    const start = log.size();
    const leaves: Array<{ text: string; set: () => void }> = [];
    const append = (text: string, set: (index: number) => void) => {
      const index = start + leaves.length;
      leaves.push({ text, set: () => set(index) });
    };
    const builders = db.prepare('SELECT id, name, public_key, added_at, revoked_at FROM builders ORDER BY id').all() as Array<{ id: number; name: string; public_key: Buffer; added_at: number; revoked_at: number | null }>;
    const keys = new Map<string, string>();
    const skipped: string[] = [];
    for (const b of builders) {
      const holder = keys.get(keyIdOf(b.public_key));
      const problem = publicKeyProblem(b.public_key);
      if (holder || problem) {
        skipped.push(`${b.name} (${holder ? `same key as ${holder}` : problem})`);
        continue;
      }
      keys.set(keyIdOf(b.public_key), b.name);
      append(registryLeafText({ action: 'add', name: b.name, publicKey: b.public_key, at: b.added_at }), (i) => db.prepare('UPDATE builders SET added_leaf = ? WHERE id = ?').run(i, b.id));
    }
    const revoked = builders.filter((b) => b.revoked_at !== null && keys.get(keyIdOf(b.public_key)) === b.name).sort((x, y) => x.revoked_at! - y.revoked_at! || x.id - y.id);
    for (const b of revoked) {
      append(registryLeafText({ action: 'revoke', name: b.name, at: b.revoked_at! }), (i) => db.prepare('UPDATE builders SET revoked_leaf = ? WHERE id = ?').run(i, b.id));
    }
    const policies = db.prepare('SELECT name, threshold, on_conflict, all_builders, updated_at FROM policies ORDER BY name').all() as Array<{ name: string; threshold: number; on_conflict: 'block' | 'ignore'; all_builders: number; updated_at: number }>;
    const members = db.prepare('SELECT builder_name FROM policy_builders WHERE policy = ? ORDER BY builder_name').pluck();
    for (const p of policies) {
      const entry: PolicyEntry = { name: p.name, threshold: p.threshold, onConflict: p.on_conflict, builders: p.all_builders ? '*' : [...new Set(members.all(p.name) as string[])].sort(), at: p.updated_at };
      append(policyLeafText(entry), (i) => db.prepare('UPDATE policies SET leaf_index = ? WHERE name = ?').run(i, p.name));
    }
    const insert = db.prepare('INSERT INTO operator_leaves (leaf_index, leaf) VALUES (?, ?)');
    leaves.forEach(({ text, set }, i) => {
      insert.run(start + i, text);
      set();
    });
    log.append(start, leaves.map(({ text }) => Buffer.from(text, 'utf8')));
    db.exec('CREATE UNIQUE INDEX builders_key ON builders (public_key) WHERE added_leaf IS NOT NULL');
    return (
      `appended the registry (${keys.size} builders, ${revoked.length} revocations) and ${policies.length} policies to the log` +
      (leaves.length ? ` as leaves ${start} to ${start + leaves.length - 1}` : '') +
      (skipped.length ? `; not carried over, and never counting again: ${skipped.join(', ')}` : '')
    );
  },
};

/**
 * 2. Witnessing (c2sp.org/tlog-witness): the ledger's store of witness cosignatures, and the tables
 * of `nix-quorum witness` (empty in a ledger, as in schema.sql). Nothing to carry over.
 */
const witnessTables: Migration = {
  version: 2,
  date: '2026-12-02',
  name: 'witness cosignatures',
  up(db) {
    db.exec(`
      CREATE TABLE cosignatures (
        tree_size  INTEGER NOT NULL REFERENCES checkpoints(tree_size),
        witness    TEXT NOT NULL,
        line       TEXT NOT NULL,
        timestamp  INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (tree_size, witness)
      ) WITHOUT ROWID;
      CREATE INDEX cosignatures_witness ON cosignatures (witness, tree_size);
      CREATE TABLE witness_logs (origin TEXT PRIMARY KEY, tree_size INTEGER NOT NULL, root_hash BLOB NOT NULL, note TEXT NOT NULL, cosigned_at INTEGER NOT NULL) WITHOUT ROWID;
      CREATE TABLE witness_evidence (
        id INTEGER PRIMARY KEY, origin TEXT NOT NULL, received_at INTEGER NOT NULL, status INTEGER NOT NULL, reason TEXT NOT NULL, old_size INTEGER NOT NULL,
        proof TEXT NOT NULL, note TEXT NOT NULL, witness_size INTEGER, witness_note TEXT, UNIQUE (origin, note, old_size, proof)
      );`);
    return 'added the tables cosignatures, witness_logs and witness_evidence';
  },
};


/** 3. Build logs and NAR listings (src/logs/, src/nars/listings.ts): new tables; NARs stored before have no listing. */
const logsAndListings: Migration = {
  version: 3,
  date: '2026-12-02',
  name: 'build logs and NAR listings',
  up(db) {
    db.exec(`
      CREATE TABLE nar_listings (nar_hash TEXT PRIMARY KEY, files INTEGER NOT NULL, listing BLOB NOT NULL);
      CREATE TRIGGER nar_listings_nar_delete AFTER DELETE ON nars BEGIN
        DELETE FROM nar_listings WHERE nar_hash = OLD.nar_hash;
      END;
      CREATE TABLE build_logs (
        drv_path TEXT NOT NULL, builder_id INTEGER NOT NULL REFERENCES builders(id), blob_key TEXT NOT NULL, file_hash TEXT NOT NULL,
        file_size INTEGER NOT NULL, log_size INTEGER NOT NULL, signed_at INTEGER NOT NULL, signature BLOB NOT NULL, created_at INTEGER NOT NULL,
        PRIMARY KEY (drv_path, builder_id)
      ) WITHOUT ROWID;`);
    return 'created nar_listings and build_logs (NARs stored before have no listing)';
  },
};

/** 4. Mirrors (src/mirror/): the staging of unverified leaves and the evidence of a primary that stopped following from what was verified. */
const mirrorTables: Migration = {
  version: 4,
  date: '2026-12-02',
  name: 'mirror staging and evidence',
  up(db) {
    db.exec(`
      CREATE TABLE mirror_staging (leaf_index INTEGER PRIMARY KEY, leaf BLOB NOT NULL);
      CREATE TABLE mirror_evidence (
        id INTEGER PRIMARY KEY, detected_at INTEGER NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL,
        verified_note TEXT, offered_note TEXT NOT NULL, UNIQUE (kind, offered_note)
      );`);
    return 'created mirror_staging and mirror_evidence';
  },
};

export const MIGRATIONS: readonly Migration[] = [registryInLog, witnessTables, logsAndListings, mirrorTables];

export const SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1]!.version;
