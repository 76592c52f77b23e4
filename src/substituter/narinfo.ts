import type { Statement } from 'better-sqlite3';
import type { Db } from '../db.js';
import { hashPartRange } from '../ledger/queries.js';
import type { NarRecord } from '../nars/catalog.js';
import { fingerprint } from '../nix/fingerprint.js';
import type { NarHash } from '../nix/hash.js';
import { signNix, type SecretKey } from '../nix/keys.js';
import { serializeNarInfo, type NarInfo } from '../nix/narinfo.js';
import { baseNameOf, type HashPart, type StorePath } from '../nix/storePath.js';

/** A path with quorum under a policy, with its NAR when the catalogue has one. */
export interface QuorumPath {
  outPath: StorePath;
  narHash: NarHash;
  narSize: number;
  refs: string;
  deriver: string | null;
  sigs: string | null;
  nar: Omit<NarRecord, 'narHash' | 'narSize' | 'createdAt'> | null;
}

interface Row {
  out_path: string;
  nar_hash: string;
  nar_size: number;
  refs: string;
  deriver: string | null;
  sigs: string | null;
  blob_key: string | null;
  compression: string | null;
  file_hash: string | null;
  file_size: number | null;
}

/** The substituter's one indexed read: the quorum decision of a hash part joined with its NAR. */
export class QuorumLookup {
  private readonly stmt: Statement<[string, string, string], Row>;
  private readonly advertisedNar: Statement<[string, string], number | undefined>;

  constructor(db: Db) {
    this.stmt = db.prepare(
      `SELECT d.out_path, d.nar_hash, d.nar_size, d.refs, d.deriver, d.sigs, n.blob_key, n.compression, n.file_hash, n.file_size
       FROM decisions d LEFT JOIN nars n ON n.nar_hash = d.nar_hash
       WHERE d.policy = ? AND d.out_path >= ? AND d.out_path < ? AND d.status = 'quorum' LIMIT 1`,
    );
    this.advertisedNar = db.prepare<[string, string], number | undefined>("SELECT 1 FROM decisions WHERE nar_hash = ? AND policy = ? AND status = 'quorum' LIMIT 1").pluck();
  }

  /**
   * Whether some path with this NAR has quorum under the policy. NAR downloads check it too: Nix
   * caches narinfos for days, and a revoked key must stop counting for those clients as well.
   */
  narHasQuorum(policy: string, narHash: string): boolean {
    return this.advertisedNar.get(narHash, policy) !== undefined;
  }

  find(policy: string, hashPart: HashPart): QuorumPath | undefined {
    const [lo, hi] = hashPartRange(hashPart);
    const r = this.stmt.get(policy, lo, hi);
    if (!r) return undefined;
    return {
      outPath: r.out_path as StorePath,
      narHash: r.nar_hash as NarHash,
      narSize: r.nar_size,
      refs: r.refs,
      deriver: r.deriver,
      sigs: r.sigs,
      nar: r.blob_key === null ? null : { blobKey: r.blob_key, compression: r.compression!, fileHash: r.file_hash!, fileSize: r.file_size! },
    };
  }
}

/** Renders the narinfo, signed by the substituter's key and carrying the agreeing builders' Sigs. */
export function renderNarInfo(path: QuorumPath, nar: NonNullable<QuorumPath['nar']>, cacheKey: SecretKey): string {
  const references = path.refs === '' ? [] : (path.refs.split(',') as StorePath[]);
  const ours = signNix(cacheKey, fingerprint(path.outPath, path.narHash, path.narSize, references));
  const info: NarInfo = {
    storePath: path.outPath,
    // Stored NARs have blob keys `nar/<file>`, which is also their URL relative to the cache (and
    // so to /policy/<name>/); NARs held upstream are absolute URLs, which Nix follows as they are.
    url: nar.blobKey,
    compression: nar.compression,
    fileHash: nar.fileHash,
    fileSize: nar.fileSize,
    narHash: path.narHash,
    narSize: path.narSize,
    references: references.map(baseNameOf),
    ...(path.deriver ? { deriver: baseNameOf(path.deriver as StorePath) } : {}),
    sigs: [ours, ...(path.sigs ? path.sigs.split('\n') : [])],
  };
  return serializeNarInfo(info);
}
