import type { Statement } from 'better-sqlite3';
import type { Db } from '../db.js';
import { verifyRaw } from '../nix/keys.js';
import { contentKey, statementText, type Attestation } from './attestation.js';
import { encodeLeaf } from './leaf.js';
import type { MerkleLog } from './log.js';
import type { BuilderRegistry } from './registry.js';

export type IngestResult =
  | { status: 'accepted'; leafIndex: number }
  | { status: 'duplicate'; leafIndex: number }
  | { status: 'conflict'; leafIndex: number; conflictsWith: number[] }
  | { status: 'rejected'; code: 'unknown-builder' | 'revoked-builder' | 'bad-signature'; reason: string };

/** Called inside the commit transaction with the output paths whose attestations changed. */
export type CommitHook = (outPaths: Set<string>) => void;

interface Pending {
  items: Array<{ attestation: Attestation; builderId: number }>;
  resolve: (results: IngestResult[]) => void;
  reject: (error: unknown) => void;
}

interface ExistingRow {
  leaf_index: number;
  nar_hash: string;
  nar_size: number;
  refs: string;
  drv_path: string;
  output_name: string;
}

/** Upper bound of attestations in one transaction, so one commit never stalls the loop for long. */
const MAX_BATCH = 2000;

/**
 * Verifies attestations and appends them to the log with group commit: everything submitted while a
 * commit runs joins the next one, so a burst of N concurrent requests costs one fsync, not N.
 * A returned promise resolves only after COMMIT, i.e. after SQLite fsync'd the WAL (synchronous=FULL).
 */
export class Ingestor {
  private queue: Pending[] = [];
  private scheduled = false;
  private readonly byOutputAndBuilder: Statement<[string, number], ExistingRow>;
  private readonly insert: Statement<unknown[]>;
  private readonly insertConflict: Statement<unknown[]>;
  private readonly hooks: CommitHook[] = [];
  private readonly committedListeners: Array<() => void> = [];
  /** Counters for metrics and benchmarks. */
  readonly stats = { commits: 0, attestations: 0 };

  constructor(
    private readonly db: Db,
    private readonly registry: BuilderRegistry,
    private readonly log: MerkleLog,
  ) {
    this.byOutputAndBuilder = db.prepare(
      'SELECT leaf_index, nar_hash, nar_size, refs, drv_path, output_name FROM attestations WHERE out_path = ? AND builder_id = ? ORDER BY leaf_index',
    );
    this.insert = db.prepare(
      `INSERT INTO attestations (leaf_index, builder_id, drv_path, output_name, out_path, nar_hash, nar_size, refs, signature, narinfo_signature, created_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    this.insertConflict = db.prepare('INSERT OR IGNORE INTO conflicts (builder_id, out_path, first_leaf, second_leaf, detected_at) VALUES (?, ?, ?, ?, ?)');
  }

  /** Runs inside each commit transaction (e.g. to update quorum decisions atomically with the leaves). */
  onCommit(hook: CommitHook): void {
    this.hooks.push(hook);
  }

  /** Runs after each durable commit (e.g. to schedule a checkpoint). */
  onCommitted(listener: () => void): void {
    this.committedListeners.push(listener);
  }

  /**
   * Checks each attestation's key and signature (CPU only, no I/O), then queues the valid ones for the
   * next group commit. Results are in input order.
   */
  async submit(attestations: Attestation[]): Promise<IngestResult[]> {
    const results: Array<IngestResult | undefined> = [];
    const valid: Pending['items'] = [];
    const slots: number[] = [];
    attestations.forEach((a, i) => {
      const rejection = this.check(a);
      if (rejection) results[i] = rejection;
      else {
        valid.push({ attestation: a, builderId: this.registry.get(a.builder)!.id });
        slots.push(i);
      }
    });
    if (valid.length > 0) {
      const committed = await new Promise<IngestResult[]>((resolve, reject) => {
        this.queue.push({ items: valid, resolve, reject });
        this.schedule();
      });
      committed.forEach((r, j) => (results[slots[j]!] = r));
    }
    return results as IngestResult[];
  }

  private check(a: Attestation): Extract<IngestResult, { status: 'rejected' }> | null {
    const builder = this.registry.get(a.builder);
    if (!builder) return { status: 'rejected', code: 'unknown-builder', reason: `builder: no registered builder key named ${a.builder}` };
    if (builder.revokedAt !== null) return { status: 'rejected', code: 'revoked-builder', reason: `builder: the key ${a.builder} was revoked` };
    if (!verifyRaw(builder.publicKey, statementText(a), a.signature)) {
      return { status: 'rejected', code: 'bad-signature', reason: `signature: not a valid signature by ${a.builder} over the attestation statement` };
    }
    return null;
  }

  private schedule(): void {
    if (this.scheduled) return;
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
    if (this.queue.length > 0) this.schedule();
    if (batch.length === 0) return;
    try {
      const results = this.db.transaction(() => this.commit(batch))();
      this.stats.commits++;
      batch.forEach((p, i) => p.resolve(results[i]!));
      for (const listener of this.committedListeners) listener();
    } catch (error) {
      for (const p of batch) p.reject(error);
    }
  }

  private commit(batch: Pending[]): IngestResult[][] {
    const now = Date.now();
    const start = this.log.size();
    const leaves: Buffer[] = [];
    const touched = new Set<string>();
    // Rows added earlier in this same batch are visible to later items through the open transaction.
    const results = batch.map((p) =>
      p.items.map(({ attestation: a, builderId }): IngestResult => {
        const existing = this.byOutputAndBuilder.all(a.outPath, builderId);
        const refs = a.references.join(',');
        const same = existing.find(
          (e) => e.nar_hash === a.narHash && e.nar_size === a.narSize && e.refs === refs && e.drv_path === a.drvPath && e.output_name === a.outputName,
        );
        if (same) return { status: 'duplicate', leafIndex: same.leaf_index };
        const leafIndex = start + leaves.length;
        this.insert.run(leafIndex, builderId, a.drvPath, a.outputName, a.outPath, a.narHash, a.narSize, refs, a.signature, a.narinfoSignature, now);
        leaves.push(encodeLeaf(a));
        touched.add(a.outPath);
        const key = contentKey(a);
        const differing = existing.filter((e) => `${e.nar_hash};${e.nar_size};${e.refs}` !== key);
        for (const e of differing) this.insertConflict.run(builderId, a.outPath, e.leaf_index, leafIndex, now);
        if (differing.length > 0) return { status: 'conflict', leafIndex, conflictsWith: differing.map((e) => e.leaf_index) };
        return { status: 'accepted', leafIndex };
      }),
    );
    this.log.append(start, leaves);
    this.stats.attestations += leaves.length;
    for (const hook of this.hooks) hook(touched);
    return results;
  }
}
