import type { Db } from '../db.js';
import { QuorumError } from '../errors.js';
import { hex8, type NoteVerifierKey } from '../ledger/checkpoint.js';
import type { SignaturePool } from '../ledger/signaturePool.js';
import type { Logger } from '../log.js';
import type { WalSync } from '../wal/sync.js';
import { cosign, cosignatureLine, cosignedMessage, type CosignerSigner } from './cosignature.js';
import { judge } from './judge.js';
import type { WitnessMetrics } from './metrics.js';
import { parseAddCheckpoint, type AddCheckpointRequest } from './request.js';
import { WitnessState, type WitnessedHead } from './state.js';

/** What add-checkpoint answers: cosignature lines, our latest size (409), or a refusal. */
export type WitnessAnswer = { status: 200; cosignature: string } | { status: 409; size: number } | { status: 'error'; error: QuorumError };

interface Signed {
  request: AddCheckpointRequest;
  /** The log signature lines that verified, with their newlines. */
  logLines: string;
  answer: (a: WitnessAnswer) => void;
}

/**
 * A c2sp.org/tlog-witness add-checkpoint service over one database.
 *
 * Each request goes: parse (400), origin (404), log signatures verified off the main thread (403),
 * then one transaction that checks the request against the stored head and moves the head forward
 * (400, 409, 422 or the update), then the WAL fsync, then the cosignature, then the answer. The check
 * and the update are one synchronous transaction, so no two requests interleave between them: the
 * spec's race (a smaller checkpoint checked before, stored after, a larger one) cannot roll a log
 * back. Requests that arrive together share a transaction and an fsync; nothing is answered before
 * the state it depends on is on disk, so a crash between check and answer loses only the answer
 * (the log retries, learns our size from a 409, and gets a cosignature for the same tree).
 */
export class Witness {
  readonly state: WitnessState;
  private incoming: Array<Signed & { checks: Array<{ key: NoteVerifierKey; signature: Buffer; line: string }> }> = [];
  private scheduled = false;

  constructor(
    private readonly db: Db,
    private readonly walSync: WalSync,
    private readonly signer: CosignerSigner,
    /** Trusted log keys per origin; several keys allow a key rotation. */
    private readonly logs: ReadonlyMap<string, readonly NoteVerifierKey[]>,
    private readonly pool: SignaturePool,
    private readonly metrics: WitnessMetrics,
    private readonly logger: Logger,
  ) {
    this.state = new WitnessState(db);
    for (const { origin, size } of this.state.heads()) metrics.treeSize.set({ origin }, size);
  }

  get vkey(): string {
    return this.signer.verifier.text;
  }

