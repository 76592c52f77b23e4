import { createHash, type Hash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { crc32 } from 'node:zlib';
import type { BlobRange, BlobStore } from '../blobstore/blobStore.js';
import { openReader, type Db } from '../db.js';
import type { DatabaseHealth } from '../db/health.js';
import { QuorumError, type ErrorCode } from '../errors.js';
import { sendError } from '../http/errors.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { NarCatalog, NarRecord } from '../nars/catalog.js';
import type { MissingNars } from '../nars/missing.js';
import { narHashFromDigest, type NarHash } from '../nix/hash.js';
import type { SecretKey } from '../nix/keys.js';
import { NARINFO_CONTENT_TYPE } from '../nix/narinfo.js';
import { hashPartOf, type HashPart, type StorePath } from '../nix/storePath.js';
import type { Policy } from '../quorum/evaluate.js';
import type { DecisionMaterializer } from '../quorum/decisions.js';
import { QuorumLookup, renderNarInfo, type QuorumPath } from './narinfo.js';

/** What the substituter needs; an upstream lookup is optional (only with configured upstream caches). */
export interface SubstituterDeps {
  db: Db;
  decisions: DecisionMaterializer;
  catalog: NarCatalog;
  blobs: BlobStore;
  cacheKey: SecretKey;
  priority: number;
  cacheEntries: number;
  metrics: Metrics;
  logger: Logger;
  /** Where a catalogued NAR that a read found gone is reported (it then stops being advertised). */
  missing: MissingNars;
  /** Told of every failed lookup: a damaged database shows on /healthz. */
  health: DatabaseHealth;
  /** Finds a quorum path's NAR in an upstream cache and catalogues it (see upstream.ts). */
  upstream?: (hashPart: HashPart, path: QuorumPath) => Promise<boolean>;
}

const NARINFO = /^([0123456789abcdfghijklmnpqrsvwxyz]{32})\.narinfo$/;
const NAR_FILE = /^([0123456789abcdfghijklmnpqrsvwxyz]{52})\.nar(\.[a-z0-9]+)?$/;
const POLICY_PREFIX = /^\/policy\/([A-Za-z0-9._\-]{1,64})\/(.*)$/;

/**
 * The Nix substituter routes on bare node:http: nix-cache-info, narinfo and NAR files, for the
 * default policy at the root and every policy under /policy/<name>/. Returns false for other URLs.
 */
export function substituterHandler(deps: SubstituterDeps): { handle: (req: IncomingMessage, res: ServerResponse) => boolean; stop: () => void } {
  const reader = openReader(deps.db.name);
  const lookup = new QuorumLookup(reader, { perTurn: true });
  // Rendered, signed narinfos per policy and hash part. Misses are not cached: one indexed read
  // answers them, and a flood of unknown paths must not push the advertised ones out.
  const cache = new Map<string, string>();
  const invalidate = (outPaths: Set<string> | 'all') => {
    lookup.refresh();
    if (outPaths === 'all') return cache.clear();
    for (const p of outPaths) for (const policy of deps.decisions.getPolicies()) cache.delete(`${policy.name}\0${hashPartOf(p as StorePath)}`);
  };
  deps.decisions.onChange(invalidate);
  // Rare (a lost blob): every cached narinfo goes rather than finding the paths of that NAR.
  deps.missing.onMissing(() => invalidate('all'));
  // Other processes (admin CLI, a separate ingest node) commit to the same database: drop the cache
  // when SQLite says the file changed under us.
  let dataVersion = deps.db.pragma('data_version', { simple: true });
  const poll = setInterval(() => {
    const now = deps.db.pragma('data_version', { simple: true });
    if (now !== dataVersion) {
      dataVersion = now;
      lookup.refresh();
      cache.clear();
    }
  }, 250);
  poll.unref();

  const remember = (key: string, value: string) => {
    if (deps.cacheEntries === 0) return;
    // Dropping everything when full is O(1); evicting one by one from a Map's front is not in V8.
    if (cache.size >= deps.cacheEntries) cache.clear();
    cache.set(key, value);
  };

  const policyNamed = (name: string): Policy | undefined => deps.decisions.getPolicies().find((p) => p.name === name);

  function send(res: ServerResponse, status: number, type: string, body: string, head: boolean): void {
    // A string body goes out in one write with the head; a Buffer would be a second chunk.
    res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body) });
    res.end(head ? undefined : body);
  }

  /** Nix treats 404 as "not here" and retries 5xx; the body, which it prints, has every error's shape. */
  function refuse(res: ServerResponse, code: ErrorCode, message: string, head: boolean, field?: string): void {
    sendError(res, new QuorumError(code, message, field ? { field } : {}), head);
  }

  /**
   * Answers from the cache or the decision; only a quorum path whose NAR may be held upstream waits
   * (for that lookup), so the common case runs without a promise.
   */
  function narinfo(res: ServerResponse, policy: Policy, hashPart: HashPart, head: boolean): void {
    const started = performance.now();
    const key = `${policy.name}\0${hashPart}`;
    const cached = cache.get(key);
    if (cached !== undefined) return answer(res, policy, cached, started, head);
    let path = lookup.find(policy.name, hashPart);
    // Until every decision was checked against the log after start, each is checked before it is served.
    if (path && !deps.decisions.checked && !deps.decisions.check(path.outPath)) {
      lookup.refresh();
      path = lookup.find(policy.name, hashPart);
    }
    if (path && !path.nar && deps.upstream) return fail(res, fromUpstream(res, policy, hashPart, path, key, started, head));
    const text = renderOrNull(path);
    if (text !== null) remember(key, text);
    answer(res, policy, text, started, head);
  }

  async function fromUpstream(res: ServerResponse, policy: Policy, hashPart: HashPart, path: QuorumPath, key: string, started: number, head: boolean): Promise<void> {
    let text: string | null = null;
    try {
      if (await deps.upstream!(hashPart, path)) {
        lookup.refresh();
        text = renderOrNull(lookup.find(policy.name, hashPart));
      }
      if (text !== null) remember(key, text);
    } catch (error) {
      // Unknown whether upstream has it: answer "not here" now, ask again next time (not cached).
      deps.metrics.blobErrors.inc({ op: 'upstream' });
      deps.logger.warn('upstream caches unavailable', { hashPart, err: error });
    }
    answer(res, policy, text, started, head);
  }

  function answer(res: ServerResponse, policy: Policy, text: string | null, started: number, head: boolean): void {
    const result = text === null ? 'miss' : 'hit';
    deps.metrics.narinfoRequests.inc({ policy: policy.name, result });
    deps.metrics.narinfoSeconds.observe({ result }, (performance.now() - started) / 1000);
    if (text === null) refuse(res, 'not-found', 'not advertised: no quorum for this path, or its NAR is not available', head, 'hashPart');
    else send(res, 200, NARINFO_CONTENT_TYPE, text, head);
  }

  function renderOrNull(path: QuorumPath | undefined): string | null {
    return path?.nar ? renderNarInfo(path, path.nar, deps.cacheKey) : null;
  }

  async function nar(req: IncomingMessage, res: ServerResponse, policy: Policy, file: string, head: boolean): Promise<void> {
    const m = NAR_FILE.exec(file);
    if (!m) return refuse(res, 'bad-nar-hash', 'bad NAR file name: expected nar/<52 nix32 chars>.nar[.<compression>]', head, 'path');
    // The catalogue is keyed by canonical narHash strings: a name that is not one is simply not found.
    const narHash = `sha256:${m[1]!}` as NarHash;
    deps.decisions.checkNar(narHash, policy.name);
    const record = deps.catalog.getAdvertised(narHash, policy.name);
    if (!record || record.blobKey !== `nar/${file}`) {
      deps.metrics.narRequests.inc({ result: 'miss' });
      return refuse(res, 'not-found', 'no such NAR is advertised here', head, 'path');
    }
    const range = parseRange(req.headers.range, record.fileSize);
    if (range === 'unsatisfiable') {
      res.setHeader('content-range', `bytes */${record.fileSize}`);
      return refuse(res, 'bad-range', `range ${req.headers.range} is not satisfiable: the file has ${record.fileSize} bytes`, head, 'Range');
    }
    let blob;
    try {
      blob = await deps.blobs.get(record.blobKey, range ?? undefined);
    } catch (error) {
      deps.metrics.blobErrors.inc({ op: 'get' });
      deps.logger.error('blob store read failed', { key: record.blobKey, store: deps.blobs.describe, err: error });
      return refuse(res, 'blob-store-unavailable', 'the blob store is unavailable: retry', head);
    }
    if (!blob) {
      deps.metrics.blobErrors.inc({ op: 'missing' });
      await deps.missing.found(record, 'read');
      return refuse(res, 'not-found', 'the NAR is missing from the blob store: it is no longer advertised', head, 'path');
    }
    const length = blob.end - blob.start + 1;
    const headers = {
      'content-type': 'application/x-nix-nar',
      'content-length': length,
      'accept-ranges': 'bytes',
      ...(range ? { 'content-range': `bytes ${blob.start}-${blob.end}/${blob.size}` } : {}),
    };
    if (head) {
      blob.body.destroy();
      res.writeHead(range ? 206 : 200, headers);
      res.end();
      return;
    }
    deps.metrics.narRequests.inc({ result: range ? 'partial' : 'full' });
    const corrupt = (problem: string) => {
      deps.metrics.blobErrors.inc({ op: 'corrupt' });
      deps.logger.error('blob store returned corrupted NAR bytes', { key: record.blobKey, store: deps.blobs.describe, problem });
    };
    // A whole file is checked against the catalogue before its last byte goes out, so a corrupt
    // store makes the download fail instead of handing Nix bad bytes.
    const check = range ? undefined : new FileCheck(record);
    if (blob.bytes) {
      // Already in memory: checked before anything is sent; a corrupt one drops the connection.
      check?.update(blob.bytes);
      const problem = check?.problem();
      if (problem) {
        corrupt(problem);
        res.destroy();
        return;
      }
      res.writeHead(range ? 206 : 200, headers);
      res.end(blob.bytes);
      deps.metrics.narBytes.inc(length);
      return;
    }
    res.writeHead(range ? 206 : 200, headers);
    try {
      await pipeline(blob.body, new SendNar(res, check, deps.metrics, blob.recycle));
    } catch (error) {
      if (error instanceof CorruptBlob) corrupt(error.message);
      res.destroy();
    }
  }

  function handle(req: IncomingMessage, res: ServerResponse): boolean {
    if (req.method !== 'GET' && req.method !== 'HEAD') return false;
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    let rest = (q === -1 ? url : url.slice(0, q)).slice(1);
    let policy: Policy | undefined;
    if (rest.startsWith('policy/')) {
      const m = POLICY_PREFIX.exec(`/${rest}`);
      if (!m) return false;
      policy = policyNamed(m[1]!);
      rest = m[2]!;
      if (!policy) {
        if (rest === 'nix-cache-info' || rest.endsWith('.narinfo') || rest.startsWith('nar/')) {
          refuse(res, 'unknown-policy', `no policy named ${m[1]}`, req.method === 'HEAD', 'policy');
          return true;
        }
        return false;
      }
    } else {
      policy = policyNamed('default');
    }
    const head = req.method === 'HEAD';
    if (rest === 'nix-cache-info') {
      send(res, 200, 'text/x-nix-cache-info', `StoreDir: /nix/store\nWantMassQuery: 1\nPriority: ${deps.priority}\n`, head);
      return true;
    }
    if (rest.endsWith('.narinfo')) {
      const m = NARINFO.exec(rest);
      if (!m) {
        deps.metrics.narinfoRequests.inc({ policy: policy?.name ?? 'default', result: 'bad' });
        refuse(res, 'bad-store-path', 'bad narinfo name: expected <32 nix32 chars>.narinfo', head, 'path');
      } else if (!policy) {
        refuse(res, 'unknown-policy', 'no default policy', head, 'policy');
      } else {
        try {
          narinfo(res, policy, m[1] as HashPart, head);
        } catch (error) {
          failed(res, error);
        }
      }
      return true;
    }
    if (rest.startsWith('nar/')) {
      if (!policy) refuse(res, 'unknown-policy', 'no default policy', head, 'policy');
      else fail(res, nar(req, res, policy, rest.slice(4), head));
      return true;
    }
    return false;
  }

  function fail(res: ServerResponse, work: Promise<void>): void {
    work.catch((error: unknown) => failed(res, error));
  }

  function failed(res: ServerResponse, error: unknown): void {
    deps.logger.error('substituter request failed', { err: error });
    const fault = deps.health.notice(error);
    if (res.headersSent) res.destroy();
    else if (fault) sendError(res, fault);
    else refuse(res, 'internal', 'internal error', false);
  }

  return {
    handle,
    stop: () => {
      clearInterval(poll);
      lookup.refresh();
      reader.close();
    },
  };
}

