import type { Statement } from 'better-sqlite3';
import { commitUnsynced } from '../db.js';
import { QuorumError } from '../errors.js';
import { httpJson } from '../http/client.js';
import { openNote, type Checkpoint, type NoteVerifierKey } from '../ledger/checkpoint.js';
import { TreeFrontier } from '../ledger/frontier.js';
import { decodeLeaf, type LogLeaf } from '../ledger/leaf.js';
import type { LogState } from '../ledger/logState.js';
import { leafHash } from '../ledger/merkle.js';
import { operatorState, rebuildProjection } from '../ledger/projection.js';
import { contentKey, type Attestation } from '../ledger/statement.js';
import type { Logger } from '../log.js';
import type { MirrorMetrics } from './metrics.js';
import { publicKeyFromRaw, type PublicKey } from '../nix/keys.js';
import type { Service } from '../service.js';
import { verifyCheckpoint, type LogTrust } from '../verification/checkpoint.js';
import { compareWithVerified } from '../verification/consistency.js';
import { VerificationError } from '../verification/errors.js';
import { decodeVerifiedLeaf } from '../verification/inclusion.js';
import { signatureJob, type SignatureJob } from '../verification/signature.js';
import type { Cosignature } from '../witness/cosignature.js';
import { CosignatureStore } from '../witness/cosignatures.js';
import type { WitnessPolicy } from '../witness/verifyCosigned.js';

/** Leaves asked for per request (the primary may answer fewer: its pages are bounded in bytes). */
const PAGE = 1000;
/** Leaves verified and applied per transaction. */
const APPLY_CHUNK = 5000;
const MAX_BACKOFF_MS = 30_000;
/** Signatures per verification batch sent to the signature pool, and batches in flight at most. */
const VERIFY_BATCH = 2000;
const MAX_VERIFYING = 4;
/** A round applying more leaves than this is a catch-up (see onApplied). */
const CATCH_UP = 10_000;

/** A signature check of entry `index`, by the builder `name`. */
type Job = SignatureJob & { index: number; name: string };

/** The evidence kinds of mirror_evidence: a leaf that fails any check is a bad leaf. */
type EvidenceKind = 'fork' | 'rollback' | 'root-mismatch' | 'bad-leaf';
const evidenceKind = (error: VerificationError): EvidenceKind => (error.code === 'fork' || error.code === 'rollback' || error.code === 'root-mismatch' ? error.code : 'bad-leaf');

const PARTIES = { offeredBy: 'the primary', verifier: 'this mirror' };

export interface MirrorStatus {
  primary: string;
  /** The size of the last checkpoint verified and applied: everything served is within it. */
  verifiedSize: number;
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
 * src/verification/, shared with the client; a mirror holds every leaf, so it proves inclusion and
 * consistency by replaying them rather than with proofs:
 *  1. each checkpoint verifies under the pinned log key, with the witness policy's cosignatures
 *     (verifyCheckpoint: a log showing this mirror a history the witnesses did not see is refused);
 *  2. it extends the last one verified: a smaller tree is a rollback, the same size with another
 *     root a fork (compareWithVerified);
 *  3. the new leaves, fetched in bounded pages into a staging table, decode (decodeVerifiedLeaf),
 *     and every registry and policy leaf keeps the identity rule (LogState, the primary's own replay);
 *  4. every attestation's signature verifies under the key its name is bound to in the log (signatureJob);
 *  5. the local tree extended by them hashes to the checkpoint's root: the primary's pages cannot
 *     slip in, drop or reorder a leaf, and what was verified before cannot change;
 *  6. only then are they applied, with the primary's code (projection, decisions), and served.
 * On any inconsistency it stops advancing, keeps serving what it verified, records both checkpoints
 * as evidence and reports it; it resumes once the primary offers a checkpoint that does follow.
 */
export class Follower {
  private readonly primary: string;
  private readonly cosignatures: CosignatureStore;
  private readonly trust: LogTrust;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;
  private failures = 0;
  private readonly status: MirrorStatus;
  private readonly stage: Statement<[number, Buffer]>;
  private readonly appliedListeners: Array<(outPaths: Set<string>, catchingUp: boolean) => void> = [];
  private readonly staged: Statement<[number, number], { leaf_index: number; leaf: Buffer }>;

  constructor(
    private readonly service: Service,
    primary: string,
    private readonly logKey: NoteVerifierKey,
    witnesses: WitnessPolicy | null,
    private readonly pollMs: number,
    private readonly metrics: MirrorMetrics,
    private readonly logger: Logger,
  ) {
    this.primary = primary.endsWith('/') ? primary : `${primary}/`;
    this.trust = { logKey, origin: service.origin, witnesses };
    this.cosignatures = new CosignatureStore(service.db);
    this.stage = service.db.prepare('INSERT OR REPLACE INTO mirror_staging (leaf_index, leaf) VALUES (?, ?)');
    this.staged = service.db.prepare('SELECT leaf_index, leaf FROM mirror_staging WHERE leaf_index >= ? AND leaf_index < ? ORDER BY leaf_index');
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
  }

  /**
   * Called after each applied chunk with its output paths (the mirror fetches their NARs ahead), and
   * whether it is part of a catch-up of more than CATCH_UP leaves (a mirror started on a large log).
   */
  onApplied(listener: (outPaths: Set<string>, catchingUp: boolean) => void): void {
    this.appliedListeners.push(listener);
  }

  current(): MirrorStatus {
    return { ...this.status };
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
      void this.sync().finally(() => this.schedule(this.failures === 0 ? this.pollMs : Math.min(MAX_BACKOFF_MS, this.pollMs * 2 ** this.failures)));
    }, ms);
    this.timer.unref();
  }

