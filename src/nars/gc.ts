import type { Statement } from 'better-sqlite3';
import type { BlobStore } from '../blobstore/blobStore.js';
import type { Db } from '../db.js';
import type { Logger } from '../log.js';
import { narHashFromDigest, type NarHash } from '../nix/hash.js';
import { nix32Decode } from '../nix/nix32.js';
import { isUpstreamKey, type CollectCutoffs, type NarCatalog } from './catalog.js';

const DAY_MS = 24 * 60 * 60 * 1000;

/**
 * Nothing younger than this is garbage. A builder uploads a NAR before it submits the attestation
 * (src/builder/drain.ts), and its agent may retry that submission for a while; an upload lands its
 * blob a moment before its catalogue row. Deleting too early only costs a re-upload, never a
 * wrong answer, but it would waste the builder's bandwidth.
 */
export const GC_GRACE_MS = 6 * 60 * 60 * 1000;

/** Where NAR blobs live (src/nars/upload.ts narBlobKey). */
const NAR_PREFIX = 'nar/';
const NAR_KEY = /^nar\/([0123456789abcdfghijklmnpqrsvwxyz]{52})\.nar(\.[a-z0-9]+)?$/;

export type GcReason =
  /** A blob no catalogue row names (e.g. a crash between the blob's put and its row's insert). */
  | 'orphan-blob'
  /** A catalogued NAR no attestation names, older than the grace period. */
  | 'unattested'
  /** A catalogued NAR whose paths never reached quorum under any policy within the retention period. */
  | 'no-quorum';

export interface GcDeletion {
  reason: GcReason;
  /** Blob key, or the absolute URL of a NAR held by an upstream cache. */
  blobKey: string;
  /** The catalogued NAR; for an orphan blob, the hash its key names. */
  narHash: NarHash;
  /** Bytes freed in the blob store (0 for an upstream-held NAR: only its row goes). */
  bytes: number;
  upstream: boolean;
}

export interface GcOptions {
  db: Db;
  blobs: BlobStore;
  catalog: NarCatalog;
  logger: Logger;
  /** config.gc.retentionDays */
  retentionDays: number;
  /** Unix ms; the clock GC judges ages by. */
  now?: number;
  /** List what would go, delete nothing and record nothing. */
  dryRun?: boolean;
  graceMs?: number;
}

export interface GcResult {
  /** What was deleted (dry run: what would be), catalogued NARs first, then orphan blobs in key order. */
  deleted: GcDeletion[];
  /** Catalogued NARs that stay. */
  kept: number;
  bytesFreed: number;
  /** Orphan blobs not yet deletable: first seen by this pass, or less than the grace period ago. */
  waitingOrphans: number;
}

/**
 * Deletes NARs nobody needs: catalogued NARs that are unattested (after the grace period) or whose
 * paths never reached quorum (after the retention period), and blobs no catalogue row names.
 *
 * Safety rules:
 * - A NAR named by a decision with status 'quorum' under any policy is never deleted, catalogued or
 *   not: an advertised path needs it, or a path with quorum is waiting for exactly these bytes.
 * - A catalogued NAR loses its row before its blob, and the row is deleted in a transaction that
 *   re-checks every condition, so the substituter never advertises a missing blob and a NAR that
 *   gained quorum or an attestation meanwhile stays. A failure between the two leaves an orphan
 *   blob, which a later pass deletes.
 * - An orphan blob may be an upload whose row is about to be written. BlobStore.list gives no
 *   times, so ages come from sightings: a pass records the orphans it sees (in the meta table) and
 *   deletes only those that were already orphans in an earlier pass at least the grace period ago
 *   and in every pass since. Any pass that finds the key catalogued again forgets the sighting.
 * - Blobs whose names are not NAR keys are not GC's to judge and stay.
 *
 * One residual race, on one key only: if a builder re-uploads a NAR in the milliseconds between
 * GC's removal of its row and of its blob, the fresh blob can be deleted. The check after each blob
 * delete catches it when the new row is already there (the row is dropped, so the path waits for its
 * NAR again instead of being advertised without bytes); a row written after that check names a
 * missing blob, which the substituter answers with 404 and counts as blobstore_errors{op="missing"}.
 */
