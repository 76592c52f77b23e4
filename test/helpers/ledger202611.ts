import Database from 'better-sqlite3';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { encodeLeaf } from '../../src/ledger/leaf.js';
import { MerkleLog } from '../../src/ledger/log.js';
import type { Attestation } from '../../src/ledger/statement.js';

/**
 * A new ledger as nix-quorum wrote it in 2026-11 (test/fixtures/schema-2026-11.sql): its registry
 * and policies live in tables only, and opening it with today's code appends them to the log as
 * leaves, after its attestations (migration 1).
 */
export function ledger202611(file: string): Database.Database {
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  db.exec(readFileSync(join(import.meta.dirname, '..', 'fixtures', 'schema-2026-11.sql'), 'utf8'));
  return db;
}

/** Appends attestations by the builder row `builderId`, rows and leaves, as that version did. */
export function appendAttestations202611(db: Database.Database, builderId: number, attestations: readonly Attestation[]): void {
  const log = new MerkleLog(db);
  const from = log.size();
  const insert = db.prepare(
    'INSERT INTO attestations (leaf_index, builder_id, drv_path, output_name, out_path, nar_hash, nar_size, refs, signature, narinfo_signature, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, 1)',
  );
  db.transaction(() => {
    attestations.forEach((a, i) => insert.run(from + i, builderId, a.drvPath, a.outputName, a.outPath, a.narHash, a.narSize, a.references.join(','), a.signature));
    log.append(from, attestations.map(encodeLeaf));
  })();
}
