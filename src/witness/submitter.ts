import type { StoredCheckpoint } from '../ledger/checkpoints.js';
import type { Logger } from '../log.js';
import { verifyCosignatures, type CosignerVerifier } from './cosignature.js';
import type { CosignatureStore } from './cosignatures.js';
import { formatAddCheckpoint, MAX_PROOF_LINES } from './request.js';

/** What the submitter needs of the ledger: its newest checkpoint and consistency proofs of its tree. */
export interface WitnessedLog {
  latest(): StoredCheckpoint | undefined;
  consistencyProof(first: number, second: number): Buffer[];
}

export interface WitnessEndpoint {
  url: string;
  verifier: CosignerVerifier;
}

export type SubmissionResult = 'cosigned' | 'refused' | 'failed';

/** One witness as this ledger last saw it (GET /api/v1/log/witnesses). */
export interface WitnessStatus {
  name: string;
  vkey: string;
  url: string;
  /** The largest of our tree sizes it cosigned (stored). */
  cosignedSize: number | null;
  /** The size the witness last said it holds for us (from a 200 or a 409). */
  witnessSize: number | null;
  lastSuccessAt: string | null;
  /** The last failure or refusal, until the next cosignature. */
  lastError: { at: string; status: number | null; message: string } | null;
}

/** Resending on 409 more often than this in a row means the witness's state moves under us. */
const MAX_CONFLICTS_IN_A_ROW = 3;
const FIRST_RETRY_MS = 250;

/**
 * Submits each new checkpoint to every witness (c2sp.org/tlog-witness add-checkpoint), concurrently,
 * one request in flight per witness, always for our newest checkpoint; stores the cosignatures. A
 * 409 tells the size the witness holds: we resend from there with a consistency proof of our tree.
 * A witness that is down, slow or refusing is retried with exponential backoff and never delays
 * ingest or checkpoints: nothing waits on this but the served cosignatures.
 */
export class WitnessSubmitter {
  private readonly loops: WitnessLoop[];
  private stopped = false;
  private readonly running: Promise<void>[];
  /** Cuts requests in flight short on stop. */
  private readonly aborter = new AbortController();

  constructor(
    private readonly log: WitnessedLog,
    private readonly store: CosignatureStore,
    witnesses: readonly WitnessEndpoint[],
    private readonly options: { timeoutMs: number; retryMaxMs: number; logger: Logger; onResult?: (witness: CosignerVerifier, result: SubmissionResult, size: number) => void },
  ) {
    this.loops = witnesses.map((endpoint) => new WitnessLoop(endpoint, store.latestSize(endpoint.verifier.text)));
    this.running = this.loops.map((loop) => this.run(loop));
  }

  /** A new checkpoint was signed: every idle witness loop submits it. */
  wake(): void {
    for (const loop of this.loops) loop.wake();
  }

  status(): WitnessStatus[] {
    return this.loops.map((l) => ({
      name: l.endpoint.verifier.name,
      vkey: l.endpoint.verifier.text,
      url: l.endpoint.url,
      cosignedSize: this.store.latestSize(l.endpoint.verifier.text) ?? null,
      witnessSize: l.witnessSize ?? null,
      lastSuccessAt: l.lastSuccessAt,
      lastError: l.lastError,
    }));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.aborter.abort();
    for (const loop of this.loops) loop.interrupt();
    await Promise.all(this.running);
  }

  private async run(loop: WitnessLoop): Promise<void> {
    let backoff = 0;
    while (!this.stopped) {
      const target = this.log.latest();
      if (!target || this.store.of(target.size).some((c) => c.witness === loop.endpoint.verifier.text)) {
        await loop.idle();
        continue;
      }
      const result = await this.submit(loop, target);
      this.options.onResult?.(loop.endpoint.verifier, result, target.size);
      if (result === 'cosigned') {
        backoff = 0;
        continue;
      }
      // Jittered, so witnesses that went down together are not hit together when they come back.
      backoff = Math.min(this.options.retryMaxMs, backoff === 0 ? FIRST_RETRY_MS : backoff * 2);
      await loop.sleep(backoff * (0.8 + Math.random() * 0.4));
    }
  }

