import { setTimeout as sleep } from 'node:timers/promises';
import { QuorumError } from '../errors.js';
import type { Attestation } from '../ledger/statement.js';
import type { Logger } from '../log.js';
import type { SecretKey } from '../nix/keys.js';
import { hashPartOf } from '../nix/storePath.js';
import { ensureLog } from './buildLog.js';
import { pathInfos, spawnNarDump } from './nix.js';
import { runPool } from './pool.js';
import { upstreamHasNar, type QuorumClient } from './remote.js';
import type { Spool, SpoolEntry } from './spool.js';
import { readSpoolEntry } from './spoolEntry.js';

export interface RetryPolicy {
  /** Tries per entry within one drain (1 = no retry). */
  attempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
}

export interface DrainOptions {
  spool: Spool;
  client: QuorumClient;
  key: SecretKey;
  /** Binary caches whose NARs the server can serve itself (config `upstreams`): no upload needed. */
  upstreams: readonly string[];
  concurrency: number;
  retry: RetryPolicy;
  logger: Logger;
  /** Called after each entry is settled, with how many of `total` are. */
  onProgress?: (settled: number, total: number) => void;
}

export interface DrainReport {
  /** Acknowledged by the server (accepted, duplicate or conflict) and removed from the spool. */
  delivered: number;
  /** Still in the spool; retried on the next drain. */
  failed: Array<{ entry: string; error: string }>;
  /** Moved to quarantine/: can never be submitted as they are. */
  quarantined: Array<{ entry: string; reason: string }>;
}

/** Server down, 5xx, a Nix call that failed (store lock, a slow disk): worth retrying soon. */
function isTransient(error: unknown): boolean {
  return error instanceof QuorumError && (error.code === 'unavailable' || error.code === 'nix-failed');
}

/** The server refused the content itself (bad JSON fields, NAR bytes not matching the claim): retrying cannot help. */
function isPermanent(error: unknown): boolean {
  if (!(error instanceof QuorumError)) return false;
  const code = error.code === 'refused' ? (error.remoteCode ?? '') : error.code;
  return code.startsWith('bad-') || code === 'too-large';
}

/** Exponential backoff with jitter: base, 2·base, 4·base … capped at max. */
export function backoffDelay(attempt: number, base: number, max: number): number {
  return Math.min(max, base * 2 ** attempt) * (0.5 + Math.random() / 2);
}

async function withRetry<T>(fn: () => Promise<T>, retry: RetryPolicy): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn();
    } catch (error) {
      if (!isTransient(error) || attempt + 1 >= retry.attempts) throw error;
      await sleep(backoffDelay(attempt, retry.baseDelayMs, retry.maxDelayMs));
    }
  }
}

/** What ensureNar needs: where to upload, who signs the upload, which caches already serve NARs. */
export type NarContext = Pick<DrainOptions, 'client' | 'key' | 'upstreams' | 'logger'>;

/** Streams the output's NAR from the store into a PUT; a failing dump aborts the upload. */
async function uploadFromStore(a: Attestation, store: string | null, ctx: NarContext): Promise<void> {
  const dump = spawnNarDump(a.outPath, { store });
  let stderr = '';
  dump.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr = (stderr + chunk).slice(-2000)));
  const aborter = new AbortController();
  dump.once('error', (e) => aborter.abort(new QuorumError('nix-failed', `cannot run nix store dump-path: ${e.message}`)));
  dump.once('close', (code) => {
    if (code !== 0) aborter.abort(new QuorumError('nix-failed', `nix store dump-path ${a.outPath} failed: ${stderr.trim().split('\n').slice(-2).join(' | ')}`));
  });
  try {
    await ctx.client.putNar(a.narHash, a.narSize, ctx.key, dump.stdout, aborter.signal);
  } finally {
    dump.kill();
  }
}

/**
 * Makes sure the server can serve the output's NAR: it already has it, an upstream cache serves
 * exactly these bytes, or we upload it from `store`. Repeating it is harmless.
 */
