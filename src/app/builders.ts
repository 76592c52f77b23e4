import { QuorumError } from '../errors.js';
import { registryLeafText, type RegistryEntry } from '../ledger/leaf.js';
import type { Builder } from '../ledger/registry.js';
import { keyIdOf, registryProblem } from '../ledger/registryRules.js';
import type { PublicKey } from '../nix/keys.js';
import type { Service } from '../service.js';
import { appendOperatorLeaf, changed } from './operatorLeaves.js';

/** Refuses a registry change the identity rule forbids, with the rule's own code (409, 404, 400). */
function check(s: Service, entry: RegistryEntry): void {
  const problem = registryProblem(s.registry, entry);
  if (problem) throw new QuorumError(problem.code, problem.message, { field: problem.code === 'bad-key' || problem.code.startsWith('key-') ? 'publicKey' : 'name' });
}

/**
 * Registers a builder key: its registry leaf and its row in one transaction. The same name with the
 * same key again is answered with the existing builder (a retried request), not a second leaf.
 */
export function addBuilder(s: Service, publicKey: PublicKey, now = Date.now()): { builder: Builder; created: boolean } {
  const entry: RegistryEntry = { action: 'add', name: publicKey.name, publicKey: publicKey.raw, at: now };
  const created = s.db
    .transaction(() => {
      const existing = s.registry.get(entry.name);
      if (existing?.active && existing.keyId === keyIdOf(publicKey.raw)) return false;
      // A row of that name that no leaf states (written into the database by hand) keeps its name.
      if (existing && existing.addedLeaf === null) throw new QuorumError('builder-exists', `a builder row named ${entry.name} exists in the database but not in the log: choose another key name`, { field: 'name' });
      check(s, entry);
      const leaf = appendOperatorLeaf(s, registryLeafText(entry));
      s.db.prepare('INSERT INTO builders (name, public_key, added_at, added_leaf) VALUES (?, ?, ?, ?)').run(entry.name, publicKey.raw, now, leaf);
      s.version.touch();
      return true;
    })
    .immediate();
  if (created) changed(s);
  return { builder: s.registry.get(entry.name)!, created };
}

/**
 * Revokes a builder key: its leaf, its row and every decision it took part in, in one transaction,
 * so its votes stop counting everywhere at once. Revoking a revoked key changes nothing.
 */
export function revokeBuilder(s: Service, name: string, now = Date.now()): Builder {
  const revoked = s.db
    .transaction(() => {
      const builder = s.registry.get(name);
      if (!builder || builder.addedLeaf === null) throw new QuorumError('no-such-builder', `no builder named ${name}`, { field: 'name' });
      if (!builder.active) return false;
      const entry: RegistryEntry = { action: 'revoke', name, at: now };
      check(s, entry);
      const leaf = appendOperatorLeaf(s, registryLeafText(entry));
      s.db.prepare('UPDATE builders SET revoked_at = ?, revoked_leaf = ? WHERE id = ?').run(now, leaf, builder.id);
      s.version.touch();
      // Every row of that key votes with it: their paths are re-decided.
      const ids = s.registry.list().filter((b) => b.keyId === builder.keyId).map((b) => b.id);
      const paths = s.db.prepare(`SELECT DISTINCT out_path FROM attestations WHERE builder_id IN (${ids.map(() => '?').join(',')})`).pluck().all(...ids) as string[];
      s.decisions.recompute(paths);
      return true;
    })
    .immediate();
  if (revoked) changed(s);
  return s.registry.get(name)!;
}
