import { promisify } from 'node:util';
import { brotliCompress, constants } from 'node:zlib';
import { QuorumError } from '../errors.js';
import type { Attestation } from '../ledger/statement.js';
import { MAX_LOG_BYTES } from '../logs/buildLogs.js';
import type { NarContext } from './drain.js';
import { readBuildLog } from './nix.js';

const compress = promisify(brotliCompress);

/** A log longer than the server takes keeps its end, where a build says how it finished, after a line saying so. */
export function capLog(log: Buffer, max = MAX_LOG_BYTES): Buffer {
  if (log.length <= max) return log;
  const note = Buffer.from(`[nix-quorum: the first ${log.length - max} bytes of this ${log.length}-byte log were left out]\n`);
  return Buffer.concat([note, log.subarray(log.length - (max - note.length))]);
}

/**
 * Delivers the builder's log of the attestation's derivation unless the server has it: read from the
 * store the build ran in (`nix-store --read-log`, here rather than in the hook, which must stay
 * cheap), cut to the server's limit, brotli-compressed, signed. A log is a courtesy, never a reason
 * to keep an attestation from the server: only "server unavailable" is thrown (the entry is retried);
 * anything else (no log kept, a server without log routes) is logged and skipped.
 */
export async function ensureLog(a: Attestation, store: string | null, ctx: NarContext): Promise<void> {
  try {
    if (await ctx.client.hasLog(a.drvPath, ctx.key.name)) return;
    const log = await readBuildLog(a.drvPath, { store });
    if (log === null) {
      ctx.logger.info('no build log to deliver: Nix kept none', { drvPath: a.drvPath, store });
      return;
    }
    const compressed = await compress(capLog(log), { params: { [constants.BROTLI_PARAM_QUALITY]: 5, [constants.BROTLI_PARAM_MODE]: constants.BROTLI_MODE_TEXT } });
    await ctx.client.putLog(a.drvPath, ctx.key, compressed);
  } catch (error) {
    if (error instanceof QuorumError && error.code === 'unavailable') throw error;
    ctx.logger.warn('could not deliver the build log; the attestation is delivered without it', { drvPath: a.drvPath, error: (error as Error).message });
  }
}
