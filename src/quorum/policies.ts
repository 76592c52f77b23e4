import { z } from 'zod';
import type { Db } from '../db.js';
import { Derived, type DbVersion } from '../db/version.js';
import { QuorumError } from '../errors.js';
import { KEY_NAME, POLICY_NAME, type PolicyEntry } from '../ledger/leaf.js';
import { trustedKeys, type KeyDirectory, type Policy } from './evaluate.js';

export const DEFAULT_POLICY = 'default';

/** Zod schema of `policy set` input (CLI and admin API): the shape; whether the names are registered is the application's check. */
export const policyInput = z
  .object({
    name: z.string().regex(POLICY_NAME, 'name must be 1-64 characters of letters, digits, . _ -'),
    threshold: z.number({ error: 'threshold must be a whole number of keys' }).int('threshold must be a whole number of keys').min(1, 'threshold must be at least 1').max(1_000_000),
    builders: z.array(z.string().regex(KEY_NAME, 'each builder must be a key name')).min(1, 'builders must list at least one key name').max(10_000).nullable(),
    onConflict: z.enum(['block', 'ignore']).default('block'),
  })
  .strict();

export type PolicyInput = z.output<typeof policyInput>;

interface PolicyRow {
  name: string;
  threshold: number;
  on_conflict: 'block' | 'ignore';
  all_builders: number;
}

/** The policies table (a projection of the log's policy leaves), cached on the database version. */
export class PolicyBook {
  private readonly all: Derived<Policy[]>;

  constructor(db: Db, version: DbVersion) {
    const rows = db.prepare<[], PolicyRow>('SELECT name, threshold, on_conflict, all_builders FROM policies ORDER BY name');
    const members = db.prepare<[string], string>('SELECT builder_name FROM policy_builders WHERE policy = ? ORDER BY builder_name').pluck();
    this.all = new Derived(version, () =>
      rows.all().map((r) => ({ name: r.name, threshold: r.threshold, onConflict: r.on_conflict, builders: r.all_builders ? null : new Set(members.all(r.name)) })),
    );
  }

  list(): Policy[] {
    return this.all.get();
  }

  get(name: string): Policy | undefined {
    return this.list().find((p) => p.name === name);
  }

  require(name: string): Policy {
    const p = this.get(name);
    if (!p) throw new QuorumError('unknown-policy', `no policy named ${name}`, { field: 'policy' });
    return p;
  }
}

/** Writes the policies table's rows of a policy leaf; the caller appends the leaf and re-decides in the same transaction. */
export function writePolicy(db: Db, entry: PolicyEntry, leafIndex: number): void {
  db.prepare('DELETE FROM policies WHERE name = ?').run(entry.name);
  if (entry.threshold === 0) return;
  db.prepare('INSERT INTO policies (name, threshold, on_conflict, all_builders, updated_at, leaf_index) VALUES (?, ?, ?, ?, ?, ?)').run(
    entry.name,
    entry.threshold,
    entry.onConflict,
    entry.builders === '*' ? 1 : 0,
    entry.at,
    leafIndex,
  );
  const add = db.prepare('INSERT INTO policy_builders (policy, builder_name) VALUES (?, ?)');
  if (entry.builders !== '*') for (const b of entry.builders) add.run(entry.name, b);
}

/** Why no path can reach quorum under a policy any more (revocations left too few keys), or undefined. */
export function impossibility(p: Policy, keys: KeyDirectory): string | undefined {
  const trusted = trustedKeys(p, keys).size;
  if (trusted >= p.threshold) return undefined;
  return `only ${trusted} active ${trusted === 1 ? 'key' : 'keys'} in the policy, threshold ${p.threshold}: no path can reach quorum`;
}

export function policyJson(p: Policy, keys: KeyDirectory) {
  const impossible = impossibility(p, keys);
  return {
    name: p.name,
    threshold: p.threshold,
    onConflict: p.onConflict,
    builders: p.builders === null ? 'all active builders' : [...p.builders].sort(),
    possible: impossible === undefined,
    ...(impossible ? { impossible } : {}),
  };
}
