import type { IncomingMessage, ServerResponse } from 'node:http';
import { COMPRESSION_LEVELS, compressStream, decompressStream, isCompressionMethod, type CompressionMethod } from '../blobstore/compression.js';
import { HashCheck, sendChecked } from '../blobstore/hashCheck.js';
import type { Logger } from '../log.js';
import type { NarHash } from '../nix/hash.js';
import type { Ledger } from './ledger.js';
import type { ClientMetrics } from './metrics.js';

interface Source {
  ledger: Ledger;
  url: string;
  compression: string;
}

/** Paths whose NAR locations are remembered (one verified answer each); past it, the oldest half goes. */
const MAX_KNOWN = 100_000;
/** A second request for a NAR this soon after sending Nix elsewhere for it is Nix retrying a failed download. */
const RETRY_WINDOW_MS = 60_000;

/**
 * The client's NAR route: Nix asks the client for `nar/<narHash>.nar[.br|.gz]` (the compression the
 * client's narinfo announced), and the client sends it on:
 * - by redirect (302) to the file a verified answer named with that compression, on a ledger not
 *   known to be down, so the bytes go from the ledger to Nix without a second hop through this
 *   machine. Nix checks them against the narHash the builders signed, so a ledger or blob store
 *   with bad bytes gets nothing installed; what it can still do is make Nix download until that
 *   check fails (its size is bounded only by Nix), a denial of service, never a substitution.
 * - else, and when Nix asks again soon after a redirect (its download failed: the ledger went down
 *   or served bad bytes), by streaming it from the first ledger that has it, the file a verified
 *   answer named or the ledger's GET /api/v1/nars/<narHash>. Nothing is trusted: the bytes pass
 *   only while they hash to the narHash asked for and stay within its narSize, checked while
 *   streaming (never buffered), then are compressed as announced.
 */
export class NarSources {
  private readonly known = new Map<NarHash, { narSize: number; sources: Source[] }>();
  /** When Nix was last sent to a ledger for each NAR. */
  private readonly redirected = new Map<NarHash, number>();

  constructor(
    private readonly ledgers: readonly Ledger[],
    private readonly metrics: ClientMetrics,
    private readonly logger: Logger,
  ) {}

  add(narHash: NarHash, narSize: number, ledger: Ledger, url: string, compression: string): void {
    const entry = this.known.get(narHash) ?? { narSize, sources: [] };
    if (entry.sources.some((s) => s.url === url)) return;
    entry.sources.push({ ledger, url, compression });
    entry.sources.sort((a, b) => this.ledgers.indexOf(a.ledger) - this.ledgers.indexOf(b.ledger));
    if (this.known.size >= MAX_KNOWN) for (const key of [...this.known.keys()].slice(0, MAX_KNOWN / 2)) this.known.delete(key);
    this.known.set(narHash, entry);
  }

  /** The compression the narinfo announces for a NAR: that of the first file a verified answer named, if this build reads it. */
  compressionOf(narHash: NarHash): CompressionMethod {
    const first = this.known.get(narHash)?.sources.find((s) => isCompressionMethod(s.compression));
    return (first?.compression as CompressionMethod | undefined) ?? 'none';
  }

  async serve(res: ServerResponse, narHash: NarHash, method: CompressionMethod, head: boolean): Promise<void> {
    const entry = this.known.get(narHash);
    const sentAt = this.redirected.get(narHash);
    const retried = sentAt !== undefined && Date.now() - sentAt < RETRY_WINDOW_MS;
    const target = retried ? undefined : entry?.sources.find((s) => s.compression === method && !s.ledger.failing);
    if (target) {
      if (!head) {
        if (this.redirected.size >= MAX_KNOWN) this.redirected.clear();
        this.redirected.set(narHash, Date.now());
      }
      this.metrics.narRequests.inc({ result: 'redirected' });
      res.writeHead(302, { location: target.url, 'content-length': 0 });
      res.end();
      return;
    }
    if (retried) this.redirected.delete(narHash);
    const candidates: Source[] = [...(entry?.sources ?? []), ...this.ledgers.map((ledger) => ({ ledger, url: new URL(`api/v1/nars/${narHash}`, ledger.url).href, compression: 'none' }))];
    for (const source of candidates) {
      // A file only this build cannot decompress (a hostile ledger's made-up method) is no source.
      if (!isCompressionMethod(source.compression)) continue;
      let answer: IncomingMessage;
      try {
        answer = await source.ledger.fetch(source.url, head && source.compression === 'none');
      } catch (error) {
        this.logger.warn('NAR source unreachable, trying the next', { url: source.url, err: error });
        continue;
      }
      const size = entry?.narSize ?? (source.compression === 'none' ? Number(answer.headers['content-length']) : Number.NaN);
      if (answer.statusCode !== 200 || !Number.isSafeInteger(size) || size <= 0) {
        answer.destroy();
        continue;
      }
      res.writeHead(200, { 'content-type': 'application/x-nix-nar', ...(method === 'none' ? { 'content-length': size } : {}) });
      if (head) {
        answer.resume();
        res.end();
        return;
      }
      let corrupt = false;
      // Compressed again at the fastest level: these bytes only cross this machine.
      const recompress = compressStream(method, method === 'none' ? undefined : COMPRESSION_LEVELS[method].min);
      await sendChecked(res, [answer, decompressStream(source.compression as CompressionMethod), new HashCheck(narHash, size), recompress], (problem) => {
        corrupt = true;
        this.logger.error('a ledger served NAR bytes that do not hash to the narHash the builders attested: download broken off', { url: source.url, problem });
      });
      this.metrics.narRequests.inc({ result: corrupt ? 'corrupt' : 'served' });
      if (!corrupt) this.metrics.narBytes.inc(size);
      return;
    }
    this.metrics.narRequests.inc({ result: 'missing' });
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('no ledger has this NAR\n');
  }
}
