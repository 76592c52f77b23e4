import { commitUnsynced, type Db } from '../db.js';
import { contentKey, statementText, type Attestation } from './statement.js';
import { fingerprint } from '../nix/fingerprint.js';
import { encodeLeaf } from './leaf.js';
import type { MerkleLog } from './log.js';
import type { Builder, BuilderRegistry } from './registry.js';
import type { SignaturePool } from './signaturePool.js';
import { AttestationRows, pathVotes, voteOf, type PathVote, type VotesOf } from './votes.js';
import type { WalSync } from '../wal/sync.js';

export type IngestResult =
  | { status: 'accepted'; leafIndex: number }
  | { status: 'duplicate'; leafIndex: number }
  | { status: 'conflict'; leafIndex: number; conflictsWith: number[] }
  | { status: 'rejected'; code: 'unknown-builder' | 'revoked-builder' | 'bad-signature' | 'bad-narinfo-signature' | 'too-many-statements'; reason: string };

/** What one commit appended, for the hooks that run inside its transaction. */
export interface AppendedBatch {
  /** The log size before the commit: the new leaves are numbered from here on. */
  from: number;
  /** The new attestations, in log order. */
  appended: ReadonlyArray<{ outPath: string; vote: PathVote }>;
  /** Output paths with new attestations. */
  outPaths: Set<string>;
  /** Every attestation, old and new, of one of `outPaths`: read once per commit and shared. */
  votesOf: VotesOf;
}

/** Called inside the commit transaction (e.g. to update quorum decisions atomically with the leaves). */
export type CommitHook = (batch: AppendedBatch) => void;

interface Pending {
  items: Array<{ attestation: Attestation; builderId: number; key: string }>;
  resolve: (results: IngestResult[]) => void;
  reject: (error: unknown) => void;
}

/** Why an attestation's narinfo Sig cannot be the builder's own, before any signature is checked. */
function narinfoSignatureRefusal(a: Attestation): Extract<IngestResult, { status: 'rejected' }> | undefined {
  if (a.narinfoSignature === null) return undefined;
  if (!a.narinfoSignature.startsWith(`${a.builder}:`)) return { status: 'rejected', code: 'bad-narinfo-signature', reason: `narinfoSignature: made by the key named ${a.narinfoSignature.split(':')[0]}, not by the builder ${a.builder}` };
  if (a.narSize <= 0) return { status: 'rejected', code: 'bad-narinfo-signature', reason: 'narinfoSignature: a path of narSize 0 has no fingerprint to sign' };
  return undefined;
}

/** Upper bound of attestations in one transaction, so one commit never stalls the loop for long. */
const MAX_BATCH = 2000;
/** Longest an acknowledged-to-be attestation waits for others to share its commit. */
const MAX_WAIT_MS = 5;

/**
 * Verifies attestations and appends them to the log with group commit: everything submitted while a
 * commit runs joins the next one, so a burst of N concurrent requests costs one fsync, not N.
 * A returned promise resolves only after COMMIT and after the WAL holding it was fsync'd (WalSync);
 * the fsync of one batch overlaps the verification and commit of the next.
 */
export class Ingestor {
  private queue: Pending[] = [];
  private scheduled = false;
  private timer: NodeJS.Timeout | undefined;
  /** Submissions whose signatures are being verified: they will join the queue any moment. */
  private verifying = 0;
  private queuedItems = 0;
  private oldestQueuedAt = 0;
  private readonly votesOf: VotesOf;
  private readonly rows: AttestationRows;
  private readonly hooks: CommitHook[] = [];
  private readonly committedListeners: Array<() => void> = [];
  /** Counters for metrics and benchmarks. */
  readonly stats = { commits: 0, attestations: 0 };

  constructor(
    private readonly db: Db,
    private readonly registry: BuilderRegistry,
    private readonly log: MerkleLog,
    private readonly verifier: SignaturePool,
    private readonly walSync: WalSync,
    private readonly maxStatementsPerPath: number,
  ) {
    this.votesOf = pathVotes(db, registry);
    this.rows = new AttestationRows(db);
  }