  private async submit(loop: WitnessLoop, target: StoredCheckpoint): Promise<SubmissionResult> {
    const { endpoint } = loop;
    for (let conflicts = 0; conflicts < MAX_CONFLICTS_IN_A_ROW; conflicts++) {
      const old = loop.witnessSize ?? 0;
      if (old > target.size) {
        // Our tree never shrinks: a witness ahead of us saw a checkpoint of this log key we did not sign
        // from this database. Someone runs a copy of this log (a fork), or this ledger lost entries.
        return loop.failed(this.options.logger, null, `the witness has cosigned a tree of ${old} entries of this log, larger than our newest checkpoint (${target.size}): another copy of this log key is signing checkpoints, or this ledger lost entries`, 'refused');
      }
      const proof = this.log.consistencyProof(old, target.size);
      if (proof.length > MAX_PROOF_LINES) return loop.failed(this.options.logger, null, `the consistency proof from ${old} to ${target.size} has ${proof.length} hashes, more than the protocol's ${MAX_PROOF_LINES}`, 'failed');
      let res: Response;
      let text: string;
      try {
        res = await fetch(new URL('add-checkpoint', endpoint.url.endsWith('/') ? endpoint.url : `${endpoint.url}/`), {
          method: 'POST',
          body: formatAddCheckpoint(old, proof, target.note),
          signal: AbortSignal.any([this.aborter.signal, AbortSignal.timeout(this.options.timeoutMs)]),
        });
        text = await res.text();
      } catch (error) {
        return loop.failed(this.options.logger, null, `cannot reach the witness: ${(error as Error).message}`, 'failed');
      }
      if (res.status === 409) {
        const size = /^(0|[1-9][0-9]{0,15})\n$/.exec(text);
        if (res.headers.get('content-type')?.split(';')[0]?.trim() !== 'text/x.tlog.size' || !size) return loop.failed(this.options.logger, 409, `409 without a text/x.tlog.size body: ${text.slice(0, 200)}`, 'failed');
        loop.witnessSize = Number(size[1]);
        continue;
      }
      if (res.status !== 200) return loop.failed(this.options.logger, res.status, errorText(text), res.status >= 500 ? 'failed' : 'refused');
      let cosignature;
      try {
        // The answer is signature lines: appended to our note they must hold a valid cosignature by this witness's key.
        [cosignature] = verifyCosignatures(`${target.note}${text}`, [endpoint.verifier]);
      } catch (error) {
        return loop.failed(this.options.logger, 200, `the answer is not a valid cosignature: ${(error as Error).message}`, 'failed');
      }
      if (!cosignature) return loop.failed(this.options.logger, 200, `the answer holds no cosignature by ${endpoint.verifier.text}`, 'failed');
      this.store.add(target.size, cosignature);
      loop.cosigned(target.size);
      return 'cosigned';
    }
    return loop.failed(this.options.logger, 409, `the witness answered 409 ${MAX_CONFLICTS_IN_A_ROW} times in a row (its state keeps changing)`, 'failed');
  }
}

/** One witness's submission state and the timers its loop waits on. */
class WitnessLoop {
  witnessSize: number | undefined;
  lastSuccessAt: string | null = null;
  lastError: WitnessStatus['lastError'] = null;
  private wakeUp: (() => void) | undefined;
  private pendingWake = false;
  private timer: NodeJS.Timeout | undefined;
  private endSleep: (() => void) | undefined;

  constructor(
    readonly endpoint: WitnessEndpoint,
    cosignedSize: number | undefined,
  ) {
    // Our best guess of its state; a 409 corrects it.
    this.witnessSize = cosignedSize;
  }

  wake(): void {
    if (this.wakeUp) this.wakeUp();
    else this.pendingWake = true;
  }

  /** Waits for the next checkpoint (or stop). */
  idle(): Promise<void> {
    if (this.pendingWake) {
      this.pendingWake = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => (this.wakeUp = () => {
      this.wakeUp = undefined;
      resolve();
    }));
  }

  /** Waits out a backoff; only stop cuts it short (a new checkpoint does not: the witness is failing). */
  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        resolve();
      }, ms);
      this.endSleep = resolve;
    });
  }

  interrupt(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.endSleep?.();
    this.wakeUp?.();
  }

  cosigned(size: number): void {
    this.witnessSize = size;
    this.lastSuccessAt = new Date().toISOString();
    this.lastError = null;
  }

  failed(logger: Logger, status: number | null, message: string, result: Exclude<SubmissionResult, 'cosigned'>): Exclude<SubmissionResult, 'cosigned'> {
    const first = this.lastError === null || this.lastError.message !== message;
    this.lastError = { at: new Date().toISOString(), status, message };
    // Once per distinct failure, not once per retry.
    if (first) logger.warn('witness did not cosign', { witness: this.endpoint.verifier.name, url: this.endpoint.url, status, reason: message });
    return result;
  }
}

/** A witness's error body: our witnesses answer JSON {error}, others plain text. */
function errorText(text: string): string {
  try {
    const body = JSON.parse(text) as { error?: unknown };
    if (typeof body.error === 'string') return body.error;
  } catch {
    // plain text
  }
  return text.trim().slice(0, 500);
}
