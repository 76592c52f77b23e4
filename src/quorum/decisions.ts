import type { Statement } from 'better-sqlite3';
import { commitUnsynced, type Db } from '../db.js';
import type { BuilderRegistry } from '../ledger/registry.js';
import { contentKey } from '../ledger/statement.js';
import { pathVotes, type VotesOf } from '../ledger/votes.js';
import type { Logger } from '../log.js';
import { contentFingerprint } from '../nix/fingerprint.js';
import type { NarHash } from '../nix/hash.js';
import { formatPublicKey, type SecretKey } from '../nix/keys.js';
import type { StorePath } from '../nix/storePath.js';
import { evaluate, type Decision, type Policy } from './evaluate.js';
import { listPolicies, writePolicy } from './policies.js';

type Content = NonNullable<Decision['content']>;

/** Makes the cache key's signatures off the ingest thread (SignaturePool). */
export interface Signer {
  sign(key: SecretKey, messages: string[]): Promise<Buffer[]>;
}

const CACHE_SIG_KEY = 'cache_sig_key';

/**
 * Keeps the decisions table equal to evaluate() over the attestations: a row per (policy, path) whose
 * status is 'quorum' or 'blocked', none for 'pending'. Decisions are written inside the caller's
 * transaction, so a decision never disagrees with the ledger that produced it; only the cache key's
 * Sig of a new content follows in a later one (signLater).
 */
export class DecisionMaterializer {
  private policies: Policy[];
  private readonly votesOf: VotesOf;
  private readonly upsert: Statement<unknown[], string | null>;
  private readonly remove: Statement<[string, string]>;
  private readonly storeSig: Statement<[string, string, string, string, number, string]>;
  /** `${outPath}\n${contentKey(content)}` of the cache Sigs being made. */
  private readonly signing = new Set<string>();
  private readonly signingDone = new Set<Promise<void>>();
  private readonly sigPrefix: string;
  private readonly listeners: Array<(outPaths: Set<string> | 'all') => void> = [];
  private readonly decided: Array<(policy: string, status: Decision['status']) => void> = [];

  constructor(
    private readonly db: Db,
    private readonly registry: BuilderRegistry,
    private readonly cacheKey: SecretKey,
    private readonly signer: Signer,
    private readonly logger: Logger,
  ) {
    this.policies = listPolicies(db);
    this.sigPrefix = `${cacheKey.name}:`;
    this.votesOf = pathVotes(db);
    // The cache Sig: the one given, else the row's own if it is this key's over the same content (the
    // SET expressions read the row as it was), else none. RETURNING tells which, without another read.
    this.upsert = db
      .prepare<unknown[], string | null>(
        `INSERT INTO decisions (policy, out_path, status, nar_hash, nar_size, refs, deriver, sigs, cache_sig, agreeing, reason, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (policy, out_path) DO UPDATE SET status = excluded.status, nar_hash = excluded.nar_hash, nar_size = excluded.nar_size,
           refs = excluded.refs, deriver = excluded.deriver, sigs = excluded.sigs, agreeing = excluded.agreeing, reason = excluded.reason,
           updated_at = excluded.updated_at,
           cache_sig = CASE WHEN excluded.cache_sig IS NOT NULL THEN excluded.cache_sig
             WHEN decisions.status = 'quorum' AND decisions.nar_hash = excluded.nar_hash AND decisions.nar_size = excluded.nar_size
               AND decisions.refs = excluded.refs AND substr(decisions.cache_sig, 1, ?) = ? THEN decisions.cache_sig END
         RETURNING cache_sig`,
      )
      .pluck();
    this.remove = db.prepare('DELETE FROM decisions WHERE policy = ? AND out_path = ?');
    this.storeSig = db.prepare(
      "UPDATE decisions SET cache_sig = ? WHERE policy = ? AND out_path = ? AND status = 'quorum' AND nar_hash = ? AND nar_size = ? AND refs = ? AND cache_sig IS NULL",
    );
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
    const votes = this.votesOf(outPath);
    const active = new Set(this.registry.active().map((b) => b.name));
    return this.policies.map((policy) => ({ policy, decision: evaluate(policy, votes, active) }));
  }

