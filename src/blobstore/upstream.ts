import { Readable } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { QuorumError } from '../errors.js';
import { parseNarHash } from '../nix/hash.js';
import { NARINFO_CONTENT_TYPE, parseNarInfo, type NarInfo } from '../nix/narinfo.js';
import { hashPartOf, parseHashPart } from '../nix/storePath.js';
import { checkRange, unsatisfiable, type BlobRange, type BlobRead } from './blobStore.js';

/** A NAR an upstream cache holds, with the content we expected. */
export type UpstreamNar = Pick<NarInfo, 'storePath' | 'compression' | 'fileHash' | 'fileSize' | 'narHash' | 'narSize'> & {
  /** The cache it came from (base URL, no trailing slash). */
  cache: string;
  /** Absolute http(s) URL of the (compressed) NAR file. */
  url: string;
};

export interface UpstreamCachesOptions {
  /** Per narinfo request, and until response headers arrive for a NAR. */
  timeoutMs?: number;
}

/** What Nix treats as "this cache does not have it" (S3 answers 403 for a missing key in an unlistable bucket). */
const ABSENT = new Set([403, 404, 410]);
const DEFAULT_TIMEOUT_MS = 10_000;
/** Narinfos are a few hundred bytes; a cache sending more is broken or hostile. */
const MAX_NARINFO_BYTES = 64 * 1024;

/**
 * Read-only access to Nix binary caches (cache.nixos.org and the like) by base URL, tried in the
 * order given.
 *
 * Serving an upstream-held path: the substituter should put the absolute `url` of the lookup into
 * its own narinfo rather than proxy the bytes. Nix 2.8 follows absolute narinfo URLs, the client
 * then downloads from the upstream's CDN (no bandwidth or latency through us), and nothing is
 * trusted that was not already: the narinfo we sign carries the quorum-agreed NarHash, which Nix
 * checks after download whatever server sent the bytes. `open` is there for proxying anyway (clients
 * that cannot reach the upstream) and for copying a NAR into our own store.
 */
export class UpstreamCaches {
  readonly describe: string;
  private readonly caches: string[];
  private readonly timeoutMs: number;

  constructor(urls: string[], options: UpstreamCachesOptions = {}) {
    this.caches = urls.map((url, index) => parseCacheUrl(url, `upstreams[${index}]`));
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.describe = `upstream:[${this.caches.join(', ')}]`;
  }

