import type { Command } from 'commander';
import { createBlobStore } from '../blobstore/config.js';
import { loadConfig } from '../config.js';
import { DataDirLock, dataPaths, requireLedger } from '../dataDir.js';
import { openDb } from '../db.js';
import { QuorumError } from '../errors.js';
import { createLogger } from '../log.js';
import { NarCatalog } from '../nars/catalog.js';
import { collectGarbage, GC_GRACE_MS, type GcResult } from '../nars/gc.js';
import { action } from './run.js';

interface GcFlags {
  data?: string;
  config?: string;
  dryRun?: boolean;
}

export function registerGc(program: Command): void {
  program
    .command('gc')
    .description('delete NARs no path with quorum needs: unattested, never reached quorum within gc.retentionDays, or blobs without a catalogue row')
    .option('--data <dir>', 'data directory of the server (default ./data; env NIX_QUORUM_DATA)')
    .option('--config <file>', 'JSON config file of the server, for its blob store and gc.retentionDays (env NIX_QUORUM_CONFIG)')
    .option('--dry-run', 'list what would be deleted, delete nothing')
    .action(action(async (opts: GcFlags) => {
      const config = loadConfig({ file: opts.config, flags: opts.data ? { dataDir: opts.data } : {} });
      // Opening would create an empty database: a mistyped --data must not look like "nothing to delete".
      requireLedger(config.dataDir);
      // A running server uploads and decides meanwhile, and collects on gc.cron itself.
      let lock;
      try {
        lock = DataDirLock.acquire(config.dataDir);
      } catch (error) {
        if (error instanceof QuorumError && error.code === 'data-dir-locked') throw new QuorumError('data-dir-locked', `${error.message}: a server collects garbage itself on gc.cron; stop it to run gc by hand`, { field: 'data' });
        throw error;
      }
      const db = openDb(dataPaths(config.dataDir).db);
      try {
        const blobs = await createBlobStore(config.blobStore, config.dataDir);
        const result = await collectGarbage({
          db,
          blobs,
          catalog: new NarCatalog(db),
          logger: createLogger(config.logLevel),
          retentionDays: config.gc.retentionDays,
          dryRun: opts.dryRun ?? false,
        });
        process.stdout.write(formatGcReport(result, opts.dryRun ?? false));
      } finally {
        db.close();
        lock.release();
      }
    }));
}

/** One line per deletion, then a summary. */
export function formatGcReport(result: GcResult, dryRun: boolean): string {
  const verb = dryRun ? 'would delete' : 'deleted';
  const lines = result.deleted.map((d) => `${verb} ${d.reason.padEnd(11)} ${d.upstream ? '(catalogue row only) ' : ''}${d.blobKey} ${formatBytes(d.bytes)}`);
  lines.push(
    `${dryRun ? 'dry run: would delete' : 'deleted'} ${result.deleted.length} NAR(s), ${formatBytes(result.bytesFreed)}; ${result.kept} catalogued NAR(s) kept` +
      (result.waitingOrphans > 0 ? `; ${result.waitingOrphans} blob(s) without a catalogue row kept for now: a run deletes them once earlier runs have seen them uncatalogued for ${GC_GRACE_MS / 3_600_000} h` : ''),
  );
  return `${lines.join('\n')}\n`;
}

function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(1)} ${units[unit]}`;
}
