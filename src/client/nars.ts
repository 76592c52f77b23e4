import type { IncomingMessage, ServerResponse } from 'node:http';
import { COMPRESSION_METHODS, decompressStream, type CompressionMethod } from '../blobstore/compression.js';
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

/**
 * The client's NAR route: Nix asks the client for `nar/<narHash>.nar` (uncompressed, whatever the
 * ledgers store), and the client fetches it from the first ledger that has it: the file a verified
 * answer named (decompressed here), else the ledger's GET /api/v1/nars/<narHash>. Nothing is
 * trusted: the bytes pass only while they hash to the narHash asked for, checked while streaming
 * (never buffered), so a ledger or blob store with bad bytes breaks the download off and Nix, which
 * checks the hash too, never gets them whole.
 */
export class NarSources {
  private readonly known = new Map<NarHash, { narSize: number; sources: Source[] }>();

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

  async serve(res: ServerResponse, narHash: NarHash, head: boolean): Promise<void> {
    const entry = this.known.get(narHash);
    const candidates: Source[] = [...(entry?.sources ?? []), ...this.ledgers.map((ledger) => ({ ledger, url: new URL(`api/v1/nars/${narHash}`, ledger.url).href, compression: 'none' }))];
    for (const source of candidates) {
      // A file only this build cannot decompress (a hostile ledger's made-up method) is no source.
      if (!(COMPRESSION_METHODS as readonly string[]).includes(source.compression)) continue;
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
      res.writeHead(200, { 'content-type': 'application/x-nix-nar', 'content-length': size });
      if (head) {
        answer.resume();
        res.end();
        return;
      }
      let corrupt = false;
      await sendChecked(res, [answer, decompressStream(source.compression as CompressionMethod), new HashCheck(narHash, size)], (problem) => {
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
