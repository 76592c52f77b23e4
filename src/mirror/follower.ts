import type { Statement } from 'better-sqlite3';
import { commitUnsynced, dropIndexes, restoreIndexes } from '../db.js';
import { QuorumError } from '../errors.js';
import { Ledger } from '../client/ledger.js';
import { openNote, type Checkpoint, type NoteVerifierKey } from '../ledger/checkpoint.js';
import { TreeFrontier } from '../ledger/frontier.js';
import { decodeLeaf, type LogLeaf } from '../ledger/leaf.js';
import type { LogState } from '../ledger/logState.js';
import { leafHash, verifyConsistency, type StoredNode } from '../ledger/merkle.js';
import { operatorState, rebuildProjection } from '../ledger/projection.js';
import type { SignaturePool } from '../ledger/signaturePool.js';
import { contentKey, type Attestation } from '../ledger/statement.js';
import { AttestationRows, pathVotes, voteOf, voterKey, type PathVote, type VotesOf } from '../ledger/votes.js';
import type { Logger } from '../log.js';
import type { MirrorMetrics } from './metrics.js';
import { publicKeyFromRaw, type PublicKey } from '../nix/keys.js';
import type { Service } from '../service.js';
import { verifyCheckpoint, type LogTrust } from '../verification/checkpoint.js';
import { compareWithVerified } from '../verification/consistency.js';
import { VerificationError } from '../verification/errors.js';
import { decodeVerifiedLeaf } from '../verification/inclusion.js';
import { leafSignatureJob, type SignatureJob } from '../verification/signature.js';
import type { Cosignature } from '../witness/cosignature.js';
import { CosignatureStore } from '../witness/cosignatures.js';
import type { WitnessPolicy } from '../witness/verifyCosigned.js';

/** Leaves asked for per request (the primary may answer fewer: its pages are bounded in bytes). */
const PAGE = 1000;
/** Leaves proved, verified and applied together (one transaction), in whole pages; two segments are in memory at most. */
const SEGMENT = 5000;
const MAX_BACKOFF_MS = 30_000;
/** Signatures per verification batch sent to the signature pool, and batches in flight at most. */
const VERIFY_BATCH = 2000;
const MAX_VERIFYING = 4;
/** A round applying more leaves than this is a catch-up (see onApplied). */
const CATCH_UP = 10_000;
/**
 * The indexes a bulk catch-up builds at its end instead of row by row: each is keyed by a store path
 * or a NAR hash, so every row costs a random page write (at a million leaves, one per leaf and index,
 * most of a commit). Applying in bulk reads none of them; deriving the decisions reads the first.
 */
const ATTESTATION_INDEXES = ['attestations_path', 'attestations_drv'];
const BULK_INDEXES = [...ATTESTATION_INDEXES, 'decisions_quorum_nar'];
/** meta: the first leaf of a bulk catch-up whose indexes, conflicts and decisions are not done yet. */
const BULK_FROM = 'mirror_bulk_from';
/** Above the largest answer of the primary: a page holds at most 4 MiB of leaves, in base64 and JSON. */
const MAX_ANSWER_BYTES = 16 << 20;

/** A signature check of entry `index`, by the builder `name`. */
type Job = SignatureJob & { index: number; name: string };

/** Leaves [from, end) of the primary, decoded, checked and hashed, in memory until applied. */
interface Segment {
  from: number;
  end: number;
  leaves: Array<{ bytes: Buffer; leaf: LogLeaf }>;
  /** The Merkle nodes its leaves complete, as the local log stores them. */
  nodes: StoredNode[];
  /** The signature batches to settle before it is applied: every one sent up to its end. */
  batches: number;
}

