import http, { type IncomingMessage } from 'node:http';
import https from 'node:https';
import { Transform, type Readable } from 'node:stream';
import { QuorumError } from '../errors.js';
import { httpJson } from '../http/client.js';
import type { Attestation } from '../ledger/statement.js';
import { LOG_ENCODING } from '../logs/buildLogs.js';
import { attestAuthHeader, logAuthHeader, uploadAuthHeader } from '../http/builderAuth.js';
import { narHashFromDigest, sha256, type NarHash } from '../nix/hash.js';
import type { SecretKey } from '../nix/keys.js';
import { parseNarInfo } from '../nix/narinfo.js';
import { baseNameOf, type HashPart, type StorePath } from '../nix/storePath.js';
import { attestationJson } from './attest.js';

/** Per-item answer of POST /api/v1/attestations (design.md). */
export type SubmitResult =
  | { status: 'accepted' | 'duplicate'; leafIndex: number }
  | { status: 'conflict'; leafIndex: number; conflictsWith: number[] }
  | { status: 'rejected'; code: string; reason: string };

/** An upload that makes no progress for this long is dead (a stalled server, a cut network). */
const IDLE_TIMEOUT_MS = 60_000;
const JSON_TIMEOUT_MS = 60_000;
const UPSTREAM_TIMEOUT_MS = 15_000;

/** Turns a non-2xx answer into a QuorumError: 5xx is 'unavailable' (retry), 4xx is 'refused' carrying the server's code. */
function answerError(what: string, status: number, text: string): QuorumError {
  let body: { error?: unknown; code?: unknown } = {};
  try {
    body = JSON.parse(text) as typeof body;
  } catch {
    // Not JSON (a proxy's page, a route that does not exist yet): the text is the message.
  }
  const remoteCode = typeof body.code === 'string' ? body.code.slice(0, 64) : `http-${status}`;
  const code = status >= 500 ? 'unavailable' : 'refused';
  if (typeof body.error === 'string') return new QuorumError(code, `${what}: ${status} ${body.error}`, { remoteCode });
  // An HTML page is a reverse proxy's, not ours: its title says what it refused.
  const title = /<title>([^<]*)<\/title>/i.exec(text)?.[1]?.trim();
  const message = title?.startsWith(`${status} `) ? title : `${status} ${title ?? text.trim().slice(0, 300)}`;
  const hint = status === 413 && title ? ': a reverse proxy in front of the server limits request bodies (nginx: client_max_body_size 0; see the README\'s proxy example)' : '';
  return new QuorumError(code, `${what}: ${message}${hint}`, { remoteCode });
}

/**
 * Passes on exactly `size` bytes and fails the stream otherwise, so a producer that disagrees with
 * the announced Content-Length cuts the request instead of leaving the server waiting.
 */
function exactly(size: number, narHash: NarHash): Transform {
  let seen = 0;
  const mismatch = () => new QuorumError('nix-failed', `the NAR dumped for ${narHash} has ${seen > size ? 'more' : 'fewer'} bytes than the ${size} Nix's database records`);
  return new Transform({
    transform(chunk: Buffer, _encoding, done) {
      seen += chunk.length;
      done(seen > size ? mismatch() : null, chunk);
    },
    flush(done) {
      done(seen === size ? null : mismatch());
    },
  });
}

/** fetch(), with a network failure reported as 'unavailable' (retry later) naming the server. */
async function request(url: URL, init: RequestInit): Promise<Response> {
  try {
    return await fetch(url, { ...init, signal: AbortSignal.timeout(JSON_TIMEOUT_MS) });
  } catch (e) {
    throw new QuorumError('unavailable', `cannot reach ${url.origin}: ${(e as Error).message}`, { cause: e });
  }
}

/** The server a builder reports to. */
export class QuorumClient {
  private readonly base: string;

  constructor(server: string) {
    this.base = server.endsWith('/') ? server : `${server}/`;
  }

  url(path: string): URL {
    return new URL(path, this.base);
  }

  /** HEAD /api/v1/nars/<narHash>: does the server already hold this NAR? */
  async hasNar(narHash: NarHash): Promise<boolean> {
    const url = this.url(`api/v1/nars/${narHash}`);
    const res = await request(url, { method: 'HEAD' });
    if (res.status === 200) return true;
    if (res.status === 404) return false;
    throw answerError(`HEAD ${url.pathname}`, res.status, '');
  }

