import type { Statement } from 'better-sqlite3';
import { commitUnsynced, type Db } from '../db.js';
import type { BuilderRegistry } from '../ledger/registry.js';
import { contentKey } from '../ledger/statement.js';
import { pathVotes, voterKey, type PathVote, type VotesOf } from '../ledger/votes.js';
import type { Logger } from '../log.js';
import { contentFingerprint } from '../nix/fingerprint.js';
import type { NarHash } from '../nix/hash.js';
import { formatPublicKey, type SecretKey } from '../nix/keys.js';
import type { StorePath } from '../nix/storePath.js';
import { evaluate, trustedKeys, type Decision, type Policy } from './evaluate.js';
import type { PolicyBook } from './policies.js';

type Content = NonNullable<Decision['content']>;

/** Makes the cache key's signatures off the ingest thread (SignaturePool). */
export interface Signer {
  sign(key: SecretKey, messages: string[]): Promise<Buffer[]>;
}

const CACHE_SIG_KEY = 'cache_sig_key';
/** Attestation rows per transaction of the background check (about 20 ms of work each here). */
const RECONCILE_CHUNK = 2000;

/**
 * Keeps the decisions table equal to evaluate() over the attestations: a row per (policy, path) whose
 * status is 'quorum' or 'blocked', none for 'pending'. Decisions are written inside the caller's
 * transaction, so a decision never disagrees with the ledger that produced it; only the cache key's
 * Sig of a new content follows in a later one (signLater).
 */
export class DecisionMaterializer {
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
  /** Keys are named in reasons by the names the log bound them to. */
  private readonly label = (key: string) => this.registry.nameOfKey(key);

  constructor(
    private readonly db: Db,
    private readonly registry: BuilderRegistry,
    private readonly policies: PolicyBook,
    private readonly cacheKey: SecretKey,
    private readonly signer: Signer,
    private readonly logger: Logger,
  ) {
    this.sigPrefix = `${cacheKey.name}:`;
    this.votesOf = pathVotes(db, registry);
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
    const voteColumns = `SELECT a.out_path, a.leaf_index, a.builder_id, b.name, a.drv_path, a.output_name, a.nar_hash, a.nar_size, a.refs, a.narinfo_signature
       FROM attestations a JOIN builders b ON b.id = a.builder_id`;
    this.chunk = db.prepare<[string, number], VoteRowWithPath>(`${voteColumns} WHERE a.out_path > ? ORDER BY a.out_path LIMIT ?`).raw();
    this.wholePath = db.prepare<[string], VoteRowWithPath>(`${voteColumns} WHERE a.out_path = ?`).raw();
    const existing = 'SELECT out_path, status, nar_hash, nar_size, refs, deriver, sigs, agreeing FROM decisions';
    this.stored = db.prepare<[string, string], ExistingRow>(`${existing} WHERE policy = ? AND out_path = ?`).raw();
    this.withNar = db.prepare<[string, string], string>("SELECT out_path FROM decisions WHERE nar_hash = ? AND policy = ? AND status = 'quorum'").pluck();
    this.rowsBetween = db.prepare<[string, string, string], ExistingRow>(`${existing} WHERE policy = ? AND out_path > ? AND out_path <= ?`).raw();
    this.rowsAfter = db.prepare<[string, string], ExistingRow>(`${existing} WHERE policy = ? AND out_path > ?`).raw();
    this.forgetSignaturesOfReplacedKey();
  }

  private readonly chunk: Statement<[string, number], VoteRowWithPath>;
  private readonly wholePath: Statement<[string], VoteRowWithPath>;
  private readonly rowsBetween: Statement<[string, string, string], ExistingRow>;
  private readonly rowsAfter: Statement<[string, string], ExistingRow>;
  private readonly withNar: Statement<[string, string], string>;

  /** Notified after decisions change (inside the transaction), e.g. to invalidate narinfo caches. */
  onChange(listener: (outPaths: Set<string> | 'all') => void): void {
    this.listeners.push(listener);
  }