/** What one round carries from segment to segment. */
interface Round {
  checkpoint: Checkpoint;
  /** The local tree extended by every leaf fetched so far. */
  frontier: TreeFrontier;
  /** The registry and policies the leaves so far state. */
  state: LogState;
  /**
   * Attestations under a name not bound yet, by name: a ledger upgraded from before registry leaves
   * logs its registry after its attestations. Until they are bound, what follows them is staged in
   * the database (mirror_staging) rather than held in memory, and applied once they are.
   */
  unbound: Map<string, number[]>;
  signatures: PendingSignatures;
  /** A bulk catch-up: leaves are applied as rows only, their decisions and conflicts follow at its end (see finishBulk). */
  bulk: boolean;
  /** The page asked for ahead (see page). */
  ahead?: { at: number; answer: Promise<Array<{ index: number; leaf: string }>> };
}

/**
 * The signature checks of a round, verified in batches by the signature pool while this thread goes
 * on. Batches are settled in the order they were sent, so a bad signature stops the round at the
 * segment that holds it, after every segment before it was applied.
 */
class PendingSignatures {
  private queued: Job[] = [];
  /** Each batch sent and not settled yet, oldest first: the first of its jobs that failed, if any. */
  private readonly unsettled: Array<Promise<Job | undefined>> = [];
  /** Batches sent so far, and settled (found valid) so far. */
  sent = 0;
  private settled = 0;

  constructor(private readonly pool: SignaturePool) {}

  add(job: Job): void {
    this.queued.push(job);
    if (this.queued.length >= VERIFY_BATCH) this.send();
  }

  send(): void {
    const batch = this.queued.splice(0);
    if (batch.length === 0) return;
    this.unsettled.push(this.pool.verify(batch).then((valid) => batch.find((_, i) => !valid[i])));
    this.sent++;
  }

  /** Waits while more than MAX_VERIFYING batches are verifying: this thread must not race ahead of the pool. */
  async throttle(): Promise<void> {
    const oldest = this.unsettled.length - 1 - MAX_VERIFYING;
    if (oldest >= 0) await this.unsettled[oldest];
  }

  /** Waits until the first `batches` sent have verified; a signature that does not is the primary's fault. */
  async settle(batches: number): Promise<void> {
    while (this.settled < batches) {
      const bad = await this.unsettled.shift()!;
      this.settled++;
      if (bad) throw new VerificationError('signature', 'bad-signature', `entry ${bad.index}: the signature by ${bad.name} does not verify under the key the log bound that name to`);
    }
  }

  /** A round that failed: the answers of batches still unsettled no longer matter. */
  abandon(): void {
    for (const p of this.unsettled) p.catch(() => undefined);
  }
}

/** The evidence kinds of mirror_evidence: a leaf that fails any check is a bad leaf. */
type EvidenceKind = 'fork' | 'rollback' | 'root-mismatch' | 'bad-leaf';
const evidenceKind = (error: VerificationError): EvidenceKind => (error.code === 'fork' || error.code === 'rollback' || error.code === 'root-mismatch' ? error.code : 'bad-leaf');

const PARTIES = { offeredBy: 'the primary', verifier: 'this mirror' };

export interface FollowerOptions {
  /** Between rounds, in ms (more after failures, up to MAX_BACKOFF_MS). */
  pollMs: number;
  /** A round with at least this many leaves to apply, and at least as many as the mirror holds, applies them in bulk. */
  bulkCatchUp: number;
}

export interface MirrorStatus {
  primary: string;
  /** The size of the last checkpoint verified and applied in full. */
  verifiedSize: number;
  /**
   * Leaves applied and served, each proved (replayed up to a verified checkpoint, or with the
   * primary's consistency proof) to be in the newest checkpoint verified: ahead of verifiedSize
   * while a catch-up is under way, or after one stopped part way.
   */
  appliedSize: number;
  /** The size the primary's newest checkpoint claims. */
  primarySize: number | null;
  lastVerifiedAt: string | null;
  /** Set when the primary offered something that does not follow from what was verified: the mirror stopped there. */
  degraded: string | null;
  /** The last failure to reach the primary, if the last attempt failed. */
  unreachable: string | null;
}

/** A recorded inconsistency: what the primary offered that does not follow from what was verified. */
export interface MirrorEvidence {
  detectedAt: string;
  kind: EvidenceKind;
  detail: string;
  /** The last checkpoint this mirror verified (null: none yet) and the one the primary offered, as signed notes. */
  verifiedNote: string | null;
  offeredNote: string;
}

