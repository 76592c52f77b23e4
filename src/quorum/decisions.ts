import type { Statement } from 'better-sqlite3';
import type { Db } from '../db.js';
import type { BuilderRegistry } from '../ledger/registry.js';
import { fingerprint } from '../nix/fingerprint.js';
import type { NarHash } from '../nix/hash.js';
import { formatPublicKey, signNix, type SecretKey } from '../nix/keys.js';
import type { StorePath } from '../nix/storePath.js';
import { evaluate, keyOf, type Decision, type Policy, type Vote } from './evaluate.js';
import { listPolicies, writePolicy } from './policies.js';

interface VoteRow extends Vote {
  drvPath: string;
  narinfoSignature: string | null;
}

type Content = NonNullable<Decision['content']>;

interface StoredDecision extends Content {
  status: Decision['status'];
  cacheSig: string | null;
}

const CACHE_SIG_KEY = 'cache_sig_key';

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
  private readonly stored: Statement<[string, string], StoredDecision>;
  private readonly sigPrefix: string;
  private readonly listeners: Array<(outPaths: Set<string> | 'all') => void> = [];
  private readonly decided: Array<(policy: string, status: Decision['status']) => void> = [];

  constructor(
    private readonly db: Db,
    private readonly registry: BuilderRegistry,
    private readonly cacheKey: SecretKey,
  ) {
    this.policies = listPolicies(db);
    this.sigPrefix = `${cacheKey.name}:`;
    this.votes = db.prepare(
      `SELECT b.name AS builder, a.nar_hash AS narHash, a.nar_size AS narSize, a.refs AS refs, a.drv_path AS drvPath, a.narinfo_signature AS narinfoSignature
       FROM attestations a JOIN builders b ON b.id = a.builder_id WHERE a.out_path = ? ORDER BY a.leaf_index`,
    );
    this.upsert = db.prepare(
      `INSERT INTO decisions (policy, out_path, status, nar_hash, nar_size, refs, deriver, sigs, cache_sig, agreeing, reason, updated_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (policy, out_path) DO UPDATE SET status = excluded.status, nar_hash = excluded.nar_hash, nar_size = excluded.nar_size,
         refs = excluded.refs, deriver = excluded.deriver, sigs = excluded.sigs, cache_sig = excluded.cache_sig, agreeing = excluded.agreeing,
         reason = excluded.reason, updated_at = excluded.updated_at`,
    );
    this.remove = db.prepare('DELETE FROM decisions WHERE policy = ? AND out_path = ?');
    this.stored = db.prepare('SELECT status, nar_hash AS narHash, nar_size AS narSize, refs, cache_sig AS cacheSig FROM decisions WHERE policy = ? AND out_path = ?');
    this.forgetSignaturesOfReplacedKey();
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
      const signed = new Map<string, string | null>();
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
          d.content ? this.cacheSignature(policy.name, outPath, d.content, signed) : null,
          d.agreeing.length,
          d.reason,
          now,
        );
      }
    }
    for (const l of this.listeners) l(outPaths);
  }

  /**
   * The cache key's Sig over the fingerprint of the agreed content, stored with the decision so the
   * substituter does not sign (about 60 µs) per request. A decision whose content is unchanged keeps
   * its Sig: a path is signed when it reaches quorum, not again for every agreeing attestation after.
   * `signed` holds this path's Sigs by content across policies. A size of 0 cannot be signed (Nix
   * refuses it, and so does fingerprint()); such a decision stores none and is never served whole.
   */
  private cacheSignature(policy: string, outPath: string, content: Content, signed: Map<string, string | null>): string | null {
    const key = keyOf(content);
    let sig = signed.get(key);
    if (sig !== undefined) return sig;
    const old = this.stored.get(policy, outPath);
    if (old?.status === 'quorum' && keyOf(old) === key && old.cacheSig?.startsWith(this.sigPrefix)) sig = old.cacheSig;
    else if (content.narSize > 0) {
      const references = content.refs === '' ? [] : (content.refs.split(',') as StorePath[]);
      sig = signNix(this.cacheKey, fingerprint(outPath as StorePath, content.narHash as NarHash, content.narSize, references));
    } else sig = null;
    signed.set(key, sig);
    return sig;
  }

  /**
   * Stored Sigs name their key, and the substituter signs afresh when that name is not its key's (a
   * rotated key). A different key under the same name would pass that test with Sigs that do not
   * verify under it: those are dropped, once, when the key changes.
   */
  private forgetSignaturesOfReplacedKey(): void {
    const mine = formatPublicKey(this.cacheKey.publicKey);
    const recorded = this.db.prepare('SELECT value FROM meta WHERE key = ?').pluck();
    if (recorded.get(CACHE_SIG_KEY) === mine) return;
    this.db
      .transaction(() => {
        const before = recorded.get(CACHE_SIG_KEY) as string | undefined;
        if (before === mine) return;
        if (before?.startsWith(this.sigPrefix)) this.db.prepare('UPDATE decisions SET cache_sig = NULL WHERE substr(cache_sig, 1, ?) = ?').run(this.sigPrefix.length, this.sigPrefix);
        this.db.prepare('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value').run(CACHE_SIG_KEY, mine);
      })
      .immediate();
  }

  /**
   * Stores a policy and re-decides every path under it, in one transaction. Every path is re-decided,
   * which overwrites each of the policy's rows; rows are not deleted first, so unchanged contents keep
   * their Sig instead of all being signed again.
   */
  setPolicy(policy: Policy): void {
    this.db.transaction(() => {
      writePolicy(this.db, policy);
      this.policies = listPolicies(this.db);
      const paths = this.db.prepare('SELECT DISTINCT out_path FROM attestations').pluck().all() as string[];
      this.recompute(new Set(paths), [policy]);
    })();
    for (const l of this.listeners) l('all');
  }
}