  private async round(): Promise<void> {
    let note: string;
    try {
      note = String(await this.get('api/v1/log/checkpoint'));
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
    // 3-5. Fetch, check and hash the new leaves into the staging table, then compare roots.
    const frontier = TreeFrontier.of(local, log);
    // The registry and policies the local log states (verified when applied): where the checks start.
    const state = operatorState(this.service.db);
    const unbound = new Map<string, number[]>();
    const jobs: Job[] = [];
    // Verification runs in the signature pool while this thread fetches, decodes and hashes the
    // next pages; a few batches at most are in flight.
    const inFlight: Array<Promise<Job | undefined>> = [];
    const keys = new Map<string, PublicKey>();
    const keyOf = (name: string) => {
      const raw = state.byName(name)!.publicKey;
      const id = `${name}:${raw.toString('base64')}`;
      return keys.get(id) ?? keys.set(id, publicKeyFromRaw(name, raw)).get(id)!;
    };
    const job = (index: number, a: Attestation): Job => ({ ...signatureJob(a, keyOf(a.builder)), index, name: a.builder });
    const verifyJobs = () => {
      const batch = jobs.splice(0);
      if (batch.length === 0) return;
      inFlight.push(this.service.signatures.verify(batch).then((valid) => batch.find((_, i) => !valid[i])));
    };
    const settle = async (keep: number) => {
      while (inFlight.length > keep) {
        const bad = await inFlight.shift()!;
        if (bad) throw new VerificationError('signature', 'bad-signature', `entry ${bad.index}: the signature by ${bad.name} does not verify under the key the log bound that name to`);
      }
    };
    try {
      for (let start = local; start < checkpoint.size; ) {
        const end = Math.min(checkpoint.size, start + PAGE);
        const { entries } = (await this.get(`api/v1/log/entries?start=${start}&end=${end}`)) as { entries: Array<{ index: number; leaf: string }> };
        if (!Array.isArray(entries) || entries.length === 0 || entries.length > end - start) throw new QuorumError('bad-response', `the primary answered ${Array.isArray(entries) ? entries.length : 'no'} entries for [${start}, ${end})`);
        const leaves = entries.map((e, i) => {
          if (e.index !== start + i || typeof e.leaf !== 'string') throw new QuorumError('bad-response', `the primary's entry ${start + i} is labelled ${e.index}`);
          return Buffer.from(e.leaf, 'base64');
        });
        commitUnsynced(this.service.db, () => leaves.forEach((leaf, i) => this.stage.run(start + i, leaf)));
        for (const [i, bytes] of leaves.entries()) {
          const index = start + i;
          const leaf = decodeVerifiedLeaf(index, bytes);
          this.check(state, index, leaf, unbound, jobs, job);
          frontier.push(leafHash(bytes));
        }
        if (jobs.length >= VERIFY_BATCH) verifyJobs();
        await settle(MAX_VERIFYING);
        start += leaves.length;
        this.metrics.fetchedLeaves.inc(leaves.length);
      }
      verifyJobs();
      await settle(0);
    } finally {
      // A batch still in flight when this round failed: its answer no longer matters.
      for (const p of inFlight) p.catch(() => undefined);
    }
    const never = [...unbound].find(([name]) => !state.byName(name));
    if (never) throw new VerificationError('signature', 'bad-leaf', `entries ${never[1].slice(0, 5).join(', ')}: signed as ${never[0]}, a name the log never registers`);
    if (!frontier.root().equals(checkpoint.rootHash)) throw new VerificationError('inclusion', 'root-mismatch', `the primary's entries ${local} to ${checkpoint.size - 1} do not hash to its checkpoint's root: it served other leaves than it signed`);
    // 6. Apply, a chunk per transaction: everything applied now is verified.
    for (let start = local; start < checkpoint.size; start += APPLY_CHUNK) {
      this.apply(start, Math.min(checkpoint.size, start + APPLY_CHUNK), checkpoint.size - local > CATCH_UP);
      await new Promise((resolve) => setImmediate(resolve));
    }
    this.service.db.prepare('DELETE FROM mirror_staging').run();
    this.storeCheckpoint(note, checkpoint, cosignatures);
    this.logger.info('mirror verified and applied', { from: local, to: checkpoint.size });
  }

  /** 3-4 for one leaf: the identity rule for registry leaves, a signature job for attestations. */
  private check(state: LogState, index: number, leaf: LogLeaf, unbound: Map<string, number[]>, jobs: Job[], job: (index: number, a: Attestation) => Job): void {
    try {
      if (leaf.kind === 'builder') {
        state.applyRegistry(index, leaf.entry);
        // A ledger upgraded from before registry leaves logs its registry after the attestations.
        const waiting = leaf.entry.action === 'add' ? unbound.get(leaf.entry.name) : undefined;
        if (waiting) {
          unbound.delete(leaf.entry.name);
          for (const i of waiting) {
            jobs.push(job(i, (decodeLeaf(this.staged.get(i, i + 1)!.leaf) as Extract<LogLeaf, { kind: 'attestation' }>).attestation));
          }
        }
      } else if (leaf.kind === 'policy') state.applyPolicy(index, leaf.entry);
      else {
        const a = leaf.attestation;
        if (!state.byName(a.builder)) (unbound.get(a.builder) ?? unbound.set(a.builder, []).get(a.builder)!).push(index);
        else jobs.push(job(index, a));
      }
    } catch (error) {
      if (error instanceof QuorumError && error.code === 'not-derivable') throw new VerificationError('leaf', 'not-derivable', error.message);
      throw error;
    }
  }

  /** Moves the verified leaves [from, to) from staging into the tables the primary's code keeps, in one transaction. */
  private apply(from: number, to: number, catchingUp: boolean): void {
    const { db, log, registry, decisions, version } = this.service;
    const rows = this.staged.all(from, to);
    const applied = db.transaction(() => {
      log.append(from, rows.map((r) => r.leaf));
      const decoded = rows.map((r) => ({ index: r.leaf_index, leaf: decodeLeaf(r.leaf) }));
      const operator = decoded.filter((d) => d.leaf.kind !== 'attestation');
      const insertOperator = db.prepare('INSERT INTO operator_leaves (leaf_index, leaf) VALUES (?, ?)');
      for (const d of operator) insertOperator.run(d.index, rows[d.index - from]!.leaf.toString('utf8'));
      if (operator.length > 0) {
        rebuildProjection(db, log);
        version.touch();
      }
      const insert = db.prepare(
        `INSERT INTO attestations (leaf_index, builder_id, drv_path, output_name, out_path, nar_hash, nar_size, refs, signature, narinfo_signature, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      );
      const insertConflict = db.prepare('INSERT OR IGNORE INTO conflicts (builder_id, out_path, first_leaf, second_leaf, detected_at) VALUES (?, ?, ?, ?, ?)');
      const votesBy = db.prepare<[string, number], [number, string, number, string]>(
        'SELECT leaf_index, nar_hash, nar_size, refs FROM attestations WHERE out_path = ? AND builder_id = ?',
      ).raw();
      const now = Date.now();
      const paths = new Set<string>();
      for (const { index, leaf } of decoded) {
        if (leaf.kind !== 'attestation') continue;
        const a = leaf.attestation;
        const builder = registry.get(a.builder)!;
        const refs = a.references.join(',');
        // The monitor's part: an equivocation is reported as it replicates (and kept, as the primary keeps it).
        const content = contentKey({ narHash: a.narHash, narSize: a.narSize, refs });
        const earlier = votesBy.all(a.outPath, builder.id);
        insert.run(index, builder.id, a.drvPath, a.outputName, a.outPath, a.narHash, a.narSize, refs, a.signature, a.narinfoSignature, now);
        for (const [first, narHash, narSize, otherRefs] of earlier) {
          if (contentKey({ narHash, narSize, refs: otherRefs }) === content) continue;
          insertConflict.run(builder.id, a.outPath, first, index, now);
          this.metrics.equivocations.inc();
          this.logger.warn('equivocation replicated: a key signed two contents for one path', { builder: a.builder, outPath: a.outPath, leaves: [first, index] });
        }
        paths.add(a.outPath);
      }
      // The primary's own rule over the new state: a registry or policy change can move any path.
      if (operator.length > 0) decisions.recomputeAll();
      else decisions.recompute(paths);
      return paths;
    })();
    this.metrics.appliedLeaves.inc(rows.length);
    for (const l of this.appliedListeners) l(applied, catchingUp);
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
    this.service.db.prepare('DELETE FROM mirror_staging').run();
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

  private get(path: string): Promise<unknown> {
    return httpJson(new URL(path, this.primary).href, { timeoutMs: 30_000 });
  }
}