  onCommit(hook: CommitHook): void {
    this.hooks.push(hook);
  }

  /** Runs after each commit is durable, in commit order (e.g. to schedule a checkpoint). */
  onCommitted(listener: () => void): void {
    this.committedListeners.push(listener);
  }

  /**
   * Checks each attestation's key and signature (in the verify pool), then queues the valid ones for
   * the next group commit. Results are in input order.
   */
  async submit(attestations: Attestation[]): Promise<IngestResult[]> {
    const results: Array<IngestResult | undefined> = [];
    const known: Array<{ index: number; attestation: Attestation; builder: Builder; fingerprint: string | null }> = [];
    attestations.forEach((a, i) => {
      const rejected = this.refusal(a.builder) ?? narinfoSignatureRefusal(a);
      if (rejected) results[i] = rejected;
      else known.push({ index: i, attestation: a, builder: this.registry.get(a.builder)!, fingerprint: a.narinfoSignature === null ? null : fingerprint(a.outPath, a.narHash, a.narSize, a.references) });
    });
    // One batch for the pool: every statement's signature, then every narinfo Sig (which the
    // substituter serves to clients: unchecked, a builder could have it serve a Sig over anything).
    const jobs = known.map(({ attestation: a, builder }) => ({ key: builder.publicKey, message: Buffer.from(statementText(a)), signature: a.signature }));
    const sigJobs: number[] = [];
    known.forEach(({ attestation: a, builder, fingerprint }, k) => {
      if (fingerprint === null) return;
      sigJobs[k] = jobs.length;
      jobs.push({ key: builder.publicKey, message: Buffer.from(fingerprint), signature: Buffer.from(a.narinfoSignature!.slice(a.builder.length + 1), 'base64') });
    });
    this.verifying++;
    const valid = await this.verifier.verify(jobs);
    const items: Pending['items'] = [];
    const slots: number[] = [];
    this.verifying--;
    known.forEach(({ index, attestation, builder }, k) => {
      if (!valid[k]) {
        results[index] = { status: 'rejected', code: 'bad-signature', reason: `signature: not a valid signature by ${builder.name} over the attestation statement` };
      } else if (sigJobs[k] !== undefined && !valid[sigJobs[k]]) {
        results[index] = { status: 'rejected', code: 'bad-narinfo-signature', reason: `narinfoSignature: not a valid Sig by ${builder.name} over the path's narinfo fingerprint` };
      } else {
        items.push({ attestation, builderId: builder.id, key: builder.keyId });
        slots.push(index);
      }
    });
    const committed = new Promise<IngestResult[]>((resolve, reject) => {
      if (items.length === 0) return resolve([]);
      if (this.queue.length === 0) this.oldestQueuedAt = Date.now();
      this.queue.push({ items, resolve, reject });
      this.queuedItems += items.length;
    });
    this.schedule();
    (await committed).forEach((r, j) => (results[slots[j]!] = r));
    return results as IngestResult[];
  }

  /**
   * Why a name may not attest, or undefined: it must be a key the log registered under that name and
   * did not revoke (a second row holding a registered key, which only an edit of the database makes,
   * is refused too: one key is one builder).
   */
  private refusal(name: string): Extract<IngestResult, { status: 'rejected' }> | undefined {
    const builder = this.registry.get(name);
    if (builder?.counts) return undefined;
    if (!builder || builder.addedLeaf === null) return { status: 'rejected', code: 'unknown-builder', reason: `builder: no registered builder key named ${name}` };
    if (!builder.active) return { status: 'rejected', code: 'revoked-builder', reason: `builder: the key ${name} was revoked` };
    return { status: 'rejected', code: 'unknown-builder', reason: `builder: ${name} holds a key registered under another name` };
  }

