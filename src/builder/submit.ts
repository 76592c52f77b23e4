import type { Attestation } from '../ledger/statement.js';
import type { SecretKey } from '../nix/keys.js';
import type { StorePath } from '../nix/storePath.js';
import { signOutput } from './attest.js';
import { ensureLog } from './buildLog.js';
import { ensureNar, type NarContext } from './drain.js';
import { closure } from './nix.js';
import { resolvePaths } from './outputs.js';
import { runPool } from './pool.js';

export interface SubmitOptions extends NarContext {
  paths: StorePath[];
  /** Also attest everything the paths reference, transitively (`nix-store -qR`). */
  closure: boolean;
  /** Upload NARs the server does not have before submitting, and build logs after. */
  upload: boolean;
  store: string | null;
  key: SecretKey;
  concurrency: number;
  /** Called as paths are settled: (settled, total). */
  onProgress?: (settled: number, total: number) => void;
}

export type SubmitStatus = 'accepted' | 'duplicate' | 'conflict' | 'rejected' | 'error' | 'skipped';

export interface SubmitOutcome {
  path: StorePath;
  status: SubmitStatus;
  /** Why it was rejected, failed or skipped. */
  detail?: string;
}

/** Attestations per request, below the server's default maxAttestationsPerRequest of 1000. */
const BATCH = 500;

/**
 * Attests store paths that already exist (built before the hook was installed, or by hand):
 * looks up each path's deriver and output name, signs, optionally uploads NARs, and submits
 * directly. Paths pulled in only by --closure that have no deriver (sources) are skipped, not errors.
 */
export async function submitPaths(options: SubmitOptions): Promise<SubmitOutcome[]> {
  const target = { store: options.store };
  const named = new Set(options.paths);
  const paths = options.closure ? [...new Set([...options.paths, ...(await closure(options.paths, target))])] : [...named];
  const outcomes = new Map<StorePath, SubmitOutcome>();
  const signed: Attestation[] = [];
  for (const r of await resolvePaths(paths, target)) {
    if ('output' in r) signed.push(signOutput(r.output, options.key));
    else outcomes.set(r.path, { path: r.path, status: r.noDeriver && !named.has(r.path) ? 'skipped' : 'error', detail: r.error });
  }
  let settled = outcomes.size;
  const progress = () => options.onProgress?.(settled, paths.length);
  progress();

  let ready = signed;
  if (options.upload) {
    ready = [];
    await runPool(signed.length, options.concurrency, async (i) => {
      const a = signed[i]!;
      try {
        await ensureNar(a, options.store, options);
        ready.push(a);
      } catch (error) {
        outcomes.set(a.outPath, { path: a.outPath, status: 'error', detail: `NAR upload failed: ${(error as Error).message}` });
        settled++;
        progress();
      }
    });
  }

  for (let start = 0; start < ready.length; start += BATCH) {
    const batch = ready.slice(start, start + BATCH);
    try {
      const results = await options.client.submit(batch, options.key);
      results.forEach((r, j) => {
        const path = batch[j]!.outPath;
        outcomes.set(path, r.status === 'rejected' ? { path, status: 'rejected', detail: `${r.reason} (${r.code})` } : { path, status: r.status });
      });
    } catch (error) {
      for (const a of batch) outcomes.set(a.outPath, { path: a.outPath, status: 'error', detail: (error as Error).message });
    }
    settled += batch.length;
    progress();
  }
  if (options.upload) {
    const delivered = ready.filter((a) => ['accepted', 'duplicate', 'conflict'].includes(outcomes.get(a.outPath)!.status));
    await runPool(delivered.length, options.concurrency, (i) =>
      ensureLog(delivered[i]!, options.store, options).catch((error: unknown) => options.logger.warn('could not deliver the build log', { outPath: delivered[i]!.outPath, error: (error as Error).message })),
    );
  }
  return paths.map((p) => outcomes.get(p)!);
}
