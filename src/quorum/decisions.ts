import type { Statement } from 'better-sqlite3';
import type { Db } from '../db.js';
import type { BuilderRegistry } from '../ledger/registry.js';
import { evaluate, type Decision, type Policy, type Vote } from './evaluate.js';
import { listPolicies, writePolicy } from './policies.js';

interface VoteRow extends Vote {
  drvPath: string;
  narinfoSignature: string | null;
}

/**
 * Keeps the decisions table equal to evaluate() over the attestations: a row per (policy, path) whose
 * status is 'quorum' or 'blocked', none for 'pending'. Every method runs inside the caller's
 * transaction, so a decision never disagrees with the ledger that produced it.
 */
export class DecisionMaterializer {
  private policies: Policy[];
  private readonly votes: Statement<[string], VoteRow>;
  private readonly upsert: Statement<unknown[]>;
  private readonly remove: Statement<[string, string]>;
  private readonly listeners: Array<(outPaths: Set<string> | 'all') => void> = [];
  private readonly decided: Array<(policy: string, status: Decision['status']) => void> = [];

  constructor(
    private readonly db: Db,
    private readonly registry: BuilderRegistry,
  ) {
    this.policies = listPolicies(db);
    this.votes = db.prepare(
      `SELECT b.name AS builder, a.nar_hash AS narHash, a.nar_size AS narSize, a.refs AS refs, a.drv_path AS drvPath, a.narinfo_signature AS narinfoSignature
       FROM attestations a JOIN builders b ON b.id = a.builder_id WHERE a.out_path = ? ORDER BY a.leaf_index`,
    );
    this.upsert = db.prepare(
      `INSERT INTO decisions (policy, out_path, status, nar_hash, nar_size, refs, deriver, sigs, agreeing, reason, updated_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (policy, out_path) DO UPDATE SET status = excluded.status, nar_hash = excluded.nar_hash, nar_size = excluded.nar_size,
         refs = excluded.refs, deriver = excluded.deriver, sigs = excluded.sigs, agreeing = excluded.agreeing, reason = excluded.reason,
         updated_at = excluded.updated_at`,
    );
    this.remove = db.prepare('DELETE FROM decisions WHERE policy = ? AND out_path = ?');
    registry.onRevoke((builder) => {
      const paths = db.prepare('SELECT DISTINCT out_path AS p FROM attestations WHERE builder_id = ?').pluck().all(builder.id) as string[];
      this.recompute(new Set(paths));
    });
  }

  /** Notified after decisions change (inside the transaction), e.g. to invalidate narinfo caches. */
  onChange(listener: (outPaths: Set<string> | 'all') => void): void {
    this.listeners.push(listener);
  }

  /** Called for every decision computed (for metrics). */
  onDecided(listener: (policy: string, status: Decision['status']) => void): void {
    this.decided.push(listener);
  }

  getPolicies(): Policy[] {
    return this.policies;
  }

  /** Re-reads policies another process may have changed. */
  reloadPolicies(): void {
    this.policies = listPolicies(this.db);
  }

  /** Evaluates one path under every policy without writing: what status and the web pages show. */
  evaluatePath(outPath: string): Array<{ policy: Policy; decision: Decision }> {
    const votes = this.votes.all(outPath);
    const active = new Set(this.registry.active().map((b) => b.name));
    return this.policies.map((policy) => ({ policy, decision: evaluate(policy, votes, active) }));
  }

  recompute(outPaths: Set<string>, policies: Policy[] = this.policies): void {
    const now = Date.now();
    const active = new Set(this.registry.active().map((b) => b.name));
    for (const outPath of outPaths) {
      const votes = this.votes.all(outPath);
      for (const policy of policies) {
        const d = evaluate(policy, votes, active);
        for (const l of this.decided) l(policy.name, d.status);
        // Pending is what having no row means: most paths are pending after their first attestation,
        // and not writing them saves a large random-key row write per new path under ingest.
        if (d.status === 'pending') {
          this.remove.run(policy.name, outPath);
          continue;
        }
        const agreeingVotes = d.content ? votes.filter((v) => d.agreeing.includes(v.builder) && v.narHash === d.content!.narHash && v.narSize === d.content!.narSize && v.refs === d.content!.refs) : [];
        const sigs = [...new Set(agreeingVotes.map((v) => v.narinfoSignature).filter((s): s is string => s !== null))];
        this.upsert.run(
          policy.name,
          outPath,
          d.status,
          d.content?.narHash ?? null,
          d.content?.narSize ?? null,
          d.content?.refs ?? null,
          agreeingVotes[0]?.drvPath ?? null,
          sigs.length ? sigs.join('\n') : null,
          d.agreeing.length,
          d.reason,
          now,
        );
      }
    }
    for (const l of this.listeners) l(outPaths);
  }

  /** Stores a policy and re-decides every path under it, in one transaction. */
  setPolicy(policy: Policy): void {
    this.db.transaction(() => {
      writePolicy(this.db, policy);
      this.policies = listPolicies(this.db);
      this.db.prepare('DELETE FROM decisions WHERE policy = ?').run(policy.name);
      const paths = this.db.prepare('SELECT DISTINCT out_path FROM attestations').pluck().all() as string[];
      this.recompute(new Set(paths), [policy]);
    })();
    for (const l of this.listeners) l('all');
  }
}
