import type { RegistryEntry } from '../ledger/leaf.js';
import { keyIdOf } from '../ledger/registryRules.js';

/**
 * Step 6. The log's revocations of keys a verifier pinned. Revocation leaves only ever REMOVE trust:
 * a revoked key (a builder's stolen key, a retired machine) stops counting for the client as for
 * the server, while an add leaf never makes a key count that the user did not pin (a sock puppet
 * the operator registered counts for nobody who did not pin it).
 *
 * A revoke leaf names a name; the add leaf of that name says which key it was. Revoked are those
 * keys (compared by bytes), and, when no add leaf of the name came with it, the pinned key of that
 * name: in doubt, less trust.
 */
export function revokedKeys(entries: readonly RegistryEntry[], pinned: ReadonlyMap<string, Buffer>): Set<string> {
  const bound = new Map<string, Buffer>();
  for (const e of entries) if (e.action === 'add') bound.set(e.name, e.publicKey);
  const revoked = new Set<string>();
  for (const e of entries) {
    if (e.action !== 'revoke') continue;
    const key = bound.get(e.name) ?? pinned.get(e.name);
    if (key) revoked.add(keyIdOf(key));
  }
  return revoked;
}
