import { fileExtension } from '../blobstore/compression.js';
import { QuorumError } from '../errors.js';
import type { Logger } from '../log.js';
import { signNarInfo } from '../nix/fingerprint.js';
import type { NarHash } from '../nix/hash.js';
import type { SecretKey } from '../nix/keys.js';
import { serializeNarInfo, type NarInfo } from '../nix/narinfo.js';
import { baseNameOf, hashPartOf, type HashPart } from '../nix/storePath.js';
import { VerificationError, type Step } from '../verification/errors.js';
import type { AcceptedCheckpoint, HeadTracker } from './heads.js';
import type { Ledger, ProofsResponse } from './ledger.js';
import type { ClientMetrics } from './metrics.js';
import type { NarSources } from './nars.js';
import { proofsOf, verifyPath, type ClientPolicy, type PathVerdict } from './verifyPath.js';

/** A ledger whose answer did not count, and why. */
export interface Skipped {
  ledger: string;
  code: string;
  /** The verification step that failed, if one did (else it was down or malformed). */
  step: Step | null;
  message: string;
}

/** Everything the client found out about one hash part: what `--check` prints, what the narinfo route answers. */
export interface Resolution {
  hashPart: HashPart;
  /** The ledger whose answer was verified, or null if none could be. */
  ledger: string | null;
  checkpoint: AcceptedCheckpoint | null;
  verdict: PathVerdict | null;
  /** The narinfo for Nix, signed by the client's key: only for a verified quorum. */
  narinfo: string | null;
  skipped: Skipped[];
}

const NAR_ROUTE = 'nar/';
/** Verifications in flight below which references are verified ahead (the ledger takes 8 requests at once, ledger.ts). */
const PREFETCH_IN_FLIGHT = 8;

/**
 * The client's application layer: for a hash part, the ledgers in order, each answer through the
 * verification steps, the user's policy, and a narinfo signed by the client's own key. A ledger that
 * is down or fails a step is skipped, logged and counted; the next one is asked. Verified answers are
 * cached until a newer checkpoint is verified (it may hold a revocation or a dissenting attestation);
 * refusals are not cached at all, so a path shows as soon as it reaches quorum.
 */
export class PathResolver {
  private readonly cache = new Map<HashPart, Resolution>();
  private readonly inFlight = new Map<HashPart, Promise<Resolution>>();

  constructor(
    private readonly ledgers: readonly Ledger[],
    private readonly heads: HeadTracker,
    private readonly policy: ClientPolicy,
    /** Cosignatures the ledger's checkpoint must carry: ask for the newest with that many. */
    private readonly cosigned: number,
    private readonly key: SecretKey,
    private readonly nars: NarSources,
    private readonly metrics: ClientMetrics,
    private readonly logger: Logger,
    private readonly cacheEntries = 100_000,
  ) {
    heads.onAdvance(() => this.cache.clear());
  }

  /** A cached verified narinfo, if there is one (the hot path: no promise, no ledger). */
  cached(hashPart: HashPart): string | undefined {
    return this.cache.get(hashPart)?.narinfo ?? undefined;
  }

  resolve(hashPart: HashPart): Promise<Resolution> {
    const running = this.inFlight.get(hashPart);
    if (running) return running;
    const started = performance.now();
    const run = this.fromLedgers(hashPart).finally(() => {
      this.inFlight.delete(hashPart);
      this.metrics.verifySeconds.observe((performance.now() - started) / 1000);
    });
    this.inFlight.set(hashPart, run);
    return run;
  }

  /**
   * Nix asks next for the references of a path it substitutes (it walks the closure): verifying them
   * ahead, a few at a time, fills the time this client would wait on the ledgers between Nix's asks.
   */
  prefetchReferences(resolution: Resolution): void {
    for (const reference of resolution.verdict?.content?.references ?? []) {
      if (this.inFlight.size >= PREFETCH_IN_FLIGHT) return;
      const hashPart = hashPartOf(reference);
      if (this.cache.has(hashPart) || this.inFlight.has(hashPart)) continue;
      this.resolve(hashPart).catch((error: unknown) => this.logger.error('prefetching a reference failed', { hashPart, err: error }));
    }
  }

  /** Asks the ledgers for their newest checkpoint (steps 1 and 2 only): how cached answers learn of a newer one. */
  async refreshHead(): Promise<void> {
    for (const ledger of this.ledgers) {
      try {
        await this.heads.accept(await ledger.checkpoint(this.cosigned), ledger);
        return;
      } catch (error) {
        this.skip(ledger, error, []);
      }
    }
  }