  /**
   * Re-decides `outPaths` under `policies` (default: all). Ingest hands over the votes it read
   * (`votesOf`) and the first leaf of its commit (`appendedFrom`): a path with no vote before that
   * leaf is new, so it has no decision row to remove.
   *
   * The cache key's Sig over the agreed content is stored with the decision so the substituter does
   * not sign (about 50 µs) per request. A decision whose content is unchanged keeps its Sig: a path is
   * signed when it reaches quorum, not again for every agreeing attestation after. A new content is
   * stored without one and signed after the commit (signLater).
   */
  recompute(outPaths: Set<string>, { votesOf = this.votesOf, appendedFrom, policies = this.policies }: { votesOf?: VotesOf; appendedFrom?: number; policies?: Policy[] } = {}): void {
    const now = Date.now();
    const active = new Set(this.registry.active().map((b) => b.name));
    const unsigned = new Map<string, { outPath: string; content: Content }>();
    for (const outPath of outPaths) {
      const votes = votesOf(outPath);
      const isNew = appendedFrom !== undefined && votes.length > 0 && votes[0]!.leafIndex >= appendedFrom;
      // This path's Sigs by content, across policies.
      const signed = new Map<string, string>();
      for (const policy of policies) {
        const d = evaluate(policy, votes, active);
        for (const l of this.decided) l(policy.name, d.status);
        // Pending is what having no row means: most paths are pending after their first attestation,
        // and not writing them saves a large random-key row write per new path under ingest.
        if (d.status === 'pending') {
          if (!isNew) this.remove.run(policy.name, outPath);
          continue;
        }
        const agreeingVotes = d.content ? votes.filter((v) => d.agreeing.includes(v.builder) && v.narHash === d.content!.narHash && v.narSize === d.content!.narSize && v.refs === d.content!.refs) : [];
        const sigs = [...new Set(agreeingVotes.map((v) => v.narinfoSignature).filter((s): s is string => s !== null))];
        const key = d.content ? contentKey(d.content) : null;
        const cacheSig = this.upsert.get(
          policy.name,
          outPath,
          d.status,
          d.content?.narHash ?? null,
          d.content?.narSize ?? null,
          d.content?.refs ?? null,
          agreeingVotes[0]?.drvPath ?? null,
          sigs.length ? sigs.join('\n') : null,
          key === null ? null : (signed.get(key) ?? null),
          d.agreeing.length,
          d.reason,
          now,
          this.sigPrefix.length,
          this.sigPrefix,
        ) as string | null;
        if (!d.content || key === null) continue;
        if (cacheSig !== null) signed.set(key, cacheSig);
        else {
          const job = `${outPath}\n${key}`;
          // A size of 0 cannot be signed (Nix refuses it, and so does fingerprint()): such a decision has no Sig and is never served whole.
          if (d.content.narSize > 0 && !this.signing.has(job)) unsigned.set(job, { outPath, content: d.content });
        }
      }
    }
    for (const l of this.listeners) l(outPaths);
    if (unsigned.size > 0) this.signLater(unsigned);
  }

  /**
   * Signs in the signature pool, off the ingest thread, and stores each Sig in a later transaction,
   * only into rows that still hold the content it signs and no Sig: a decision that moved on
   * meanwhile never gets a stale Sig (its new content was queued by its own recompute). Until then
   * the substituter signs such a row when it serves it, and Ed25519 signatures are deterministic, so
   * the narinfo it rendered does not change when the Sig is stored. The rows are derived data: a
   * Sig lost in a crash is made again on read, so this commit does not wait for the disk.
   */
  private signLater(unsigned: Map<string, { outPath: string; content: Content }>): void {
    const jobs = [...unsigned];
    for (const [job] of jobs) this.signing.add(job);
    const messages = jobs.map(([, { outPath, content }]) =>
      contentFingerprint(outPath as StorePath, content.narHash as NarHash, content.narSize, content.refs),
    );
    const done = this.signer
      .sign(this.cacheKey, messages)
      .then((sigs) => {
        if (!this.db.open) return;
        commitUnsynced(this.db, () =>
          jobs.forEach(([, { outPath, content }], i) => {
            const sig = `${this.sigPrefix}${sigs[i]!.toString('base64')}`;
            for (const policy of this.policies) this.storeSig.run(sig, policy.name, outPath, content.narHash, content.narSize, content.refs);
          }),
        );
      })
      .catch((err: unknown) => this.logger.error('storing cache signatures failed; the substituter signs those paths when it serves them', { err }))
      .finally(() => {
        for (const [job] of jobs) this.signing.delete(job);
        this.signingDone.delete(done);
      });
    this.signingDone.add(done);
  }

  /** Resolves once every cache Sig queued so far is stored (or not needed any more). */
  async signaturesStored(): Promise<void> {
    while (this.signingDone.size > 0) await Promise.all(this.signingDone);
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
      this.recompute(new Set(paths), { policies: [policy] });
    })();
    for (const l of this.listeners) l('all');
  }
}
