import type { Statement } from 'better-sqlite3';
import type { Db } from '../db.js';
import { hashPartRange } from '../ledger/queries.js';
import type { NarRecord } from '../nars/catalog.js';
import { contentFingerprint } from '../nix/fingerprint.js';
import type { NarHash } from '../nix/hash.js';
import { signNix, type SecretKey } from '../nix/keys.js';
import { STORE_DIR, type HashPart, type StorePath } from '../nix/storePath.js';

/** Where a path's NAR file is, and what it is. */
export type NarLocation = Pick<NarRecord, 'blobKey' | 'compression' | 'fileHash' | 'fileSize'>;

/** A path with quorum under a policy, with its NAR when the catalogue has one. */
export interface QuorumPath {
  outPath: StorePath;
  narHash: NarHash;
  narSize: number;
  /** Full store paths, sorted, joined by ','. */
  refs: string;
  deriver: string | null;
  /** The agreeing builders' narinfo Sigs, '\n'-joined. */
  sigs: string | null;
  /** The cache key's Sig made when the decision was materialised, if any (see DecisionMaterializer). */
  cacheSig: string | null;
  nar: NarLocation | null;
}

/** The lookup's columns in order: read as an array, which spares building an object per request. */
type Row = [
  outPath: StorePath,
  narHash: NarHash,
  narSize: number,
  refs: string,
  deriver: string | null,
  sigs: string | null,
  cacheSig: string | null,
  blobKey: string | null,
  compression: string,
  fileHash: string,
  fileSize: number,
];

/**
 * The substituter's reads: the quorum decision of a hash part joined with its NAR (one indexed read),
 * and whether a NAR has quorum.
 *
 * With `perTurn`, the reads of one event-loop turn share one read transaction. Each autocommit read
 * takes and drops SQLite's WAL read lock (two fcntl calls and an fstat), which under load cost as
 * much as the lookup itself. Such a lookup needs a connection of its own (a transaction left open on
 * the writer's would swallow its commits), and refresh() when this process commits a change that a
 * read later in the same turn must see (a decision: revocation stops serving at once); other commits
 * show from the next turn, as for a request that raced them.
 */
export class QuorumLookup {
  private readonly stmt: Statement<[string, string, string], Row>;
  private readonly begin: Statement | undefined;
  private readonly commit: Statement | undefined;

  constructor(
    private readonly db: Db,
    options: { perTurn?: boolean } = {},
  ) {
    this.stmt = db.prepare<[string, string, string], Row>(
      `SELECT d.out_path, d.nar_hash, d.nar_size, d.refs, d.deriver, d.sigs, d.cache_sig, n.blob_key, n.compression, n.file_hash, n.file_size
       FROM decisions d LEFT JOIN nars n ON n.nar_hash = d.nar_hash
       WHERE d.policy = ? AND d.out_path >= ? AND d.out_path < ? AND d.status = 'quorum' LIMIT 1`,
    ).raw();
    if (options.perTurn) {
      this.begin = db.prepare('BEGIN');
      this.commit = db.prepare('COMMIT');
    }
  }

  /** Ends the shared read transaction: the next read sees every commit made so far. */
  refresh(): void {
    if (this.commit && this.db.open && this.db.inTransaction) this.commit.run();
  }

  private read(): void {
    if (!this.begin || this.db.inTransaction) return;
    this.begin.run();
    setImmediate(() => this.refresh());
  }

  find(policy: string, hashPart: HashPart): QuorumPath | undefined {
    const [lo, hi] = hashPartRange(hashPart);
    this.read();
    const r = this.stmt.get(policy, lo, hi);
    if (!r) return undefined;
    const [outPath, narHash, narSize, refs, deriver, sigs, cacheSig, blobKey, compression, fileHash, fileSize] = r;
    return { outPath, narHash, narSize, refs, deriver, sigs, cacheSig, nar: blobKey === null ? null : { blobKey, compression, fileHash, fileSize } };
  }
}

const STORE_PREFIX = `${STORE_DIR}/`;

/**
 * Renders the narinfo, signed by the substituter's key and carrying the agreeing builders' Sigs.
 * It runs per request, so it writes the text serializeNarInfo would (same field order, References
 * and Sigs sorted, no duplicate Sig; test/substituter/narinfo.test.ts holds them equal) without
 * parsing every value again: all of them were validated when attested or uploaded. References are
 * stored sorted as full paths; their base names sort the same. The Sig stored with the decision is
 * used when it is this key's (by name); otherwise, say after a key rotation, it signs here.
 */
export function renderNarInfo(path: QuorumPath, nar: NarLocation, cacheKey: SecretKey): string {
  const ours =
    path.cacheSig !== null && path.cacheSig.startsWith(`${cacheKey.name}:`)
      ? path.cacheSig
      : signNix(cacheKey, contentFingerprint(path.outPath, path.narHash, path.narSize, path.refs));
  const references = path.refs === '' ? '' : path.refs.slice(STORE_PREFIX.length).replaceAll(`,${STORE_PREFIX}`, ' ');
  // Stored NARs have blob keys `nar/<file>`, which is also their URL relative to the cache (and so to
  // /policy/<name>/); NARs held upstream are absolute URLs, which Nix follows as they are.
  let text = `StorePath: ${path.outPath}\nURL: ${nar.blobKey}\nCompression: ${nar.compression}\nFileHash: ${nar.fileHash}\nFileSize: ${nar.fileSize}\nNarHash: ${path.narHash}\nNarSize: ${path.narSize}\nReferences: ${references}\n`;
  if (path.deriver) text += `Deriver: ${path.deriver.slice(STORE_PREFIX.length)}\n`;
  if (path.sigs === null) return `${text}Sig: ${ours}\n`;
  const sigs = path.sigs.split('\n');
  sigs.push(ours);
  sigs.sort();
  for (let i = 0; i < sigs.length; i++) if (sigs[i] !== sigs[i - 1]) text += `Sig: ${sigs[i]}\n`;
  return text;
}
