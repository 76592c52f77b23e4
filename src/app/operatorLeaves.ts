import type { Service } from '../service.js';

/**
 * Appends a registry or policy leaf to the log, inside the caller's transaction: the table change
 * and the leaf that states it commit together or not at all. Returns the leaf's index.
 */
export function appendOperatorLeaf(s: Pick<Service, 'db' | 'log'>, text: string): number {
  const index = s.log.size();
  s.db.prepare('INSERT INTO operator_leaves (leaf_index, leaf) VALUES (?, ?)').run(index, text);
  s.log.append(index, [Buffer.from(text, 'utf8')]);
  return index;
}

/** After an admin change committed: caches reload, and a checkpoint soon covers the new leaf. */
export function changed(s: Pick<Service, 'version' | 'checkpoints'>): void {
  s.version.touch();
  s.checkpoints.committed();
}