/** Parses a single `Range: bytes=…` header; several ranges are answered with the whole file (RFC 9110 allows it). */
export function parseRange(header: string | undefined, size: number): BlobRange | null | 'unsatisfiable' {
  if (!header) return null;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return null;
  if (m[1] === '') {
    const suffix = Number(m[2]);
    if (suffix === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(m[1]);
  const end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  if (start >= size || end < start) return 'unsatisfiable';
  return { start, end };
}

/**
 * Checks a whole stored file against its catalogue row: its size, and the CRC-32 recorded at upload
 * (~4.5 GB/s per core here) or, for rows from before CRCs were recorded, its SHA-256 (FileHash,
 * ~1.7 GB/s: on a 1 GiB download that alone cost more CPU than reading and sending the bytes). The
 * CRC catches what failing disks and stores do (any burst of up to 32 flipped bits, other damage
 * with probability 1 - 2^-32; the size catches truncation); bytes forged to keep it pass here and
 * are refused by Nix, which checks NarHash. README, "Configuration", says what is guaranteed.
 */
class FileCheck {
  private readonly sha: Hash | undefined;
  private crc = 0;
  private size = 0;

  constructor(private readonly record: NarRecord) {
    this.sha = record.fileCrc32 === null ? createHash('sha256') : undefined;
  }

  update(chunk: Buffer): void {
    this.size += chunk.length;
    if (this.sha) this.sha.update(chunk);
    else this.crc = crc32(chunk, this.crc);
  }

  /** After the last update: why the bytes are not the catalogued file, or undefined if they are. */
  problem(): string | undefined {
    const { fileSize, fileHash, fileCrc32 } = this.record;
    if (this.sha) {
      const got = narHashFromDigest(this.sha.digest());
      if (got === fileHash && this.size === fileSize) return undefined;
      return `the stored file has ${this.size} bytes hashing to ${got}; the catalogue says ${fileSize} bytes hashing to ${fileHash}`;
    }
    if (this.crc === fileCrc32 && this.size === fileSize) return undefined;
    return `the stored file has ${this.size} bytes with CRC-32 ${this.crc}; the catalogue says ${fileSize} bytes with CRC-32 ${fileCrc32}`;
  }
}

class CorruptBlob extends Error {}

/**
 * Writes a NAR's chunks to the response, counting them; with a check, holds the last chunk back
 * until the whole file passed it. It writes to the response itself rather than being piped into
 * it, to learn when the socket is done with a chunk and hand it back to the blob store (`recycle`).
 */
class SendNar extends Writable {
  private held: Buffer | null = null;

  constructor(
    private readonly res: ServerResponse,
    private readonly check: FileCheck | undefined,
    private readonly metrics: Metrics,
    private readonly recycle: ((chunk: Buffer) => void) | undefined,
  ) {
    super();
    // A client that goes away stops the read, also while a write waits for 'drain'.
    res.once('close', () => {
      if (!res.writableFinished) this.destroy(new Error('the client closed the connection'));
    });
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    if (!this.check) return this.send(chunk, done);
    this.check.update(chunk);
    const previous = this.held;
    this.held = chunk;
    if (previous) this.send(previous, done);
    else done();
  }

  override _final(done: (err?: Error | null) => void): void {
    const problem = this.check?.problem();
    if (problem) return done(new CorruptBlob(problem));
    if (this.held) this.metrics.narBytes.inc(this.held.length);
    this.res.end(this.held ?? undefined);
    done();
  }

  private send(chunk: Buffer, done: (err?: Error | null) => void): void {
    this.metrics.narBytes.inc(chunk.length);
    const recycle = this.recycle;
    if (this.res.write(chunk, recycle && (() => recycle(chunk)))) done();
    else this.res.once('drain', () => done());
  }
}
