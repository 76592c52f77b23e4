import type { Statement } from 'better-sqlite3';
import type { BlobStore } from '../blobstore/blobStore.js';
import type { Db } from '../db.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { NarHash } from '../nix/hash.js';
import { isUpstreamKey, type NarCatalog } from './catalog.js';

/** How a missing blob was noticed: a download that found nothing, the scheduled scrub, or an upload of a NAR already catalogued. */
export type FoundBy = 'read' | 'scrub' | 'upload';

/** Catalogued NARs the scrub checks per database read, so a large catalogue is never held in memory. */
const SCRUB_PAGE = 500;

/**
 * NARs catalogued but gone from the blob store (deleted by hand, a lost disk, a bucket lifecycle
 * rule). A path is advertised only while its NAR is retrievable (design.md), so such a NAR's row
 * is dropped: its narinfos answer 404 instead of sending Nix to a download that fails, and a
 * re-upload of the NAR catalogues it again. The blob is asked for once more before the row goes,
 * so an upload that landed it meanwhile keeps its row.
 */
export class MissingNars {
  private readonly listeners: Array<(narHash: NarHash) => void> = [];
  private readonly advertisedPage: Statement<[string], { nar_hash: string; blob_key: string }>;

  constructor(
    private readonly deps: { db: Db; blobs: BlobStore; catalog: NarCatalog; metrics: Metrics; logger: Logger },
  ) {
    this.advertisedPage = deps.db.prepare(
      `SELECT n.nar_hash, n.blob_key FROM nars n
       WHERE n.nar_hash > ? AND EXISTS (SELECT 1 FROM decisions d WHERE d.nar_hash = n.nar_hash AND d.status = 'quorum')
       ORDER BY n.nar_hash LIMIT ${SCRUB_PAGE}`,
    );
  }

  /** Hears each NAR that stopped being advertised (the substituter drops what it cached). */
  onMissing(listener: (narHash: NarHash) => void): void {
    this.listeners.push(listener);
  }

  /** A read found no blob for this catalogued NAR: unless it is back, stop advertising it. True if its row went. */
  async found(nar: { narHash: NarHash; blobKey: string }, foundBy: FoundBy): Promise<boolean> {
    if (isUpstreamKey(nar.blobKey) || (await this.deps.blobs.head(nar.blobKey)) !== null) return false;
    if (!this.deps.catalog.remove(nar.narHash, nar.blobKey)) return false;
    this.deps.metrics.narsMissing.inc({ found_by: foundBy });
    this.deps.logger.error('a catalogued NAR is missing from the blob store: its paths are not advertised until it is uploaded again', {
      narHash: nar.narHash,
      key: nar.blobKey,
      store: this.deps.blobs.describe,
      foundBy,
    });
    for (const listener of this.listeners) listener(nar.narHash);
    return true;
  }

  /**
   * Checks that every NAR a path with quorum is advertised with is in the blob store (a HEAD or a
   * stat each, never a read of the bytes), and stops advertising those that are not.
   */
  async scrub(): Promise<{ checked: number; missing: number }> {
    let checked = 0;
    let missing = 0;
    for (let after = ''; ; ) {
      const page = this.advertisedPage.all(after);
      for (const row of page) {
        if (isUpstreamKey(row.blob_key)) continue;
        checked++;
        if (await this.found({ narHash: row.nar_hash as NarHash, blobKey: row.blob_key }, 'scrub')) missing++;
      }
      if (page.length < SCRUB_PAGE) return { checked, missing };
      after = page[page.length - 1]!.nar_hash;
    }
  }
}