  /**
   * PUT /api/v1/nars/<narHash>: streams `body` (an uncompressed NAR of exactly narSize bytes) with
   * Content-Length and the builder's upload signature. Aborting `signal` (e.g. the NAR producer
   * failed) cuts the request, so the server never keeps a partial NAR.
   */
  async putNar(narHash: NarHash, narSize: number, key: SecretKey, body: Readable, signal?: AbortSignal): Promise<void> {
    const url = this.url(`api/v1/nars/${narHash}`);
    const what = `PUT ${url.pathname}`;
    const req = (url.protocol === 'https:' ? https : http).request(url, {
      method: 'PUT',
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(narSize), authorization: uploadAuthHeader(key, narHash, narSize) },
      signal,
    });
    req.setTimeout(IDLE_TIMEOUT_MS, () => req.destroy(new Error(`no progress for ${IDLE_TIMEOUT_MS / 1000} s`)));
    const answered = new Promise<{ status: number; text: string }>((resolve, reject) => {
      // `on`, not `once`: writes racing a destroy emit more errors, and an unheard one would crash.
      req.on('error', reject);
      req.once('response', (res: IncomingMessage) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (text = (text + chunk).slice(0, 4096)));
        res.on('error', reject);
        res.once('end', () => resolve({ status: res.statusCode ?? 0, text }));
      });
    });
    // Plain pipes, not stream.pipeline: pipeline aborts a ClientRequest once the body is written,
    // before the answer arrives. A failing body cuts the request, whose error then settles `answered`.
    const counted = exactly(narSize, narHash);
    body.on('error', (e) => counted.destroy(e));
    counted.on('error', (e) => req.destroy(e));
    body.pipe(counted).pipe(req);
    let answer: { status: number; text: string };
    try {
      answer = await answered;
    } catch (error) {
      const reason = signal?.aborted ? signal.reason : error;
      if (reason instanceof QuorumError) throw reason;
      throw new QuorumError('unavailable', `${what}: upload failed: ${(reason as Error).message}`, { cause: reason });
    } finally {
      // The server may answer before reading everything (a refusal): stop sending either way.
      counted.destroy();
      req.destroy();
    }
    if (answer.status < 200 || answer.status >= 300) throw answerError(what, answer.status, answer.text);
  }

  /**
   * POST /api/v1/attestations with an array, the request signed by this builder's `key`; results in
   * input order. The server answers 4xx when every item was rejected, still with one result per
   * item: those are results, not a failure.
   */
  async submit(attestations: Attestation[], key: SecretKey): Promise<SubmitResult[]> {
    const url = this.url('api/v1/attestations');
    const what = `POST ${url.pathname}`;
    const body = Buffer.from(JSON.stringify(attestations.map(attestationJson)));
    const res = await request(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json', authorization: attestAuthHeader(key, body) },
      body,
    });
    const text = await res.text();
    let results: unknown;
    try {
      results = (JSON.parse(text) as { results?: unknown }).results;
    } catch {
      // Not JSON: answerError below reports the text.
    }
    if (res.status < 500 && Array.isArray(results) && results.length === attestations.length) return results as SubmitResult[];
    if (res.ok) throw new QuorumError('unavailable', `${what}: the server answered ${attestations.length} attestations without one result each`);
    throw answerError(what, res.status, text);
  }

  /** HEAD /api/v1/logs/<drv>/<builder>: has the server this builder's log of the derivation? */
  async hasLog(drvPath: StorePath, builder: string): Promise<boolean> {
    const url = this.url(`api/v1/logs/${encodeURIComponent(baseNameOf(drvPath))}/${encodeURIComponent(builder)}`);
    const res = await request(url, { method: 'HEAD' });
    if (res.status === 200) return true;
    if (res.status === 404) return false;
    throw answerError(`HEAD ${url.pathname}`, res.status, '');
  }

  /** PUT /api/v1/logs/<drv>/<builder>: a brotli-compressed build log, signed like a NAR upload. */
  async putLog(drvPath: StorePath, key: SecretKey, compressed: Buffer): Promise<void> {
    const url = this.url(`api/v1/logs/${encodeURIComponent(baseNameOf(drvPath))}/${encodeURIComponent(key.name)}`);
    const digest = sha256(compressed);
    const res = await request(url, {
      method: 'PUT',
      headers: {
        'content-type': 'text/plain; charset=utf-8',
        'content-encoding': LOG_ENCODING,
        'content-digest': `sha-256=:${digest.toString('base64')}:`,
        authorization: logAuthHeader(key, drvPath, narHashFromDigest(digest), compressed.length),
      },
      body: new Uint8Array(compressed),
    });
    const text = await res.text();
    if (!res.ok) throw answerError(`PUT ${url.pathname}`, res.status, text);
  }

  /** GET <policy>/<hashPart>.narinfo as Nix asks for it: its text, or null when the substituter does not advertise the path. */
  async narinfo(policy: string, hashPart: HashPart): Promise<string | null> {
    const url = this.url(`${policy === 'default' ? '' : `policy/${encodeURIComponent(policy)}/`}${hashPart}.narinfo`);
    const res = await request(url, {});
    const text = await res.text();
    if (res.status === 200) return text;
    if (res.status === 404) return null;
    throw answerError(`GET ${url.pathname}`, res.status, text);
  }

  /** GET /api/v1/paths/<hashPart>: attestations and decisions per policy. */
  async path(hashPart: HashPart): Promise<unknown> {
    return httpJson(this.url(`api/v1/paths/${hashPart}`).href, { timeoutMs: JSON_TIMEOUT_MS });
  }
}

/**
 * Whether an upstream cache (e.g. cache.nixos.org) already serves this exact NAR, so uploading it
 * again would only duplicate bytes. Any failure means "not known to be there": we then upload.
 */
export async function upstreamHasNar(upstream: string, hashPart: HashPart, narHash: NarHash, narSize: number): Promise<boolean> {
  try {
    const res = await fetch(new URL(`${hashPart}.narinfo`, upstream.endsWith('/') ? upstream : `${upstream}/`), { signal: AbortSignal.timeout(UPSTREAM_TIMEOUT_MS) });
    if (res.status !== 200) return false;
    const info = parseNarInfo(await res.text());
    return info.narHash === narHash && info.narSize === narSize;
  } catch {
    return false;
  }
}