  /** Called for every decision computed (for metrics). */
  onDecided(listener: (policy: string, status: Decision['status']) => void): void {
    this.decided.push(listener);
  }

  getPolicies(): Policy[] {
    return this.policies.list();
  }

  /**
   * Evaluates one path under every policy without writing: what status and the web pages show, with
   * keys given by the names the log bound them to.
   */
  evaluatePath(outPath: string): Array<{ policy: Policy; decision: Decision }> {
    const votes = this.votesOf(outPath);
    const named = (keys: string[]) => keys.map((k) => this.registry.nameOfKey(k)).sort();
    return this.policies.list().map((policy) => {
      const d = evaluate(policy, trustedKeys(policy, this.registry), votes, this.label);
      return { policy, decision: { ...d, agreeing: named(d.agreeing), dissenting: named(d.dissenting), equivocating: named(d.equivocating), missing: named(d.missing) } };
    });
  }

  /**
   * Re-decides `outPaths` under `policies` (default: all). Ingest hands over the votes it read
   * (`votesOf`) and the first leaf of its commit (`appendedFrom`): a path with no vote before that
   * leaf is new, so it has no decision row to remove.
   *
   * The cache key's Sig over the agreed content is stored with the decision so the substituter does
   * not sign (about 50 µs) per request. A decision whose content is unchanged keeps its Sig: a path is
   * signed when it reaches quorum, not again for every agreeing attestation after. A new content is
   * stored without one and signed after the commit (signLater), unless `sign` is false: then the
   * substituter signs it when it first serves it, and the next recompute of the path stores a Sig.
   */
  recompute(
    outPaths: Iterable<string>,
    { votesOf = this.votesOf, appendedFrom, policies = this.policies.list(), sign = true }: { votesOf?: VotesOf; appendedFrom?: number; policies?: Policy[]; sign?: boolean } = {},
  ): void {
    const now = Date.now();
    const trusted = policies.map((p) => trustedKeys(p, this.registry));
    const unsigned = new Map<string, { outPath: string; content: Content }>();
    const changed = new Set<string>();
    for (const outPath of outPaths) {
      changed.add(outPath);
      const votes = votesOf(outPath);
      const isNew = appendedFrom !== undefined && votes.length > 0 && votes[0]!.leafIndex >= appendedFrom;
      // This path's Sigs by content, across policies.
      const signed = new Map<string, string>();
      for (const [i, policy] of policies.entries()) {
        const d = evaluate(policy, trusted[i]!, votes, this.label);
        for (const l of this.decided) l(policy.name, d.status);
        // Pending is what having no row means: most paths are pending after their first attestation,
        // and not writing them saves a large random-key row write per new path under ingest.
        if (d.status === 'pending') {
          if (!isNew) this.remove.run(policy.name, outPath);
          continue;
        }
        const { deriver, sigs } = agreedDetails(d, votes);
        const key = d.content ? contentKey(d.content) : null;
        const cacheSig = this.upsert.get(
          policy.name,
          outPath,
          d.status,
          d.content?.narHash ?? null,
          d.content?.narSize ?? null,
          d.content?.refs ?? null,
          deriver,
          sigs,
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
    for (const l of this.listeners) l(changed);
    if (unsigned.size > 0 && sign) this.signLater(unsigned);
  }

  /** Re-decides every attested path under `policies` (a policy change), inside the caller's transaction. */
  recomputeAll(policies: Policy[] = this.policies.list()): void {
    if (policies.length > 0) this.recompute(this.db.prepare('SELECT DISTINCT out_path FROM attestations').pluck().all() as string[], { policies });
    // Rows of a policy that is gone, or that the new policy no longer decides, go too.
    const names = this.policies.list().map((p) => p.name);
    this.db.prepare(`DELETE FROM decisions WHERE policy NOT IN (${names.map(() => '?').join(',') || "''"})`).run(...names);
    for (const l of this.listeners) l('all');
  }

  /**
   * Whether every decision row was checked against the log since this process opened it. Until
   * then, what is served is checked path by path first (check): a row edited in the database while
   * the server was down is never served, and the background pass (reconcile) corrects the rest.
   */
  get checked(): boolean {
    return this.checkedAll;
  }

  /**
   * Whether the rows of `outPath` say what the log implies; if not, they are re-decided now (and
   * counted). For what is about to be served before the background pass got to it.
   */
  check(outPath: string): boolean {
    if (this.checkedAll) return true;
    const votes = this.votesOf(outPath);
    const policies = this.policies.list();
    const right = policies.every((p) => sameDecision(evaluate(p, trustedKeys(p, this.registry), votes), votes, this.stored.get(p.name, outPath)));
    if (right) return true;
    this.db.transaction(() => this.recompute([outPath], { votesOf: () => votes, policies }))();
    this.corrected++;
    this.logger.warn('a decision that did not follow from the log was corrected before it was served', { outPath });
    return false;
  }

  /** check() of every path whose decision under `policy` gives a NAR: before that NAR is served. */
  checkNar(narHash: string, policy: string): void {
    if (this.checkedAll) return;
    for (const outPath of this.withNar.all(narHash, policy)) this.check(outPath);
  }

  private checkedAll = false;
  private corrected = 0;
  private readonly stored: Statement<[string, string], ExistingRow>;

  /**
   * Makes every decision row what the log implies, in the background after start: a row edited in
   * the database, or left behind by another version of the program, is corrected (and counted).
   * (Attestation rows beyond the tree, never logged, are gone by then: rebuildProjection.) Reads the
   * attestations in out_path order, CHUNK rows per transaction, yielding between chunks, so serving
   * goes on meanwhile (check() covers what is served before the pass reaches it).
   */
  async reconcile(): Promise<{ paths: number; corrected: number; ms: number }> {
    const started = performance.now();
    const paths = await this.pass(true);
    this.checkedAll = true;
    return { paths, corrected: this.corrected, ms: Math.round(performance.now() - started) };
  }

  /**
   * reconcile's pass, for attestations applied without their decisions (a mirror's bulk catch-up,
   * src/mirror/follower.ts): what it writes is expected, so it is not counted as corrected, and new
   * decisions are not signed now (see recompute: a large catch-up's paths are mostly never asked
   * for soon). Returns the paths it went through.
   */
  decideAll(): Promise<number> {
    return this.pass(false);
  }

  /** Makes every decision row what the log implies, a chunk per transaction; `reconciling`: what it corrects is counted, and signed. */
  private async pass(reconciling: boolean): Promise<number> {
    const names = this.policies.list().map((p) => p.name);
    // Rows of policies that are gone are never served (the substituter serves known policies only): one cleanup.
    const gone = this.db.prepare(`DELETE FROM decisions WHERE policy NOT IN (${names.map(() => '?').join(',') || "''"})`).run(...names).changes;
    if (reconciling) this.corrected += gone;
    let paths = 0;
    for (let after: string | null = ''; after !== null; ) {
      const step = this.db.transaction((from: string) => this.reconcileChunk(from, reconciling))(after);
      paths += step.paths;
      after = step.next;
      await new Promise((resolve) => setImmediate(resolve));
      if (!this.db.open) break;
    }
    return paths;
  }

  /** One chunk of pass(): the paths after `after` whose attestations fit CHUNK rows, and the rows of paths no leaf attests between. */
  private reconcileChunk(after: string, reconciling: boolean): { paths: number; next: string | null } {
    const policies = this.policies.list();
    const trusted = policies.map((p) => trustedKeys(p, this.registry));
    let rows = this.chunk.all(after, RECONCILE_CHUNK);
    const last = rows.length === RECONCILE_CHUNK ? rows[rows.length - 1]![0] : null;
    if (last !== null) {
      // The last path may go on in the next chunk: leave it whole for that one, unless it is the whole chunk.
      const cut = rows.findIndex((r) => r[0] === last);
      rows = cut > 0 ? rows.slice(0, cut) : this.wholePath.all(last);
    }
    const votes = new Map<string, PathVote[]>();
    for (const [outPath, leafIndex, builderId, builder, drvPath, outputName, narHash, narSize, refs, narinfoSignature] of rows) {
      const list = votes.get(outPath) ?? votes.set(outPath, []).get(outPath)!;
      list.push({ leafIndex, builderId, builder, key: voterKey(this.registry, builderId), drvPath, outputName, narHash, narSize, refs, narinfoSignature });
    }
    for (const list of votes.values()) list.sort((x, y) => x.leafIndex - y.leafIndex);
    // The range this chunk covers: rows of paths in it that no attestation backs are removed.
    const end = last === null ? null : rows[rows.length - 1]![0];
    const wrong = new Set<string>();
    for (const [i, policy] of policies.entries()) {
      const stored = new Map(this.inRange(policy.name, after, end));
      for (const outPath of stored.keys()) {
        if (votes.has(outPath)) continue;
        this.remove.run(policy.name, outPath);
        if (reconciling) this.corrected++;
      }
      // A path without a row is pending; sameDecision says so.
      for (const [outPath, pathVotes] of votes) if (!wrong.has(outPath) && !sameDecision(evaluate(policy, trusted[i]!, pathVotes), pathVotes, stored.get(outPath))) wrong.add(outPath);
    }
    if (reconciling) this.corrected += wrong.size;
    if (wrong.size > 0) this.recompute(wrong, { votesOf: (p) => votes.get(p) ?? [], policies, sign: reconciling });
    return { paths: votes.size, next: end };
  }

  /** The stored rows of a policy with out_path in (after, end], end null meaning to the last. */
  private inRange(policy: string, after: string, end: string | null): Array<[string, ExistingRow]> {
    const rows = end === null ? this.rowsAfter.all(policy, after) : this.rowsBetween.all(policy, after, end);
    return rows.map((r) => [r[0], r]);
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
            for (const policy of this.policies.list()) this.storeSig.run(sig, policy.name, outPath, content.narHash, content.narSize, content.refs);
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

}

type VoteRowWithPath = [outPath: string, leafIndex: number, builderId: number, builder: string, drvPath: string, outputName: string, narHash: string, narSize: number, refs: string, narinfoSignature: string | null];
type ExistingRow = [outPath: string, status: string, narHash: string | null, narSize: number | null, refs: string | null, deriver: string | null, sigs: string | null, agreeing: number];

/** Whether a stored row (or its absence, which means pending) says what the evaluation says. */
function sameDecision(d: Decision, votes: readonly PathVote[], row: ExistingRow | undefined): boolean {
  if (d.status === 'pending') return row === undefined || row[1] === 'pending';
  if (!row || row[1] !== d.status || row[7] !== d.agreeing.length) return false;
  if (d.status === 'blocked') return true;
  const c = d.content!;
  if (row[2] !== c.narHash || row[3] !== c.narSize || row[4] !== c.refs) return false;
  const { deriver, sigs } = agreedDetails(d, votes);
  return row[5] === deriver && row[6] === sigs;
}

/** What a decision row holds besides the decision: a deriver of the agreed content, and its builders' narinfo Sigs ('\n'-joined). */
function agreedDetails(d: Decision, votes: readonly PathVote[]): { deriver: string | null; sigs: string | null } {
  const c = d.content;
  if (!c) return { deriver: null, sigs: null };
  const agreeing = votes.filter((v) => d.agreeing.includes(v.key) && v.narHash === c.narHash && v.narSize === c.narSize && v.refs === c.refs);
  const sigs = [...new Set(agreeing.map((v) => v.narinfoSignature).filter((x): x is string => x !== null))];
  return { deriver: agreeing[0]?.drvPath ?? null, sigs: sigs.length ? sigs.join('\n') : null };
}