  private async fromLedgers(hashPart: HashPart): Promise<Resolution> {
    const skipped: Skipped[] = [];
    for (const ledger of this.ledgers) {
      try {
        const resolution = await this.fromLedger(ledger, hashPart, skipped);
        if (resolution.narinfo !== null) {
          if (this.cache.size >= this.cacheEntries) this.cache.clear();
          this.cache.set(hashPart, resolution);
        }
        return resolution;
      } catch (error) {
        this.skip(ledger, error, skipped);
      }
    }
    return { hashPart, ledger: null, checkpoint: null, verdict: null, narinfo: null, skipped };
  }

  private skip(ledger: Ledger, error: unknown, skipped: Skipped[]): void {
    if (!(error instanceof QuorumError)) throw error;
    const step = error instanceof VerificationError ? error.step : null;
    skipped.push({ ledger: ledger.url, code: error.code, step, message: error.message });
    this.metrics.ledgerFailures.inc({ ledger: ledger.url, code: error.code });
    this.logger.warn('ledger skipped', { ledger: ledger.url, code: error.code, step, detail: error.message });
  }

  private async fromLedger(ledger: Ledger, hashPart: HashPart, skipped: Skipped[]): Promise<Resolution> {
    for (let attempt = 0; ; attempt++) {
      const response = await ledger.proofs(hashPart, this.cosigned);
      const proofs = proofsOf(response);
      let checkpoint: AcceptedCheckpoint;
      try {
        // Nothing attested: the ledger's checkpoint all the same, so a rolled-back or forked ledger is
        // caught on a miss too (a ledger hiding one path's attestations is caught by monitors, not here).
        // The first time, a smaller checkpoint may be an answer that raced a newer one this client
        // just stored: asked again, an honest ledger answers with the newer one.
        checkpoint = await this.heads.accept(proofs.note ?? (await ledger.checkpoint(this.cosigned)), ledger, attempt > 0);
      } catch (error) {
        if (error instanceof VerificationError && error.code === 'rollback' && attempt === 0) continue;
        throw error;
      }
      if (proofs.note === null) return { hashPart, ledger: ledger.url, checkpoint, verdict: null, narinfo: null, skipped };
      const verdict = verifyPath(hashPart, proofs, checkpoint.checkpoint, this.policy);
      return { hashPart, ledger: ledger.url, checkpoint, verdict, narinfo: this.narinfo(verdict, response, ledger), skipped };
    }
  }

  /**
   * Step 5: NarHash, NarSize and References from the verified attestations, signed by the client's key.
   * A NAR held by an upstream cache (an absolute URL) is fetched by Nix from there; any other through
   * this client's NAR route (nars.ts), which sends Nix to whichever ledger has it, so a ledger going
   * down between the narinfo and the NAR, or for narinfos Nix cached, goes unnoticed. The route
   * carries the compression of the ledger's file, so Nix can be sent to it unchanged; FileHash and
   * FileSize are left out, since another ledger's file may be the one served. Nix checks the NAR hash.
   */
  private narinfo(verdict: PathVerdict, response: ProofsResponse, ledger: Ledger): string | null {
    if (!verdict.content || !verdict.outPath) return null;
    const { narHash, narSize, references, deriver } = verdict.content;
    const nar = response.nar?.narHash === narHash ? response.nar : null;
    const upstream = nar && /^https?:\/\//.test(nar.url) ? nar : null;
    const file = nar && !upstream ? new URL(nar.url, ledger.url) : null;
    // Nix is sent to this URL: a ledger's answer naming file: or another scheme names no file.
    if (nar && file && (file.protocol === 'http:' || file.protocol === 'https:')) this.nars.add(narHash as NarHash, narSize, ledger, file.href, nar.compression);
    const method = this.nars.compressionOf(narHash as NarHash);
    const where = upstream
      ? { url: upstream.url, compression: upstream.compression, fileHash: upstream.fileHash, fileSize: upstream.fileSize }
      : { url: `${NAR_ROUTE}${narHash.slice('sha256:'.length)}.nar${fileExtension(method)}`, compression: method, ...(method === 'none' ? { fileHash: narHash, fileSize: narSize } : {}) };
    const info: NarInfo = {
      storePath: verdict.outPath,
      ...where,
      narHash: narHash as NarHash,
      narSize,
      references: references.map(baseNameOf),
      ...(deriver ? { deriver: baseNameOf(deriver) } : {}),
      sigs: [],
    };
    info.sigs.push(signNarInfo(info, this.key));
    return serializeNarInfo(info);
  }
}
