import type { Checkpoint } from '../ledger/checkpoint.js';
import type { Logger } from '../log.js';
import { verifyCheckpoint, type LogTrust } from '../verification/checkpoint.js';
import { compareWithVerified, verifyExtension } from '../verification/consistency.js';
import { VerificationError } from '../verification/errors.js';
import type { Cosignature } from '../witness/cosignature.js';
import type { Ledger } from './ledger.js';
import type { ClientMetrics } from './metrics.js';
import type { ClientState, StoredHead } from './state.js';

export interface AcceptedCheckpoint {
  checkpoint: Checkpoint;
  cosignatures: Cosignature[];
  /** How it relates to the head stored before: the first one, the same tree, or a larger tree proved to extend it. */
  relation: 'first' | 'same' | 'extends';
  previousSize: number | null;
}

/** Notes verified recently: many narinfo answers carry the same checkpoint, verified once. */
const REMEMBERED = 16;

/**
 * Steps 1 and 2 of the client: the newest checkpoint it verified (stored durably in STATE), and
 * every checkpoint a ledger answers with checked against it. Checkpoints are accepted one at a
 * time, so two answers racing cannot both advance from the same head.
 */
export class HeadTracker {
  private queue: Promise<unknown> = Promise.resolve();
  private readonly verified = new Map<string, { checkpoint: Checkpoint; cosignatures: Cosignature[] }>();
  private readonly advanced: Array<(head: StoredHead) => void> = [];

  constructor(
    private readonly state: ClientState,
    private readonly trust: LogTrust,
    private readonly metrics: ClientMetrics,
    private readonly logger: Logger,
  ) {
    const head = state.head(trust.origin);
    if (head) metrics.verifiedSize.set(head.size);
  }

  current(): StoredHead | null {
    return this.state.head(this.trust.origin);
  }

  /** Called with each newer head once it is stored (cached answers verified against an older one are dropped). */
  onAdvance(listener: (head: StoredHead) => void): void {
    this.advanced.push(listener);
  }

  /** `keepEvidence` false: a rollback is refused but not kept (an answer that may have raced a newer one). */
  accept(note: string, ledger: Ledger, keepEvidence = true): Promise<AcceptedCheckpoint> {
    const run = this.queue.then(() => this.acceptNow(note, ledger, keepEvidence));
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async acceptNow(note: string, ledger: Ledger, keepEvidence: boolean): Promise<AcceptedCheckpoint> {
    // Step 1: the log's signature and M of N pinned witnesses.
    let checked = this.verified.get(note);
    if (!checked) {
      checked = verifyCheckpoint(note, this.trust);
      if (this.verified.size >= REMEMBERED) this.verified.delete(this.verified.keys().next().value!);
      this.verified.set(note, checked);
    }
    const { checkpoint, cosignatures } = checked;
    const head = this.current();
    const parties = { offeredBy: ledger.url, verifier: 'this client' };
    try {
      // Step 2: never a smaller tree, never another root at the same size, and a larger tree only with a proof.
      const relation = compareWithVerified(head, checkpoint, parties);
      if (relation === 'same') return { checkpoint, cosignatures, relation, previousSize: head!.size };
      if (head) verifyExtension(head, checkpoint, await ledger.consistency(head.size, checkpoint.size), parties);
    } catch (error) {
      if (error instanceof VerificationError && error.evidence && (keepEvidence || error.code !== 'rollback')) this.keep(error, ledger, head, note);
      throw error;
    }
    const stored: StoredHead = { size: checkpoint.size, rootHash: checkpoint.rootHash, note, verifiedAt: Date.now() };
    this.state.storeHead(this.trust.origin, stored);
    this.metrics.verifiedSize.set(checkpoint.size);
    this.logger.info('newer checkpoint verified and stored', { ledger: ledger.url, size: checkpoint.size, previousSize: head?.size ?? null, cosignedBy: cosignatures.map((c) => c.witness.name) });
    for (const listener of this.advanced) listener(stored);
    return { checkpoint, cosignatures, relation: head ? 'extends' : 'first', previousSize: head?.size ?? null };
  }

  /** A rollback or fork under the log's key: both signed checkpoints are kept, and it is said loudly once. */
  private keep(error: VerificationError, ledger: Ledger, head: StoredHead | null, offered: string): void {
    const fresh = this.state.keepEvidence({ detectedAt: Date.now(), ledger: ledger.url, code: error.code, detail: error.message, verifiedNote: head?.note ?? null, offeredNote: offered });
    if (!fresh) return;
    this.metrics.evidence.inc({ code: error.code });
    this.logger.error('a ledger offered a checkpoint that does not follow from the one this client verified: refused, evidence kept', { ledger: ledger.url, code: error.code, detail: error.message, verifiedSize: head?.size ?? null });
  }
}
