import type { Statement } from 'better-sqlite3';
import { promisify } from 'node:util';
import { brotliCompress, brotliDecompress, constants } from 'node:zlib';
import type { Db } from '../db.js';
import type { NarEntry } from '../nix/nar/listing.js';

const compress = promisify(brotliCompress);
const decompress = promisify(brotliDecompress);

/** The nar_listings table: each stored NAR's files, written with its catalogue row. */
export class NarListings {
  private readonly insert: Statement<[string, number, Buffer]>;
  private readonly select: Statement<[string], Buffer>;

  constructor(readonly db: Db) {
    this.insert = db.prepare('INSERT OR REPLACE INTO nar_listings (nar_hash, files, listing) VALUES (?, ?, ?)');
    this.select = db.prepare<[string], Buffer>('SELECT listing FROM nar_listings WHERE nar_hash = ?').pluck();
  }

  /** Compressed off the event loop (a NAR of many files lists to megabytes of JSON); store it with put(). */
  static encode(entries: readonly NarEntry[]): Promise<Buffer> {
    return compress(Buffer.from(JSON.stringify(entries)), { params: { [constants.BROTLI_PARAM_QUALITY]: 5 } });
  }

  put(narHash: string, files: number, encoded: Buffer): void {
    this.insert.run(narHash, files, encoded);
  }

  /** The NAR's files, or undefined when none were recorded (uploaded before listings were, or too many files). */
  async get(narHash: string): Promise<NarEntry[] | undefined> {
    const blob = this.select.get(narHash);
    return blob === undefined ? undefined : (JSON.parse((await decompress(blob)).toString('utf8')) as NarEntry[]);
  }
}
