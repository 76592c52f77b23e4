import { QuorumError } from '../errors.js';
import type { Db } from '../db.js';
import type { Logger } from '../log.js';
import { formatCheckpoint, signNote, type NoteSignerKey } from './checkpoint.js';
import type { MerkleLog } from './log.js';

export interface StoredCheckpoint {
  size: number;
  rootHash: Buffer;
  note: string;
  createdAt: number;
}

/**
 * Signs a checkpoint for the current tree after committed batches, at most once per `intervalMs`
 * (a burst of commits costs one signature), and on demand from the cron re-publish.
 */
export class CheckpointPublisher {
  private timer: NodeJS.Timeout | undefined;
  private lastSignedAt = 0;
  private readonly published: Array<(checkpoint: StoredCheckpoint) => void> = [];

  constructor(
    private readonly db: Db,
    private readonly log: MerkleLog,
    /** null for a mirror, which signs nothing and serves the checkpoints of the log it follows. */
    private readonly signer: NoteSignerKey | null,
    private readonly origin: string,
    private readonly intervalMs: number,
    private readonly logger: Logger,
  ) {}

  /** Called after each commit: sign now if the interval passed, else once when it does. */
  committed(): void {
    if (this.timer) return;
    const wait = Math.max(0, this.lastSignedAt + this.intervalMs - Date.now());
    if (wait === 0) this.tryPublish();
    else this.timer = setTimeout(() => {
      this.timer = undefined;
      this.tryPublish();
    }, wait);
  }

  /**
   * publish() where nobody waits for it (after a commit, on the re-publish schedule): a failure, such
   * as a full disk refusing the row, is logged rather than thrown into the event loop, where it would
   * end the process; the next commit or the scheduled re-publish signs again.
   */
  tryPublish(): void {
    try {
      this.publish();
    } catch (error) {
      this.logger.error('signing a checkpoint failed: the next commit or the scheduled re-publish tries again', { err: error });
    }
  }

  /** Signs the current tree head unless it is already the latest checkpoint. */
  publish(): StoredCheckpoint {
    this.lastSignedAt = Date.now();
    const size = this.log.size();
    const latest = this.latest();
    if (latest && latest.size === size) return latest;
    if (!this.signer) {
      if (latest) return latest;
      throw new QuorumError('unavailable', 'this mirror has verified no checkpoint of the log it follows yet', { field: 'checkpoint' });
    }
    const rootHash = this.log.root(size);
    const note = signNote(formatCheckpoint({ origin: this.origin, size, rootHash }), this.signer);
    const createdAt = Date.now();
    this.db.prepare('INSERT OR IGNORE INTO checkpoints (tree_size, root_hash, note, created_at) VALUES (?, ?, ?, ?)').run(size, rootHash, note, createdAt);
    this.logger.debug('checkpoint signed', { size });
    const checkpoint = { size, rootHash, note, createdAt };
    for (const listener of this.published) listener(checkpoint);
    return checkpoint;
  }

  /** Called with each newly signed checkpoint (e.g. to have witnesses cosign it). */
  onPublished(listener: (checkpoint: StoredCheckpoint) => void): void {
    this.published.push(listener);
  }

  latest(): StoredCheckpoint | undefined {
    const row = this.db.prepare('SELECT tree_size, root_hash, note, created_at FROM checkpoints ORDER BY tree_size DESC LIMIT 1').get() as
      | { tree_size: number; root_hash: Buffer; note: string; created_at: number }
      | undefined;
    return row && { size: row.tree_size, rootHash: row.root_hash, note: row.note, createdAt: row.created_at };
  }

  recent(limit: number): StoredCheckpoint[] {
    return (this.db.prepare('SELECT tree_size, root_hash, note, created_at FROM checkpoints ORDER BY tree_size DESC LIMIT ?').all(limit) as Array<{ tree_size: number; root_hash: Buffer; note: string; created_at: number }>).map(
      (row) => ({ size: row.tree_size, rootHash: row.root_hash, note: row.note, createdAt: row.created_at }),
    );
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }
}