export async function collectGarbage(options: GcOptions): Promise<GcResult> {
  const { blobs, catalog, logger } = options;
  const now = options.now ?? Date.now();
  const dryRun = options.dryRun ?? false;
  const graceMs = options.graceMs ?? GC_GRACE_MS;
  const cutoffs: CollectCutoffs = {
    unattestedBefore: now - graceMs,
    // The grace holds here too: with a retention shorter than it, a fresh upload would go.
    unadvertisedBefore: now - Math.max(options.retentionDays * DAY_MS, graceMs),
  };
  const deleted: GcDeletion[] = [];

  const deleteBlob = async (key: string, narHash: NarHash): Promise<void> => {
    await blobs.delete(key);
    const raced = catalog.get(narHash);
    if (raced?.blobKey === key && !(await blobs.head(key))) {
      catalog.remove(narHash, key);
      logger.warn('an upload of a NAR raced its garbage collection: dropped its catalogue row, the NAR must be uploaded again', { narHash, key });
    }
  };

  const { nars, lastLeaf } = catalog.collectable(cutoffs);
  for (const nar of nars) {
    // Changed since it was found (quorum, a new attestation, a re-upload): it stays.
    if (!dryRun && !catalog.removeIfCollectable(nar, cutoffs, lastLeaf)) continue;
    const upstream = isUpstreamKey(nar.blobKey);
    if (!dryRun && !upstream) await deleteBlob(nar.blobKey, nar.narHash);
    deleted.push({ reason: nar.attested ? 'no-quorum' : 'unattested', blobKey: nar.blobKey, narHash: nar.narHash, bytes: upstream ? 0 : nar.fileSize, upstream });
  }
  const kept = catalog.count() - (dryRun ? deleted.length : 0);

  const sightings = new OrphanSightings(options.db);
  let waitingOrphans = 0;
  for await (const { key, size } of blobs.list(NAR_PREFIX)) {
    const narHash = narHashOfBlobKey(key);
    if (narHash === null || catalog.get(narHash)?.blobKey === key || catalog.neededByQuorum(narHash)) continue;
    const firstSeen = sightings.firstSeen(key);
    if (firstSeen === undefined || now - firstSeen < graceMs) {
      waitingOrphans++;
      if (!dryRun) sightings.see(key, now);
      continue;
    }
    if (!dryRun) {
      await deleteBlob(key, narHash);
      sightings.forget(key);
    }
    deleted.push({ reason: 'orphan-blob', blobKey: key, narHash, bytes: size, upstream: false });
  }
  // Only after a complete listing: a sighting not renewed now is no longer an orphan.
  if (!dryRun) sightings.forgetUnseenSince(now);

  return { deleted, kept, bytesFreed: deleted.reduce((sum, d) => sum + d.bytes, 0), waitingOrphans };
}

/** The NAR hash a stored NAR's blob key names, or null for a key that is not a NAR's. */
export function narHashOfBlobKey(key: string): NarHash | null {
  const m = NAR_KEY.exec(key);
  if (!m) return null;
  try {
    return narHashFromDigest(nix32Decode(m[1]!, 32));
  } catch {
    return null; // 52 nix32 characters with bits beyond 256
  }
}

/**
 * Orphan blobs seen by GC passes, as meta rows `gc-orphan:<key>` = `<first seen> <last seen>`
 * (unix ms). The set is small: orphans come from crashes and failed deletes.
 */
class OrphanSightings {
  private static readonly PREFIX = 'gc-orphan:';
  /** The first string after every `gc-orphan:…` key (';' follows ':'). */
  private static readonly END = 'gc-orphan;';
  private readonly read: Statement<[string], string>;
  private readonly write: Statement<[string, string]>;
  private readonly drop: Statement<[string]>;
  private readonly all: Statement<[string, string], { key: string; value: string }>;

  constructor(db: Db) {
    this.read = db.prepare('SELECT value FROM meta WHERE key = ?').pluck() as Statement<[string], string>;
    this.write = db.prepare('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value');
    this.drop = db.prepare('DELETE FROM meta WHERE key = ?');
    this.all = db.prepare('SELECT key, value FROM meta WHERE key >= ? AND key < ?');
  }

  firstSeen(blobKey: string): number | undefined {
    const value = this.read.get(OrphanSightings.PREFIX + blobKey);
    return value === undefined ? undefined : Number(value.split(' ')[0]);
  }

  see(blobKey: string, now: number): void {
    this.write.run(OrphanSightings.PREFIX + blobKey, `${this.firstSeen(blobKey) ?? now} ${now}`);
  }

  forget(blobKey: string): void {
    this.drop.run(OrphanSightings.PREFIX + blobKey);
  }

  forgetUnseenSince(now: number): void {
    const stale = this.all.all(OrphanSightings.PREFIX, OrphanSightings.END).filter((row) => Number(row.value.split(' ')[1]) < now);
    for (const row of stale) this.drop.run(row.key);
  }
}
