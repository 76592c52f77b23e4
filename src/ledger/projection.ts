import type { Db } from '../db.js';
import { QuorumError } from '../errors.js';
import { decodeLeaf } from './leaf.js';
import type { MerkleLog } from './log.js';
import { LogState } from './logState.js';
import { leafHash } from './merkle.js';

type BuilderRow = { id: number; name: string; public_key: Buffer; added_at: number; revoked_at: number | null; added_leaf: number | null; revoked_leaf: number | null };

/**
 * The registry and policies the stored registry and policy leaves state, replayed in log order;
 * `check` sees each leaf's bytes first (and may refuse them).
 */
export function operatorState(db: Db, check: (index: number, bytes: Buffer) => void = () => undefined): LogState {
  const state = new LogState();
  const leaves = db.prepare('SELECT leaf_index, leaf FROM operator_leaves ORDER BY leaf_index').raw().all() as Array<[number, string]>;
  for (const [index, text] of leaves) {
    const bytes = Buffer.from(text, 'utf8');
    check(index, bytes);
    const leaf = decodeLeaf(bytes);
    if (leaf.kind === 'builder') state.applyRegistry(index, leaf.entry);
    else if (leaf.kind === 'policy') state.applyPolicy(index, leaf.entry);
    else throw new QuorumError('tampered', `leaf ${index} is stored as a registry or policy leaf but is an attestation`, { field: `leaf ${index}` });
  }
  return state;
}

/**
 * Replays the registry and policy leaves and makes the builders and policies tables say exactly
 * what they state: the tables are a projection of the log, so a row written into the database by
 * hand (a sock-puppet builder, a weakened policy) is undone at start, and said so. Each leaf is first
 * checked against the Merkle tree: an edited leaf text is refused outright (nothing can be derived
 * from a log the database no longer matches). Runs inside the caller's transaction; returns one line
 * per correction.
 */
export function rebuildProjection(db: Db, log: MerkleLog): { state: LogState; corrections: string[] } {
  const size = log.size();
  const state = operatorState(db, (index, bytes) => {
    if (index >= size || !leafHash(bytes).equals(log.node(0, index))) {
      throw new QuorumError('tampered', `leaf ${index} of the database is not the leaf the log holds at that index (edited after it was logged): restore the data directory from a backup`, { field: `leaf ${index}` });
    }
  });
  const clash = db.prepare('SELECT o.leaf_index FROM operator_leaves o JOIN attestations a ON a.leaf_index = o.leaf_index LIMIT 1').pluck().get() as number | undefined;
  if (clash !== undefined) throw new QuorumError('tampered', `leaf ${clash} is stored both as an attestation and as a registry or policy leaf`, { field: `leaf ${clash}` });

  const corrections: string[] = [];
  // Rows beyond the tree were never logged (and would take the index of the next leaf).
  const unlogged = db.prepare('SELECT leaf_index FROM attestations WHERE leaf_index >= ?').pluck().all(size) as number[];
  if (unlogged.length > 0) {
    db.prepare('DELETE FROM conflicts WHERE first_leaf >= ? OR second_leaf >= ?').run(size, size);
    db.prepare('DELETE FROM attestations WHERE leaf_index >= ?').run(size);
    corrections.push(`attestation rows ${unlogged.slice(0, 5).join(', ')}${unlogged.length > 5 ? ` and ${unlogged.length - 5} more` : ''} are beyond the log's ${size} leaves (never logged); removed`);
  }
  const rows = new Map((db.prepare('SELECT id, name, public_key, added_at, revoked_at, added_leaf, revoked_leaf FROM builders').all() as BuilderRow[]).map((r) => [r.name, r]));
  // Rows no leaf states stay (attestations may reference them) but never count again.
  for (const row of rows.values()) {
    if (state.byName(row.name)) continue;
    if (row.added_leaf === null && row.revoked_leaf === null) continue;
    corrections.push(`builder ${row.name}: no registry leaf states it; it no longer counts`);
    db.prepare('UPDATE builders SET added_leaf = NULL, revoked_leaf = NULL WHERE id = ?').run(row.id);
  }

  for (const b of state.builders()) {
    const row = rows.get(b.name);
    if (row && row.public_key.equals(b.publicKey) && row.added_at === b.addedAt && row.revoked_at === b.revokedAt && row.added_leaf === b.addedLeaf && row.revoked_leaf === b.revokedLeaf) continue;
    corrections.push(`builder ${b.name}: ${row ? 'its row differed from' : 'had no row, though stated in'} the registry leaves; restored`);
    db.prepare(
      `INSERT INTO builders (name, public_key, added_at, revoked_at, added_leaf, revoked_leaf) VALUES (?, ?, ?, ?, ?, ?)
       ON CONFLICT (name) DO UPDATE SET public_key = excluded.public_key, added_at = excluded.added_at, revoked_at = excluded.revoked_at,
         added_leaf = excluded.added_leaf, revoked_leaf = excluded.revoked_leaf`,
    ).run(b.name, b.publicKey, b.addedAt, b.revokedAt, b.addedLeaf, b.revokedLeaf);
  }
  const stored = db.prepare("SELECT name, threshold, on_conflict, all_builders, leaf_index, (SELECT group_concat(builder_name, ',') FROM (SELECT builder_name FROM policy_builders WHERE policy = p.name ORDER BY builder_name)) AS members FROM policies p").all() as Array<{ name: string; threshold: number; on_conflict: string; all_builders: number; leaf_index: number | null; members: string | null }>;
  const storedByName = new Map(stored.map((p) => [p.name, p]));
  for (const p of state.policies.values()) {
    const row = storedByName.get(p.name);
    storedByName.delete(p.name);
    const members = p.builders === null ? null : [...p.builders].sort().join(',');
    if (row && row.threshold === p.threshold && row.on_conflict === p.onConflict && (row.all_builders === 1) === (p.builders === null) && row.leaf_index === p.leaf && (p.builders === null || row.members === members)) continue;
    corrections.push(`policy ${p.name}: ${row ? 'its rows differed from' : 'had no row, though stated in'} its policy leaf; restored`);
    db.prepare('DELETE FROM policies WHERE name = ?').run(p.name);
    db.prepare('INSERT INTO policies (name, threshold, on_conflict, all_builders, updated_at, leaf_index) VALUES (?, ?, ?, ?, ?, ?)').run(p.name, p.threshold, p.onConflict, p.builders === null ? 1 : 0, p.at, p.leaf);
    const add = db.prepare('INSERT INTO policy_builders (policy, builder_name) VALUES (?, ?)');
    for (const b of p.builders ?? []) add.run(p.name, b);
  }
  for (const name of storedByName.keys()) {
    corrections.push(`policy ${name}: no policy leaf states it; removed`);
    db.prepare('DELETE FROM policies WHERE name = ?').run(name);
  }
  // Members of a policy with "every active builder" are none; stray member rows are not a policy's.
  corrections.push(
    ...(db.prepare('DELETE FROM policy_builders WHERE policy NOT IN (SELECT name FROM policies WHERE all_builders = 0) RETURNING policy').pluck().all() as string[]).map(
      (name) => `policy ${name}: a member row no leaf states; removed`,
    ),
  );
  return { state, corrections };
}