export async function ensureNar(a: Attestation, store: string | null, ctx: NarContext): Promise<void> {
  if (await ctx.client.hasNar(a.narHash)) return;
  const hashPart = hashPartOf(a.outPath);
  if ((await Promise.all(ctx.upstreams.map((u) => upstreamHasNar(u, hashPart, a.narHash, a.narSize)))).some(Boolean)) return;
  const info = (await pathInfos([a.outPath], { store })).get(a.outPath);
  if (info) return uploadFromStore(a, store, ctx);
  // The statement stays true without the bytes; another builder or a rebuild can provide them.
  ctx.logger.warn('output is no longer in the store (garbage-collected?): submitting its attestation without uploading the NAR', { outPath: a.outPath, store });
}

/**
 * Uploads the NAR if needed, submits the attestation, then delivers the build log (the server takes
 * a log only from a key that attested the derivation). Safe to repeat after a crash at any point: a
 * NAR or log the server has is not sent again, and the server answers an identical statement with
 * "duplicate" instead of adding a leaf. So nothing is lost and nothing is doubled.
 */
async function deliver(entry: SpoolEntry, options: DrainOptions): Promise<void> {
  const a = entry.attestation;
  await ensureNar(a, entry.store, options);
  const [result] = await options.client.submit([a], options.key);
  if (result!.status === 'rejected') {
    // Kept in the spool: the usual causes (builder not registered yet, key revoked or replaced) are fixed on the server.
    throw new QuorumError('rejected', `the server rejected the attestation of ${a.outPath}: ${result!.reason} (${result!.code})`);
  }
  await ensureLog(a, entry.store, options);
}

type Outcome = { kind: 'delivered' } | { kind: 'failed'; error: string } | { kind: 'quarantined'; reason: string } | { kind: 'gone' };

async function processEntry(name: string, options: DrainOptions): Promise<Outcome> {
  const { spool, logger } = options;
  let entry: SpoolEntry;
  try {
    entry = readSpoolEntry(spool, name);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'gone' };
    const reason = (error as Error).message;
    if (!(error instanceof QuorumError && error.code === 'bad-spool-entry')) return { kind: 'failed', error: reason };
    const movedTo = spool.quarantine(name, reason);
    logger.error('quarantined a corrupt spool entry; the entries after it go on', { entry: name, reason, movedTo });
    return { kind: 'quarantined', reason };
  }
  try {
    await withRetry(() => deliver(entry, options), options.retry);
  } catch (error) {
    const message = (error as Error).message;
    if (isPermanent(error)) {
      const movedTo = spool.quarantine(name, message);
      logger.error('the server refused a spool entry for good; quarantined it', { entry: name, outPath: entry.attestation.outPath, reason: message, movedTo });
      return { kind: 'quarantined', reason: message };
    }
    // Anything else (including an unexpected error) keeps the entry: the spool never drops a signed statement.
    logger.warn('could not deliver a spool entry; it stays queued', { entry: name, outPath: entry.attestation.outPath, error, stack: error instanceof QuorumError ? undefined : (error as Error).stack });
    return { kind: 'failed', error: message };
  }
  spool.remove(name);
  logger.info('delivered', { entry: name, outPath: entry.attestation.outPath });
  return { kind: 'delivered' };
}

/** One pass over the spool with at most `concurrency` entries in flight; never throws for one bad entry. */
export async function drain(options: DrainOptions): Promise<DrainReport> {
  options.spool.removeStaleTemp();
  const names = options.spool.list();
  const report: DrainReport = { delivered: 0, failed: [], quarantined: [] };
  let settled = 0;
  await runPool(names.length, options.concurrency, async (i) => {
    const name = names[i]!;
    const outcome = await processEntry(name, options);
    if (outcome.kind === 'delivered') report.delivered++;
    else if (outcome.kind === 'failed') report.failed.push({ entry: name, error: outcome.error });
    else if (outcome.kind === 'quarantined') report.quarantined.push({ entry: name, reason: outcome.reason });
    options.onProgress?.(++settled, names.length);
  });
  return report;
}