/**
 * A mirror: follows another ledger (the primary), verifying everything before it serves it, with
 * the primary's server, database and blob store all assumed hostile. The checks are the ones of
 * src/verification/, shared with the client; a mirror holds every leaf, so it proves inclusion by
 * replaying them:
 *  1. each checkpoint verifies under the pinned log key, with the witness policy's cosignatures
 *     (verifyCheckpoint: a log showing this mirror a history the witnesses did not see is refused);
 *  2. it extends the last one verified: a smaller tree is a rollback, the same size with another
 *     root a fork (compareWithVerified);
 *  3. the new leaves, fetched in bounded pages a segment at a time, decode (decodeVerifiedLeaf),
 *     and every registry and policy leaf keeps the identity rule (LogState, the primary's own replay);
 *  4. every attestation's signature verifies under the key its name is bound to in the log (leafSignatureJob);
 *  5. the local tree extended by a segment hashes to the checkpoint's root, or to a tree the
 *     primary proves (consistency proof) the checkpoint's tree extends: its pages cannot slip in,
 *     drop or reorder a leaf, and what was verified before cannot change;
 *  6. only then is the segment applied, with the primary's code (projection, decisions), and served.
 * A catch-up thus serves its verified part at once and, stopped, resumes where it stopped. A large
 * one (a mirror started on a large log) applies its segments as rows only, in bulk, and then builds
 * their indexes, finds their equivocations and derives every decision in one pass (finishBulk):
 * until then the decisions served are those of the size it started from. On any
 * inconsistency it stops advancing, keeps serving what it verified, records both checkpoints as
 * evidence and reports it; it resumes once the primary offers a checkpoint that does follow.
 */
export class Follower {
  private readonly primary: string;
  private readonly ledger: Ledger;
  private readonly cosignatures: CosignatureStore;
  private readonly trust: LogTrust;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;
  private failures = 0;
  private readonly status: Omit<MirrorStatus, 'appliedSize'>;
  private readonly stage: Statement<[number, Buffer]>;
  private readonly appliedListeners: Array<(outPaths: Set<string>, catchingUp: boolean) => void> = [];
  private readonly staged: Statement<[number, number], { leaf_index: number; leaf: Buffer }>;
  private readonly clearStaging: Statement<[]>;
  private readonly rows: AttestationRows;
  private readonly insertOperator: Statement<[number, string]>;
  private readonly insertUncounted: Statement<[string, Buffer, number]>;
  private readonly votesOf: VotesOf;
  private readonly bulkFrom: Statement<[], string>;
  /** Each name's key object, for the key the log binds it to (see keyOf). */
  private readonly keys = new Map<string, PublicKey>();

  constructor(
    private readonly service: Service,
    primary: string,
    private readonly logKey: NoteVerifierKey,
    witnesses: WitnessPolicy | null,
    private readonly options: FollowerOptions,
    private readonly metrics: MirrorMetrics,
    private readonly logger: Logger,
  ) {
    this.primary = primary.endsWith('/') ? primary : `${primary}/`;
    this.ledger = new Ledger(this.primary, MAX_ANSWER_BYTES);
    this.trust = { logKey, origin: service.origin, witnesses };
    this.cosignatures = new CosignatureStore(service.db);
    this.stage = service.db.prepare('INSERT OR REPLACE INTO mirror_staging (leaf_index, leaf) VALUES (?, ?)');
    this.staged = service.db.prepare('SELECT leaf_index, leaf FROM mirror_staging WHERE leaf_index >= ? AND leaf_index < ? ORDER BY leaf_index');
    this.clearStaging = service.db.prepare('DELETE FROM mirror_staging');
    this.rows = new AttestationRows(service.db);
    this.insertOperator = service.db.prepare('INSERT INTO operator_leaves (leaf_index, leaf) VALUES (?, ?)');
    this.insertUncounted = service.db.prepare('INSERT INTO builders (name, public_key, added_at) VALUES (?, ?, ?)');
    this.votesOf = pathVotes(service.db, service.registry);
    this.bulkFrom = service.db.prepare<[], string>(`SELECT value FROM meta WHERE key = '${BULK_FROM}'`).pluck();
    const latest = service.checkpoints.latest();
    this.status = { primary: this.primary, verifiedSize: latest?.size ?? 0, primarySize: null, lastVerifiedAt: latest ? new Date(latest.createdAt).toISOString() : null, degraded: this.lastEvidence(), unreachable: null };
  }

