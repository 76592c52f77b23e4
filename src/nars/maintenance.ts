import type { BlobStore } from '../blobstore/blobStore.js';
import { removeLeftoverTempFiles } from '../dataDir.js';
import type { Db } from '../db.js';
import type { Logger } from '../log.js';
import type { NarCatalog } from './catalog.js';
import { collectGarbage } from './gc.js';
import type { MissingNars } from './missing.js';

export interface MaintenanceDeps {
  db: Db;
  blobs: BlobStore;
  catalog: NarCatalog;
  missing: MissingNars;
  logger: Logger;
  dataDir: string;
  retentionDays: number;
}

/**
 * What a server does on gc.cron: collect garbage, scrub (stop advertising NARs whose blobs are
 * gone) and remove the temp files interrupted writes left. Each step runs even if another failed,
 * and says in one log line what it did.
 */
export async function runMaintenance(deps: MaintenanceDeps): Promise<void> {
  const { logger } = deps;
  await step(logger, 'garbage collection', async () => {
    const result = await collectGarbage({ db: deps.db, blobs: deps.blobs, catalog: deps.catalog, logger, retentionDays: deps.retentionDays });
    return { deleted: result.deleted.length, bytesFreed: result.bytesFreed, kept: result.kept, waitingOrphans: result.waitingOrphans };
  });
  await step(logger, 'scrub of advertised NARs', async () => deps.missing.scrub());
  await step(logger, 'removal of leftover temp files', async () => ({
    blobStore: (await deps.blobs.removeLeftovers?.()) ?? 0,
    dataDir: removeLeftoverTempFiles(deps.dataDir).length,
  }));
}

async function step(logger: Logger, what: string, run: () => Promise<Record<string, unknown>>): Promise<void> {
  try {
    logger.info(`${what} finished`, await run());
  } catch (error) {
    logger.error(`${what} failed`, { err: error });
  }
}
