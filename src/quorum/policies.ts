import { z } from 'zod';
import type { Db } from '../db.js';
import { QuorumError } from '../errors.js';
import type { Policy } from './evaluate.js';

export const DEFAULT_POLICY = 'default';
const NAME = /^[A-Za-z0-9._\-]{1,64}$/;

/** Zod schema of `policy set` input (CLI and admin API). */
export const policyInput = z
  .object({
    name: z.string().regex(NAME, 'name must be 1-64 characters of letters, digits, . _ -'),
    threshold: z.number().int().min(1, 'threshold must be at least 1'),
    builders: z.array(z.string().regex(/^[A-Za-z0-9._+\-]{1,128}$/, 'each builder must be a key name')).min(1, 'builders must list at least one key name').nullable(),
    onConflict: z.enum(['block', 'ignore']).default('block'),
  })
  .strict()
  .refine((p) => p.builders === null || p.threshold <= new Set(p.builders).size, {
    message: 'threshold must not exceed the number of builders in the policy',
    path: ['threshold'],
  });

interface PolicyRow {
  name: string;
  threshold: number;
  on_conflict: 'block' | 'ignore';
  all_builders: number;
}

export function listPolicies(db: Db): Policy[] {
  const rows = db.prepare('SELECT name, threshold, on_conflict, all_builders FROM policies ORDER BY name').all() as PolicyRow[];
  const members = db.prepare('SELECT builder_name FROM policy_builders WHERE policy = ? ORDER BY builder_name');
  return rows.map((r) => ({
    name: r.name,
    threshold: r.threshold,
    onConflict: r.on_conflict,
    builders: r.all_builders ? null : new Set((members.all(r.name) as Array<{ builder_name: string }>).map((m) => m.builder_name)),
  }));
}

/** Writes a policy; the caller recomputes decisions in the same transaction. */
export function writePolicy(db: Db, policy: Policy, now = Date.now()): void {
  db.prepare(
    `INSERT INTO policies (name, threshold, on_conflict, all_builders, updated_at) VALUES (?, ?, ?, ?, ?)
     ON CONFLICT (name) DO UPDATE SET threshold = excluded.threshold, on_conflict = excluded.on_conflict, all_builders = excluded.all_builders, updated_at = excluded.updated_at`,
  ).run(policy.name, policy.threshold, policy.onConflict, policy.builders === null ? 1 : 0, now);
  db.prepare('DELETE FROM policy_builders WHERE policy = ?').run(policy.name);
  const add = db.prepare('INSERT INTO policy_builders (policy, builder_name) VALUES (?, ?)');
  for (const b of policy.builders ?? []) add.run(policy.name, b);
}

/** Creates the default policy (k from config, every active builder) on first start. */
export function ensureDefaultPolicy(db: Db, threshold: number): void {
  const exists = db.prepare('SELECT 1 FROM policies WHERE name = ?').get(DEFAULT_POLICY);
  if (!exists) writePolicy(db, { name: DEFAULT_POLICY, threshold, onConflict: 'block', builders: null });
}

export function policyJson(p: Policy) {
  return { name: p.name, threshold: p.threshold, onConflict: p.onConflict, builders: p.builders === null ? 'all active builders' : [...p.builders].sort() };
}

export function requirePolicy(policies: Policy[], name: string): Policy {
  const p = policies.find((x) => x.name === name);
  if (!p) throw new QuorumError('unknown-policy', `no policy named ${name}`, { field: 'policy' });
  return p;
}