  start(): void {
    this.schedule(0);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running;
    this.ledger.close();
  }

  /**
   * Called after each applied chunk with its output paths (the mirror fetches their NARs ahead), and
   * whether it is part of a catch-up of more than CATCH_UP leaves (a mirror started on a large log).
   */
  onApplied(listener: (outPaths: Set<string>, catchingUp: boolean) => void): void {
    this.appliedListeners.push(listener);
  }

  current(): MirrorStatus {
    return { ...this.status, appliedSize: this.service.log.size() };
  }

  /** One round now (tests, and the loop): resolves when it is done. */
  async sync(): Promise<void> {
    while (this.running) await this.running;
    this.running = this.round().finally(() => (this.running = undefined));
    await this.running;
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      void this.sync().finally(() => this.schedule(this.failures === 0 ? this.options.pollMs : Math.min(MAX_BACKOFF_MS, this.options.pollMs * 2 ** this.failures)));
    }, ms);
    this.timer.unref();
  }

  private async round(): Promise<void> {
    let note: string;
    try {
      // A bulk catch-up a crash cut short is finished first, the primary reachable or not: its
      // leaves are applied, their decisions are not (a failure here is retried as any round's).
      await this.finishBulk();
      note = await this.ledger.checkpoint(0);
    } catch (error) {
      this.unreachable(error);
      return;
    }
    try {
      await this.follow(note);
      this.failures = 0;
      this.status.unreachable = null;
      if (this.status.degraded) this.logger.info('the primary follows from what this mirror verified again: following it', { primary: this.primary });
      this.status.degraded = null;
      this.metrics.degraded.set(0);
    } catch (error) {
      if (error instanceof VerificationError && error.evidence) return this.inconsistent(error, note);
      this.unreachable(error);
    }
  }

  /** Steps 1 to 6 for the primary's newest checkpoint `note`. */
  private async follow(note: string): Promise<void> {
    // 1. The checkpoint under the pinned log key, with the required cosignatures.
    const { checkpoint, cosignatures } = verifyCheckpoint(note, this.trust);
    this.status.primarySize = checkpoint.size;
    this.metrics.primarySize.set(checkpoint.size);
    const { log } = this.service;
    const local = log.size();
    // 2. Append-only.
    if (compareWithVerified({ size: local, rootHash: log.root(local) }, checkpoint, PARTIES) === 'same') {
      this.storeCheckpoint(note, checkpoint, cosignatures);
      return;
    }
    // 3-6, a segment at a time: fetched, checked and hashed while the signature pool verifies the
    // one before, which is then applied.
    const round: Round = {
      checkpoint,
      frontier: TreeFrontier.of(local, log),
      // The registry and policies the local log states (verified when applied): where the checks start.
      state: operatorState(this.service.db),
      unbound: new Map(),
      signatures: new PendingSignatures(this.service.signatures),
      bulk: checkpoint.size - local >= Math.max(this.options.bulkCatchUp, local),
    };
    const catchingUp = checkpoint.size - local > CATCH_UP;
    if (round.bulk) this.startBulk(local);
    // Leaves staged by a round that was cut short (a failure, a crash) are fetched again.
    this.clearStaging.run();
    let ready: Segment | undefined;
    // The first leaf of the staged range that waits for a name to be bound (see Round.unbound).
    let held: number | undefined;
    try {
      for (let start = local; start < checkpoint.size; ) {
        const segment = await this.fetchSegment(start, round);
        await this.prove(segment, round);
        if (ready) {
          await round.signatures.settle(ready.batches);
          this.apply(ready.from, ready.leaves, ready.nodes, catchingUp, round.bulk);
          ready = undefined;
        }
        if (held === undefined && round.unbound.size === 0) ready = segment;
        else {
          commitUnsynced(this.service.db, () => segment.leaves.forEach((l, i) => this.stage.run(segment.from + i, l.bytes)));
          held ??= segment.from;
          if (round.unbound.size === 0) {
            await round.signatures.settle(round.signatures.sent);
            await this.applyStaged(held, segment.end, round, catchingUp);
            held = undefined;
          }
        }
        start = segment.end;
      }
      if (ready) {
        await round.signatures.settle(ready.batches);
        this.apply(ready.from, ready.leaves, ready.nodes, catchingUp, round.bulk);
      }
    } finally {
      round.signatures.abandon();
      // What was applied is served whole, also when a bad leaf stopped the round part way.
      await this.finishBulk();
    }
    const [name, indices] = [...round.unbound][0] ?? [];
    if (name) throw new VerificationError('signature', 'bad-leaf', `entries ${indices!.slice(0, 5).join(', ')}: signed as ${name}, a name the log never registers`);
    this.storeCheckpoint(note, checkpoint, cosignatures);
    this.logger.info('mirror verified and applied', { from: local, to: checkpoint.size });
  }

  /** 3-4 for the leaves from `start` on, a bounded page at a time, until SEGMENT leaves or the checkpoint's size. */
  private async fetchSegment(start: number, round: Round): Promise<Segment> {
    const segment: Segment = { from: start, end: start, leaves: [], nodes: [], batches: 0 };
    while (segment.end < round.checkpoint.size && segment.leaves.length < SEGMENT) {
      const from = segment.end;
      const to = Math.min(round.checkpoint.size, from + PAGE);
      const entries = await this.page(round, from);
      if (entries.length === 0 || entries.length > to - from) throw new QuorumError('bad-response', `the primary answered ${entries.length} entries for [${from}, ${to})`);
      for (const [i, e] of entries.entries()) {
        const index = from + i;
        if (e.index !== index) throw new QuorumError('bad-response', `the primary's entry ${index} is labelled ${e.index}`);
        const bytes = Buffer.from(e.leaf, 'base64');
        const leaf = decodeVerifiedLeaf(index, bytes);
        segment.leaves.push({ bytes, leaf });
        this.check(round, index, bytes, leaf, segment);
        round.frontier.push(leafHash(bytes), segment.nodes);
      }
      segment.end += entries.length;
      this.metrics.fetchedLeaves.inc(entries.length);
      await round.signatures.throttle();
    }
    round.signatures.send();
    segment.batches = round.signatures.sent;
    return segment;
  }

  /**
   * 5 for a segment: the local tree extended by it is the checkpoint's tree, or a tree the
   * checkpoint's tree extends (the primary's consistency proof). Either way the primary's pages
   * cannot slip in, drop or reorder a leaf, and what was verified before cannot change.
   */
  private async prove(segment: Segment, { frontier, checkpoint }: Round): Promise<void> {
    const mismatch = (why: string) => new VerificationError('inclusion', 'root-mismatch', `the primary's entries up to ${segment.end - 1} ${why}: it served other leaves than it signed`);
    if (segment.end === checkpoint.size) {
      if (!frontier.root().equals(checkpoint.rootHash)) throw mismatch("do not hash to its checkpoint's root");
      return;
    }
    const proof = await this.ledger.consistency(segment.end, checkpoint.size);
    try {
      verifyConsistency(segment.end, checkpoint.size, proof, frontier.root(), checkpoint.rootHash);
    } catch (error) {
      throw mismatch(`are not a tree its checkpoint's tree extends (${(error as Error).message})`);
    }
  }

  /**
   * The primary's page of entries from `from`, asked for one page ahead: the primary serves the
   * next page while this thread checks (or applies) the one before. A page shorter than asked
   * (pages are bounded in bytes) leaves the one asked ahead unused.
   */
  private page(round: Round, from: number): Promise<Array<{ index: number; leaf: string }>> {
    const ask = (at: number) => {
      const answer = this.ledger.entries(at, Math.min(round.checkpoint.size, at + PAGE));
      // Heard here, thrown where it is awaited: an unused page's failure is no failure.
      answer.catch(() => undefined);
      return { at, answer };
    };
    const current = round.ahead?.at === from ? round.ahead : ask(from);
    round.ahead = from + PAGE < round.checkpoint.size ? ask(from + PAGE) : undefined;
    return current.answer;
  }

  /** 3-4 for one leaf: the identity rule for registry leaves, a signature job for attestations. */
  private check({ state, unbound, signatures }: Round, index: number, bytes: Buffer, leaf: LogLeaf, segment: Segment): void {
    try {
      if (leaf.kind === 'builder') {
        state.applyRegistry(index, leaf.entry);
        // A ledger upgraded from before registry leaves logs its registry after the attestations.
        const waiting = leaf.entry.action === 'add' ? unbound.get(leaf.entry.name) : undefined;
        if (waiting) {
          unbound.delete(leaf.entry.name);
          for (const i of waiting) {
            const bytes = i >= segment.from ? segment.leaves[i - segment.from]!.bytes : this.staged.get(i, i + 1)!.leaf;
            signatures.add(this.job(state, i, bytes, (decodeLeaf(bytes) as Extract<LogLeaf, { kind: 'attestation' }>).attestation));
          }
        }
      } else if (leaf.kind === 'policy') state.applyPolicy(index, leaf.entry);
      else {
        const a = leaf.attestation;
        if (!state.byName(a.builder)) (unbound.get(a.builder) ?? unbound.set(a.builder, []).get(a.builder)!).push(index);
        else signatures.add(this.job(state, index, bytes, a));
      }
    } catch (error) {
      if (error instanceof QuorumError && error.code === 'not-derivable') throw new VerificationError('leaf', 'not-derivable', error.message);
      throw error;
    }
  }

  /** Step 4 for attestation `a` of leaf `index`: its signature under the key the log binds its name to now. */
  private job(state: LogState, index: number, bytes: Buffer, a: Attestation): Job {
    return { ...leafSignatureJob(bytes, a, this.keyOf(state, a.builder)), index, name: a.builder };
  }

  /** The key the log binds `name` to now, as a key object made once per binding. */
  private keyOf(state: LogState, name: string): PublicKey {
    const raw = state.byName(name)!.publicKey;
    const made = this.keys.get(name);
    if (made?.raw.equals(raw)) return made;
    const key = publicKeyFromRaw(name, raw);
    this.keys.set(name, key);
    return key;
  }

  /**
   * Applies the staged leaves [from, to), a chunk per transaction (the rare path: see Round.unbound).
   * Names bound only by registry leaves later in the range first get a builders row that does not
   * count (no added_leaf), as an upgraded ledger had them before its registry leaves, so the chunks
   * before those leaves can hold their attestations; the chunk holding them states the rows
   * (rebuildProjection), and its decisions are recomputed whole.
   */
  private async applyStaged(from: number, to: number, { state, bulk }: Round, catchingUp: boolean): Promise<void> {
    const { db, registry, version } = this.service;
    const unlisted = state.builders().filter((b) => !registry.get(b.name));
    commitUnsynced(db, () => {
      for (const b of unlisted) this.insertUncounted.run(b.name, b.publicKey, b.addedAt);
      version.touch();
    });
    for (let start = from; start < to; start += SEGMENT) {
      const rows = this.staged.all(start, Math.min(to, start + SEGMENT));
      this.apply(start, rows.map((r) => ({ bytes: r.leaf, leaf: decodeLeaf(r.leaf) })), undefined, catchingUp, bulk);
      await new Promise((resolve) => setImmediate(resolve));
    }
    this.clearStaging.run();
  }

  /**
   * Step 6: appends the verified leaves at `from` (with their Merkle nodes, when known) to the tables
   * the primary's code keeps, in one transaction, and re-decides their paths with the primary's code
   * (in `bulk`, finishBulk does that for the whole catch-up).
   */
  private apply(from: number, leaves: ReadonlyArray<{ bytes: Buffer; leaf: LogLeaf }>, nodes: StoredNode[] | undefined, catchingUp: boolean, bulk: boolean): void {
    const { db, log, registry, decisions, version } = this.service;
    // Not waiting for the disk: what a crash takes of the last commits is the primary's, fetched and
    // verified again (synchronous=NORMAL keeps the database consistent, and a checkpoint stored
    // after them makes them durable).
    const applied = commitUnsynced(db, () => {
      if (nodes) log.appendNodes(nodes);
      else log.append(from, leaves.map((l) => l.bytes));
      let operator = false;
      for (const [i, { bytes, leaf }] of leaves.entries()) {
        if (leaf.kind === 'attestation') continue;
        this.insertOperator.run(from + i, bytes.toString('utf8'));
        operator = true;
      }
      if (operator) {
        rebuildProjection(db, log);
        version.touch();
      }
      const now = Date.now();
      const paths = new Set<string>();
      // Each path's attestations are read once per chunk; the chunk's own join them as they are added
      // (as ingest does). In bulk none are read: finishBulk does their part for the whole catch-up.
      const votes = new Map<string, PathVote[]>();
      const votesBefore = (outPath: string) => votes.get(outPath) ?? votes.set(outPath, [...this.votesOf(outPath)]).get(outPath)!;
      for (const [i, { leaf }] of leaves.entries()) {
        if (leaf.kind !== 'attestation') continue;
        const index = from + i;
        const a = leaf.attestation;
        const builderId = registry.get(a.builder)!.id;
        const pathVotes = bulk ? undefined : votesBefore(a.outPath);
        const vote = voteOf(a, a.references.join(','), index, builderId, voterKey(registry, builderId));
        this.rows.insert(a, vote, now);
        paths.add(a.outPath);
        if (!pathVotes) continue;
        // The monitor's part: an equivocation is reported as it replicates (and kept, as the primary keeps it).
        const content = contentKey(vote);
        const differing = pathVotes.filter((earlier) => earlier.builderId === builderId && contentKey(earlier) !== content).map((earlier) => earlier.leafIndex);
        if (differing.length > 0) {
          // As ingest: a row per pair, the table keeps the first (one per equivocating leaf).
          for (const earlier of differing) this.rows.conflict(builderId, a.outPath, earlier, index, now);
          this.metrics.equivocations.inc();
          this.logger.warn('equivocation replicated: a key signed two contents for one path', { builder: a.builder, outPath: a.outPath, leaves: [...differing, index] });
        }
        pathVotes.push(vote);
      }
      if (bulk) return paths;
      // The primary's own rule over the new state: a registry or policy change can move any path.
      if (operator) decisions.recomputeAll();
      else decisions.recompute(paths, { votesOf: (outPath) => votes.get(outPath) ?? this.votesOf(outPath), appendedFrom: from });
      return paths;
    });
    this.metrics.appliedLeaves.inc(leaves.length);
    for (const l of this.appliedListeners) l(applied, catchingUp);
  }

  /** A bulk catch-up from leaf `from` begins: the indexes its rows would write at random go, until finishBulk. */
  private startBulk(from: number): void {
    const { db } = this.service;
    db.transaction(() => {
      dropIndexes(db, BULK_INDEXES);
      db.prepare('INSERT INTO meta (key, value) VALUES (?, ?)').run(BULK_FROM, String(from));
    })();
    this.logger.info('catching up in bulk: decisions follow once every leaf is applied', { from });
  }

  /**
   * The end of a bulk catch-up (if one is under way): the indexes built, the equivocations among
   * its leaves found as apply finds them (each with the first earlier leaf of the same key and path
   * that states another content, the row ingest keeps), and every decision derived from the log, a
   * chunk at a time.
   */
  private async finishBulk(): Promise<void> {
    const { db, decisions, registry } = this.service;
    const from = this.bulkFrom.get();
    if (from === undefined) return;
    const started = performance.now();
    restoreIndexes(db, ATTESTATION_INDEXES);
    const equivocations = db
      .prepare(
        `INSERT OR IGNORE INTO conflicts (builder_id, out_path, first_leaf, second_leaf, detected_at)
         SELECT b.builder_id, b.out_path, MIN(a.leaf_index), b.leaf_index, ? FROM attestations b
         JOIN attestations a ON a.out_path = b.out_path AND a.builder_id = b.builder_id AND a.leaf_index < b.leaf_index
         WHERE b.leaf_index >= ? AND (a.nar_hash, a.nar_size, a.refs) IS NOT (b.nar_hash, b.nar_size, b.refs)
         GROUP BY b.leaf_index
         RETURNING builder_id, out_path, first_leaf, second_leaf`,
      )
      .raw()
      .all(Date.now(), Number(from)) as Array<[number, string, number, number]>;
    for (const [builderId, outPath, first, second] of equivocations) {
      this.metrics.equivocations.inc();
      this.logger.warn('equivocation replicated: a key signed two contents for one path', { builder: registry.getById(builderId)?.name, outPath, leaves: [first, second] });
    }
    const paths = await decisions.decideAll();
    restoreIndexes(db);
    db.prepare('DELETE FROM meta WHERE key = ?').run(BULK_FROM);
    this.logger.info('caught up in bulk: indexes built, decisions derived', { from: Number(from), to: this.service.log.size(), paths, ms: Math.round(performance.now() - started) });
  }

  private storeCheckpoint(note: string, checkpoint: Checkpoint, cosignatures: Cosignature[]): void {
    const { db } = this.service;
    // The log's signed note without the cosignature lines, which are stored (and served) one by one.
    const { body, signatures } = openNote(note);
    const own = signatures.filter((s) => s.name === this.logKey.name && s.keyId === this.logKey.keyId);
    db.prepare('INSERT OR IGNORE INTO checkpoints (tree_size, root_hash, note, created_at) VALUES (?, ?, ?, ?)').run(checkpoint.size, checkpoint.rootHash, `${body}\n${own.map((s) => s.line).join('')}`, Date.now());
    // Only cosignatures of the pinned witnesses are kept: they are the ones verified.
    for (const c of cosignatures) this.cosignatures.add(checkpoint.size, c);
    this.status.verifiedSize = checkpoint.size;
    this.status.lastVerifiedAt = new Date().toISOString();
    this.metrics.verifiedSize.set(checkpoint.size);
  }

  private inconsistent(error: VerificationError, offered: string): void {
    const verified = this.service.checkpoints.latest()?.note ?? null;
    this.service.db
      .prepare('INSERT OR IGNORE INTO mirror_evidence (detected_at, kind, detail, verified_note, offered_note) VALUES (?, ?, ?, ?, ?)')
      .run(Date.now(), evidenceKind(error), error.message, verified, offered);
    this.clearStaging.run();
    if (this.status.degraded !== error.message) this.logger.error('the primary does not follow from what this mirror verified: stopped following, serving what was verified', { primary: this.primary, kind: evidenceKind(error), step: error.step, detail: error.message, verifiedSize: this.status.verifiedSize });
    this.status.degraded = error.message;
    this.metrics.degraded.set(1);
    this.failures++;
  }

  private unreachable(error: unknown): void {
    const message = (error as Error).message;
    if (this.status.unreachable !== message) this.logger.warn('cannot follow the primary now; retrying', { primary: this.primary, err: error });
    this.status.unreachable = message;
    this.failures++;
  }

  /** The newest `limit` inconsistencies recorded, newest first: the signed notes are the evidence. */
  evidence(limit = 10): MirrorEvidence[] {
    const rows = this.service.db.prepare('SELECT detected_at, kind, detail, verified_note, offered_note FROM mirror_evidence ORDER BY id DESC LIMIT ?').raw().all(limit) as Array<[number, EvidenceKind, string, string | null, string]>;
    return rows.map(([at, kind, detail, verifiedNote, offeredNote]) => ({ detectedAt: new Date(at).toISOString(), kind, detail, verifiedNote, offeredNote }));
  }

  private lastEvidence(): string | null {
    return (this.service.db.prepare('SELECT detail FROM mirror_evidence ORDER BY id DESC LIMIT 1').pluck().get() as string | undefined) ?? null;
  }
}