  addCheckpoint(text: string): Promise<WitnessAnswer> {
    return new Promise((answer) => {
      let request: AddCheckpointRequest;
      try {
        request = parseAddCheckpoint(text);
      } catch (error) {
        return answer({ status: 'error', error: error as QuorumError });
      }
      const { origin } = request.checkpoint;
      const keys = this.logs.get(origin);
      if (!keys) return answer({ status: 'error', error: new QuorumError('unknown-origin', `this witness is not configured for the log ${JSON.stringify(origin)}`) });
      // Signature lines of other keys (unknown, other witnesses) are ignored; each of a trusted key must verify.
      const checks = request.signatures.flatMap((s) => keys.filter((k) => k.name === s.name && k.keyId === s.keyId).map((key) => ({ key, signature: s.signature, line: s.line })));
      if (checks.length === 0) {
        return answer({ status: 'error', error: new QuorumError('unsigned-checkpoint', `the checkpoint carries no signature by a key this witness trusts for ${origin} (${keys.map((k) => `${k.name}+${hex8(k.keyId)}`).join(', ')})`) });
      }
      this.incoming.push({ request, logLines: '', answer, checks });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => void this.verifyBatch());
      }
    });
  }

  /** The latest cosigned checkpoint of a log, with our cosignature (c2sp.org/tlog-witness monitoring). */
  cosignedHead(origin: string): string | undefined {
    const head = this.state.head(origin);
    // Ed25519 is deterministic: the same timestamp gives the very line add-checkpoint answered.
    return head && `${head.note}${cosign(head.note.slice(0, head.note.lastIndexOf('\n\n') + 1), this.signer, head.cosignedAt)}`;
  }

  private async verifyBatch(): Promise<void> {
    this.scheduled = false;
    const batch = this.incoming;
    this.incoming = [];
    const flat = batch.flatMap((b) => b.checks.map((c) => ({ key: c.key.publicKey, message: Buffer.from(b.request.body, 'utf8'), signature: c.signature })));
    let ok: boolean[];
    try {
      ok = await this.pool.verify(flat);
    } catch (error) {
      this.logger.error('witness signature verification failed', { err: error });
      for (const b of batch) b.answer({ status: 'error', error: new QuorumError('unavailable', 'the witness could not verify signatures; try again') });
      return;
    }
    const signed: Signed[] = [];
    let at = 0;
    for (const b of batch) {
      const results = ok.slice(at, at + b.checks.length);
      at += b.checks.length;
      const bad = b.checks.find((_, i) => !results[i]);
      if (bad) b.answer({ status: 'error', error: new QuorumError('unsigned-checkpoint', `the signature by ${bad.key.name}+${hex8(bad.key.keyId)} does not verify: the checkpoint was altered or signed by another key`) });
      else signed.push({ request: b.request, logLines: b.checks.map((c) => c.line).join(''), answer: b.answer });
    }
    if (signed.length > 0) await this.commit(signed);
  }

  private async commit(batch: Signed[]): Promise<void> {
    const now = Math.floor(Date.now() / 1000);
    let verdicts: Array<{ signed: Signed; answer?: WitnessAnswer; timestamp?: number }>;
    try {
      verdicts = this.db.transaction(() => batch.map((signed) => this.check(signed, now))).immediate();
      this.metrics.commits.inc();
      await this.walSync.sync();
    } catch (error) {
      this.logger.error('witness state update failed', { err: error });
      for (const b of batch) b.answer({ status: 'error', error: new QuorumError('unavailable', 'the witness could not store its state; try again') });
      return;
    }
    const toSign = verdicts.filter((v) => v.answer === undefined);
    let signatures: Buffer[];
    try {
      signatures = await this.pool.sign(this.signer.secretKey, toSign.map((v) => cosignedMessage(v.signed.request.body, v.timestamp!)));
    } catch (error) {
      // The head moved and is durable; the log's retry gets a 409, then a cosignature for the same tree.
      this.logger.error('witness cosigning failed', { err: error });
      signatures = [];
    }
    toSign.forEach((v, i) => {
      const signature = signatures[i];
      v.answer = signature ? { status: 200, cosignature: cosignatureLine(this.signer.verifier, v.timestamp!, signature) } : { status: 'error', error: new QuorumError('unavailable', 'the witness could not sign; try again') };
    });
    for (const v of verdicts) v.signed.answer(v.answer!);
  }

  /** Inside the transaction: one request against the head, which moves only on success. */
  private check(signed: Signed, now: number): { signed: Signed; answer?: WitnessAnswer; timestamp?: number } {
    const { request } = signed;
    const { origin, size, rootHash } = request.checkpoint;
    const head = this.state.head(origin);
    const verdict = judge(request.oldSize, request.proof, size, rootHash, head);
    if (verdict.status !== 200) {
      if (verdict.evidence) this.keepEvidence(request, verdict.status, verdict.reason, head);
      const error = verdict.status === 400 ? new QuorumError('bad-add-checkpoint', verdict.reason) : new QuorumError('inconsistent-checkpoint', verdict.reason);
      return { signed, answer: verdict.status === 409 ? { status: 409, size: verdict.size } : { status: 'error', error } };
    }
    // Never earlier than the cosignature before it, even if the clock stepped back.
    const timestamp = Math.max(now, head?.cosignedAt ?? 0);
    const next: WitnessedHead = { size, rootHash, note: `${request.body}\n${signed.logLines}`, cosignedAt: timestamp };
    this.state.setHead(origin, next);
    this.metrics.treeSize.set({ origin }, size);
    return { signed, timestamp };
  }

  private keepEvidence(request: AddCheckpointRequest, status: number, reason: string, held: WitnessedHead | undefined): void {
    const { origin } = request.checkpoint;
    if (this.state.keepEvidence({ origin, status, reason, oldSize: request.oldSize, proof: request.proof, note: request.note, held })) {
      this.metrics.evidence.inc({ origin });
      this.logger.warn('kept a refused checkpoint as evidence', { origin, status, reason, size: request.checkpoint.size, heldSize: held?.size ?? null });
    }
  }
}
