import { QuorumError } from '../errors.js';
import { policyLeafText, type PolicyEntry } from '../ledger/leaf.js';
import type { Policy } from '../quorum/evaluate.js';
import { DEFAULT_POLICY, policyJson, writePolicy, type PolicyInput } from '../quorum/policies.js';
import type { Service } from '../service.js';
import { appendOperatorLeaf, changed } from './operatorLeaves.js';

/** A policy to set: parsed input (policyInput), builders as any collection of names. */
export type PolicySetting = Omit<PolicyInput, 'builders'> & { builders: Iterable<string> | null };

/**
 * Whether a policy could ever decide anything: every named builder is registered and active, and
 * the threshold does not exceed how many there are. A policy of "every active builder" may ask for
 * more keys than are registered yet (a new ledger has none).
 */
function checkPolicy(s: Service, input: PolicySetting): void {
  if (input.builders === null) return;
  const names = [...new Set(input.builders)];
  for (const name of names) {
    const b = s.registry.get(name);
    if (!b || b.addedLeaf === null) throw new QuorumError('bad-policy', `builders: ${name} is not a registered builder (see builder list)`, { field: 'builders' });
    if (!b.active) throw new QuorumError('bad-policy', `builders: ${name} was revoked; its votes count nowhere`, { field: 'builders' });
  }
  if (input.threshold > names.length) {
    throw new QuorumError('bad-policy', `threshold: ${input.threshold} is more than the ${names.length} builders the policy names, so nothing could ever reach quorum`, { field: 'threshold' });
  }
}

function samePolicy(p: Policy | undefined, entry: PolicyEntry): boolean {
  if (!p || p.threshold !== entry.threshold || p.onConflict !== entry.onConflict) return false;
  if (p.builders === null || entry.builders === '*') return p.builders === null && entry.builders === '*';
  return [...p.builders].sort().join(',') === entry.builders.join(',');
}

/**
 * Creates or changes a policy: its leaf, its rows and every decision under it, in one transaction.
 * Setting what is already set writes nothing.
 */
export function setPolicy(s: Service, input: PolicySetting, now = Date.now()): ReturnType<typeof policyJson> {
  const entry: PolicyEntry = {
    name: input.name,
    threshold: input.threshold,
    onConflict: input.onConflict,
    builders: input.builders === null ? '*' : [...new Set(input.builders)].sort(),
    at: now,
  };
  const wrote = s.db
    .transaction(() => {
      checkPolicy(s, input);
      if (samePolicy(s.policies.get(entry.name), entry)) return false;
      const leaf = appendOperatorLeaf(s, policyLeafText(entry));
      writePolicy(s.db, entry, leaf);
      s.version.touch();
      s.decisions.recomputeAll([s.policies.require(entry.name)]);
      return true;
    })
    .immediate();
  if (wrote) changed(s);
  return policyJson(s.policies.require(entry.name), s.registry);
}

/** Deletes a policy (a leaf with threshold 0) and its decisions. The default policy serves the cache root and stays. */
export function deletePolicy(s: Service, name: string, now = Date.now()): void {
  if (name === DEFAULT_POLICY) throw new QuorumError('bad-policy', `the ${DEFAULT_POLICY} policy serves the cache root and cannot be deleted: change it with policy set`, { field: 'name' });
  s.db
    .transaction(() => {
      s.policies.require(name);
      const entry: PolicyEntry = { name, threshold: 0, onConflict: 'block', builders: '*', at: now };
      writePolicy(s.db, entry, appendOperatorLeaf(s, policyLeafText(entry)));
      s.db.prepare('DELETE FROM decisions WHERE policy = ?').run(name);
      s.version.touch();
      s.decisions.recomputeAll([]);
    })
    .immediate();
  changed(s);
}

export function listPolicies(s: Service) {
  return s.policies.list().map((p) => policyJson(p, s.registry));
}

/** The default policy, made on a ledger's first start from config (quorum.defaultThreshold). */
export function ensureDefaultPolicy(s: Service, threshold: number): void {
  if (!s.policies.get(DEFAULT_POLICY)) setPolicy(s, { name: DEFAULT_POLICY, threshold, onConflict: 'block', builders: null });
}