  /**
   * The first upstream whose narinfo for `hashPart` has NarHash `expectedNarHash`. An upstream
   * that has the path with another NarHash (a non-reproducible build) is no match and the next is
   * tried. Returns null when every upstream answered "absent" or "different"; throws
   * 'upstream-unavailable' when none matched and at least one failed (5xx, timeout, garbage), as
   * absence is then unknown.
   */
  async lookup(hashPart: string, expectedNarHash: string): Promise<UpstreamNar | null> {
    const part = parseHashPart(hashPart);
    const expected = parseNarHash(expectedNarHash, 'expectedNarHash');
    const errors: string[] = [];
    for (const cache of this.caches) {
      try {
        const text = await this.fetchNarInfo(`${cache}/${part}.narinfo`);
        if (text === null) continue;
        const info = parseNarInfo(text);
        if (hashPartOf(info.storePath) !== part) throw new Error(`its narinfo for ${part} describes ${info.storePath}`);
        if (info.narHash !== expected) continue;
        const url = new URL(info.url, `${cache}/`);
        if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error(`its NAR URL ${JSON.stringify(info.url)} is not http(s)`);
        return {
          cache,
          storePath: info.storePath,
          url: url.href,
          compression: info.compression,
          ...(info.fileHash === undefined ? {} : { fileHash: info.fileHash }),
          ...(info.fileSize === undefined ? {} : { fileSize: info.fileSize }),
          narHash: info.narHash,
          narSize: info.narSize,
        };
      } catch (err) {
        errors.push(`${cache}: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    if (errors.length) throw new QuorumError('upstream-unavailable', `no upstream cache answered for ${part} with NarHash ${expected}, and ${errors.length} failed: ${errors.join('; ')}`);
    return null;
  }

  private async fetchNarInfo(url: string): Promise<string | null> {
    const response = await fetch(url, { headers: { accept: NARINFO_CONTENT_TYPE }, signal: AbortSignal.timeout(this.timeoutMs) });
    if (ABSENT.has(response.status)) {
      await response.body?.cancel();
      return null;
    }
    if (response.status !== 200) {
      await response.body?.cancel();
      throw new Error(`GET ${url} answered HTTP ${response.status}`);
    }
    return readLimited(response, MAX_NARINFO_BYTES, url);
  }

  /**
   * Streams the NAR file at `url`, or the inclusive byte range of it. `url` must be the `url` of a
   * lookup result (or a catalogue entry made from one): it is fetched as it is, so never pass a
   * URL a client chose. Null when the upstream no longer has it; 'upstream-unavailable' on any
   * other failure.
   */
  async open(url: string, range?: BlobRange): Promise<BlobRead | null> {
    checkRange(range);
    const controller = new AbortController();
    // Only the wait for headers is bounded: the body of a large NAR may take long to arrive.
    const timer = setTimeout(() => controller.abort(new Error(`no response within ${this.timeoutMs} ms`)), this.timeoutMs);
    let response: Response;
    try {
      response = await fetch(url, { signal: controller.signal, headers: range ? { range: `bytes=${range.start}-${range.end ?? ''}` } : {} });
    } catch (err) {
      throw new QuorumError('upstream-unavailable', `GET ${url} failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    } finally {
      clearTimeout(timer);
    }
    const fail = async (reason: string): Promise<never> => {
      await response.body?.cancel();
      throw new QuorumError('upstream-unavailable', `GET ${url}: ${reason}`);
    };
    if (ABSENT.has(response.status)) {
      await response.body?.cancel();
      return null;
    }
    if (response.status === 416 && range) {
      await response.body?.cancel();
      throw unsatisfiable(range, undefined);
    }
    const expected = range ? 206 : 200;
    if (response.status !== expected || !response.body) {
      return fail(`HTTP ${response.status}${range && response.status === 200 ? ' to a Range request (the server must honour Range)' : ''}`);
    }
    if (range) {
      const span = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(response.headers.get('content-range') ?? '');
      if (!span) return fail(`Content-Range ${JSON.stringify(response.headers.get('content-range'))} is not "bytes start-end/size"`);
      return { body: fromWeb(response.body), size: Number(span[3]), start: Number(span[1]), end: Number(span[2]) };
    }
    const length = Number(response.headers.get('content-length') ?? NaN);
    if (!Number.isSafeInteger(length)) return fail('no Content-Length');
    return { body: fromWeb(response.body), size: length, start: 0, end: length - 1 };
  }
}

function parseCacheUrl(text: string, field: string): string {
  let url: URL | undefined;
  try {
    url = new URL(text);
  } catch {
    url = undefined;
  }
  if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:') || url.search || url.hash) {
    throw new QuorumError('bad-config', `${field} must be the http(s) base URL of a Nix binary cache, e.g. https://cache.nixos.org, got ${JSON.stringify(text)}`, { field });
  }
  return url.href.replace(/\/+$/, '');
}

async function readLimited(response: Response, limit: number, url: string): Promise<string> {
  if (!response.body) return '';
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of fromWeb(response.body)) {
    total += (chunk as Buffer).length;
    if (total > limit) throw new Error(`GET ${url} sent more than ${limit} bytes, too many for a narinfo`);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function fromWeb(body: ReadableStream<Uint8Array>): Readable {
  return Readable.fromWeb(body as WebReadableStream<Uint8Array>);
}