  /**
   * Commits when nothing more is about to join: no submission is still being verified, or the batch
   * is full, or its oldest item has waited MAX_WAIT_MS. Each commit costs one fsync (about 15 ms on
   * this class of disk), so waiting a few milliseconds for company is what keeps ingest fast.
   */
  private schedule(): void {
    if (this.scheduled || this.queue.length === 0) return;
    const waited = Date.now() - this.oldestQueuedAt;
    if (this.verifying > 0 && this.queuedItems < MAX_BATCH && waited < MAX_WAIT_MS) {
      this.timer ??= setTimeout(() => {
        this.timer = undefined;
        this.schedule();
      }, MAX_WAIT_MS - waited);
      return;
    }
    this.scheduled = true;
    // setImmediate lets every request already read off the sockets join this batch.
    setImmediate(() => {
      this.scheduled = false;
      this.flush();
    });
  }

  private flush(): void {
    const batch: Pending[] = [];
    let count = 0;
    while (this.queue.length > 0 && count < MAX_BATCH) {
      const next = this.queue.shift()!;
      batch.push(next);
      count += next.items.length;
    }
    this.queuedItems -= count;
    this.oldestQueuedAt = Date.now();
    if (batch.length === 0) return;
    let results: IngestResult[][];
    try {
      // Nothing is acknowledged before walSync below.
      results = commitUnsynced(this.db, () => this.commit(batch));
    } catch (error) {
      for (const p of batch) p.reject(error);
      this.schedule();
      return;
    }
    this.stats.commits++;
    this.walSync.sync().then(
      () => {
        batch.forEach((p, i) => p.resolve(results[i]!));
        for (const listener of this.committedListeners) listener();
      },
      (error: unknown) => {
        for (const p of batch) p.reject(error);
      },
    );
    this.schedule();
  }

  private commit(batch: Pending[]): IngestResult[][] {
    const now = Date.now();
    const start = this.log.size();
    const leaves: Buffer[] = [];
    const appended: Array<{ outPath: string; vote: PathVote }> = [];
    // Each path's attestations are read once per commit; this batch's own join them as they are added.
    const votes = new Map<string, PathVote[]>();
    const results = batch.map((p) =>
      p.items.map(({ attestation: a, builderId, key }): IngestResult => {
        // A revocation may have committed while the signature was being verified: it wins.
        const rejected = this.refusal(a.builder);
        if (rejected) return rejected;
        let pathVotes = votes.get(a.outPath);
        if (!pathVotes) votes.set(a.outPath, (pathVotes = [...this.votesOf(a.outPath)]));
        const existing = pathVotes.filter((v) => v.key === key);
        const refs = a.references.join(',');
        const same = existing.find((e) => e.narHash === a.narHash && e.narSize === a.narSize && e.refs === refs && e.drvPath === a.drvPath && e.outputName === a.outputName);
        if (same) return { status: 'duplicate', leafIndex: same.leafIndex };
        // Without a bound one key could grow one path's votes (and every decision over them) without end.
        if (existing.length >= this.maxStatementsPerPath) {
          return { status: 'rejected', code: 'too-many-statements', reason: `outPath: the log holds ${existing.length} statements by ${a.builder} about ${a.outPath}, the most one key may make about one path` };
        }
        const leafIndex = start + leaves.length;
        const vote = voteOf(a, refs, leafIndex, builderId, key);
        this.rows.insert(a, vote, now);
        leaves.push(encodeLeaf(a));
        pathVotes.push(vote);
        appended.push({ outPath: a.outPath, vote });
        const content = contentKey(vote);
        const differing = existing.filter((e) => contentKey(e) !== content);
        for (const e of differing) this.rows.conflict(builderId, a.outPath, e.leafIndex, leafIndex, now);
        if (differing.length > 0) return { status: 'conflict', leafIndex, conflictsWith: differing.map((e) => e.leafIndex) };
        return { status: 'accepted', leafIndex };
      }),
    );
    this.log.append(start, leaves);
    this.stats.attestations += leaves.length;
    const outPaths = new Set(appended.map((x) => x.outPath));
    const votesOf: VotesOf = (outPath) => votes.get(outPath) ?? this.votesOf(outPath);
    for (const hook of this.hooks) hook({ from: start, appended, outPaths, votesOf });
    return results;
  }
}
