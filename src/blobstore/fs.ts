import { randomUUID } from 'node:crypto';
import { close, closeSync, fstatSync, openSync, read, readSync, type Dirent } from 'node:fs';
import { mkdir, open, readdir, rename, stat, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import {
  bufferChunks,
  checkRange,
  declaredSizeMismatch,
  isKeySegment,
  parseBlobKey,
  parseBlobPrefix,
  resolveRange,
  storeFailure,
  type BlobRange,
  type BlobRead,
  type BlobStat,
  type BlobStore,
} from './blobStore.js';
import { mergeListings, type Listed } from './mergeListings.js';

/** Temp files live here, inside the root so that rename into place stays on one filesystem. */
const TEMP_DIR = '.tmp';
/** Fan-out folders carry this mark, which no key segment can start with, so they never collide with a key's folders. */
const FAN_MARK = '@';
/**
 * Temp files older than this when the store opens are leftovers of a crash. Younger ones may
 * belong to another process writing into the same root right now (a CLI next to the server), so
 * they stay; a live writer touches its file on every write.
 */
const DEFAULT_STALE_TEMP_MS = 60 * 60 * 1000;
/** 1 MiB reads and writes: the 64 KiB of a default file stream mean 16,384 thread-pool round trips per GiB. */
const IO_CHUNK = 1024 * 1024;
/**
 * Reads of up to this many bytes are done synchronously in one read, like the SQLite reads next to
 * them: from the page cache that takes microseconds, less than one of the thread-pool round trips
 * (open, stat, read, read to EOF, close) a stream costs, which were most of the time spent serving a
 * small NAR. Larger reads stream, so a cold disk never holds the event loop for long.
 */
const SMALL_READ = 64 * 1024;

/**
 * The embedded default store: one file per blob under a root directory.
 *
 * Layout: key `a/b/name` is stored at `<root>/a/b/@na/name` (fan-out by the first two characters
 * of the last segment, so `nar/` holds at most ~1,000 folders of ~1,000 files per million NARs
 * instead of one huge directory). A put writes `<root>/.tmp/<uuid>`, fsyncs it, renames it into
 * place and fsyncs the folders it changed, so a crash leaves either the old object or the new one.
 */
export class FsBlobStore implements BlobStore {
  readonly describe: string;
  private readonly tempDir: string;
  /** Temp files of this process's puts in flight: never leftovers, however slowly their client sends. */
  private readonly writing = new Set<string>();

  private constructor(
    readonly root: string,
    private readonly staleTempMs: number,
  ) {
    this.describe = `fs:${root}`;
    this.tempDir = join(root, TEMP_DIR);
  }

  /** Opens (creating if needed) a store rooted at `root` and removes stale temp files of crashed writes. */
  static async open(root: string, options: { staleTempMs?: number } = {}): Promise<FsBlobStore> {
    const store = new FsBlobStore(resolve(root), options.staleTempMs ?? DEFAULT_STALE_TEMP_MS);
    await store.io('create the store folder', () => mkdir(store.tempDir, { recursive: true }));
    await store.removeLeftovers();
    return store;
  }

  async put(key: string, body: Readable, options: { size?: number } = {}): Promise<void> {
    parseBlobKey(key);
    const target = this.pathOf(key);
    const temp = join(this.tempDir, randomUUID());
    let handle: FileHandle | undefined;
    this.writing.add(temp);
    try {
      handle = await this.io('create a temp file', () => open(temp, 'wx', 0o644));
      let size = 0;
      let batch: Buffer[] = [];
      let batched = 0;
      const flush = async () => {
        await this.io(`write ${key}`, () => writeAll(handle!, batch));
        batch = [];
        batched = 0;
      };
      // Errors of the body itself propagate unchanged (see BlobStore); only our I/O is wrapped.
      for await (const chunk of bufferChunks(body)) {
        size += chunk.length;
        batch.push(chunk);
        batched += chunk.length;
        if (batched >= IO_CHUNK) await flush();
      }
      await flush();
      if (options.size !== undefined && size !== options.size) throw declaredSizeMismatch(key, options.size, size);
      await this.io(`fsync ${key}`, () => handle!.sync());
      await handle.close();
      handle = undefined;
      const folder = dirname(target);
      const created = await this.io(`create the folder of ${key}`, () => mkdir(folder, { recursive: true }));
      await this.io(`rename ${key} into place`, () => rename(temp, target));
      await this.io(`fsync the folders of ${key}`, () => syncFolders(folder, created));
    } catch (err) {
      body.destroy();
      await handle?.close().catch(() => undefined);
      await unlink(temp).catch(() => undefined);
      throw err;
    } finally {
      this.writing.delete(temp);
    }
  }

  async get(key: string, range?: BlobRange): Promise<BlobRead | null> {
    parseBlobKey(key);
    checkRange(range);
    const path = this.pathOf(key);
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch (err) {
      if (isAbsent(err)) return null;
      throw storeFailure(this.describe, `open ${key}`, err);
    }
    // The stream closes the file when it ends or is destroyed; otherwise it is closed here.
    let streaming = false;
    try {
      // Size and bytes come from the same open file: a concurrent put renames a new inode into
      // place and cannot change what this read returns.
      const { size } = fstatSync(fd);
      const { start, end } = resolveRange(range, size);
      if (end - start + 1 <= SMALL_READ) {
        const bytes = readAt(fd, start, end - start + 1);
        return { body: bufferBody(bytes), size, start, end, bytes };
      }
      const body = new FileBody(fd, start, end);
      streaming = true;
      return { body, size, start, end, recycle: (chunk) => body.recycle(chunk) };
    } catch (err) {
      throw storeFailure(this.describe, `read ${key}`, err);
    } finally {
      if (!streaming) closeSync(fd);
    }
  }

  async head(key: string): Promise<BlobStat | null> {
    parseBlobKey(key);
    try {
      const info = await stat(this.pathOf(key));
      return { size: info.size };
    } catch (err) {
      if (isAbsent(err)) return null;
      throw storeFailure(this.describe, `stat ${key}`, err);
    }
  }

  async delete(key: string): Promise<void> {
    parseBlobKey(key);
    const path = this.pathOf(key);
    try {
      await unlink(path);
    } catch (err) {
      if (isAbsent(err)) return;
      throw storeFailure(this.describe, `delete ${key}`, err);
    }
    await this.io(`fsync the folder of ${key}`, () => syncFolders(dirname(path), undefined));
  }

  async *list(prefix?: string): AsyncGenerator<Listed> {
    const want = parseBlobPrefix(prefix);
    // Folders named by the prefix's complete segments are the only place its keys can be.
    const base = want.slice(0, want.lastIndexOf('/') + 1);
    yield* this.walk(join(this.root, ...base.split('/').filter(Boolean)), base, want);
  }

  /**
   * Keys under `folder` (whose keys all start with `keyPrefix`) in ascending order. A folder holds
   * fan-out folders (leaves of this level) and key folders (deeper levels). Fan-out folders cover
   * disjoint, ordered key ranges, and so do key folders (sorted by `name/`), so each kind read in
   * order is sorted and one two-way merge orders the level with one fan-out folder in memory.
   */
  private async *walk(folder: string, keyPrefix: string, want: string): AsyncGenerator<Listed> {
    const entries = await this.readFolder(folder);
    const overlaps = (start: string): boolean => start.startsWith(want) || want.startsWith(start);
    const fans: string[] = [];
    const subfolders: string[] = [];
    for (const entry of entries) {
      if (!entry.isDirectory()) continue;
      if (entry.name.startsWith(FAN_MARK)) {
        if (overlaps(keyPrefix + entry.name.slice(FAN_MARK.length))) fans.push(entry.name);
      } else if (isKeySegment(entry.name) && overlaps(`${keyPrefix}${entry.name}/`)) {
        subfolders.push(entry.name);
      }
    }
    fans.sort(byString);
    subfolders.sort((a, b) => byString(`${a}/`, `${b}/`));
    yield* mergeListings([this.leaves(folder, fans, keyPrefix, want), this.subtrees(folder, subfolders, keyPrefix, want)]);
  }

  private async *leaves(folder: string, fans: string[], keyPrefix: string, want: string): AsyncGenerator<Listed> {
    for (const fan of fans) {
      const names = (await this.readFolder(join(folder, fan)))
        .filter((entry) => entry.isFile() && isKeySegment(entry.name) && fanOf(entry.name) === fan)
        .map((entry) => entry.name)
        .sort(byString);
      for (const name of names) {
        const key = keyPrefix + name;
        if (!key.startsWith(want)) continue;
        try {
          yield { key, size: (await stat(join(folder, fan, name))).size };
        } catch (err) {
          if (!isAbsent(err)) throw storeFailure(this.describe, `stat ${key}`, err);
          // Deleted while listing: it is simply not part of the listing.
        }
      }
    }
  }

  private async *subtrees(folder: string, subfolders: string[], keyPrefix: string, want: string): AsyncGenerator<Listed> {
    for (const name of subfolders) yield* this.walk(join(folder, name), `${keyPrefix}${name}/`, want);
  }

  private async readFolder(folder: string): Promise<Dirent[]> {
    try {
      return await readdir(folder, { withFileTypes: true });
    } catch (err) {
      if (isAbsent(err)) return [];
      throw storeFailure(this.describe, `list ${folder}`, err);
    }
  }

  private pathOf(key: string): string {
    const segments = key.split('/');
    const leaf = segments.pop()!;
    return join(this.root, ...segments, fanOf(leaf), leaf);
  }

  /**
   * Removes temp files of puts that a crash (or a kill) interrupted: older than the stale age and not
   * one of this process's puts in flight. Younger ones may belong to another process writing into
   * the same root right now (a CLI next to the server). Returns how many went.
   */
  async removeLeftovers(): Promise<number> {
    const cutoff = Date.now() - this.staleTempMs;
    let removed = 0;
    for (const entry of await this.readFolder(this.tempDir)) {
      const path = join(this.tempDir, entry.name);
      if (this.writing.has(path)) continue;
      const info = await stat(path).catch(() => undefined);
      if (info && info.mtimeMs < cutoff) {
        // Another process opening the same root may remove it first.
        await unlink(path).then(
          () => removed++,
          (err: unknown) => {
            if (!isAbsent(err)) throw storeFailure(this.describe, `remove the stale temp file ${path}`, err);
          },
        );
      }
    }
    return removed;
  }

  private async io<T>(action: string, operation: () => Promise<T>): Promise<T> {
    try {
      return await operation();
    } catch (err) {
      throw storeFailure(this.describe, action, err);
    }
  }
}

function fanOf(leaf: string): string {
  return FAN_MARK + leaf.slice(0, 2);
}

function byString(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function isAbsent(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

/** Writes `chunks` in order at the file position; writev may write less than asked, so it continues where it stopped. */
async function writeAll(handle: FileHandle, chunks: Buffer[]): Promise<void> {
  let pending = chunks;
  while (pending.length > 0) {
    let { bytesWritten } = await handle.writev(pending);
    let done = 0;
    while (done < pending.length && bytesWritten >= pending[done]!.length) bytesWritten -= pending[done++]!.length;
    pending = pending.slice(done);
    if (bytesWritten > 0) pending[0] = pending[0]!.subarray(bytesWritten);
  }
}

/** `length` bytes at `position`; a file that ends before them changed under the read. */
function readAt(fd: number, position: number, length: number): Buffer {
  const bytes = Buffer.allocUnsafe(length);
  let got = 0;
  while (got < length) {
    const n = readSync(fd, bytes, got, length - got, position + got);
    if (n === 0) throw new Error(`the file ended after ${got} of ${length} bytes`);
    got += n;
  }
  return bytes;
}

/** Chunks handed back that a FileBody keeps for its next reads: as many as a pipeline holds at once. */
const SPARE_CHUNKS = 4;

/**
 * Bytes `start`..`end` (inclusive) of an open file, read in IO_CHUNK pieces, closing the file when
 * done or destroyed. Chunks handed back through `recycle` are read into again: fresh 1 MiB buffers
 * at 1-2 GB/s are external memory that V8 frees only in full garbage collections, which then took
 * a third of the core serving a large NAR.
 */
class FileBody extends Readable {
  private position: number;
  private readonly spare: Buffer[] = [];
  private reading = false;
  private closeAfterRead: (() => void) | undefined;

  constructor(
    private readonly fd: number,
    start: number,
    private readonly end: number,
  ) {
    super({ highWaterMark: IO_CHUNK });
    this.position = start;
  }

  recycle(chunk: Buffer): void {
    // Only whole buffers this class allocates (chunks are views at their start).
    if (chunk.byteOffset === 0 && chunk.buffer.byteLength === IO_CHUNK && this.spare.length < SPARE_CHUNKS) this.spare.push(Buffer.from(chunk.buffer));
  }

  override _read(): void {
    const length = Math.min(IO_CHUNK, this.end + 1 - this.position);
    if (length <= 0) {
      this.push(null);
      return;
    }
    const buffer = this.spare.pop() ?? Buffer.allocUnsafeSlow(IO_CHUNK);
    this.reading = true;
    read(this.fd, buffer, 0, length, this.position, (err, n) => {
      this.reading = false;
      if (this.closeAfterRead) return this.closeAfterRead();
      if (err) return this.destroy(err);
      if (n === 0) return this.destroy(new Error(`the file ended at byte ${this.position}, before byte ${this.end}`));
      this.position += n;
      this.push(buffer.subarray(0, n));
    });
  }

  override _destroy(err: Error | null, done: (err?: Error | null) => void): void {
    // A read still in the thread pool must not find the descriptor closed (or reused).
    const closeFile = () => close(this.fd, (closeErr) => done(err ?? closeErr));
    if (this.reading) this.closeAfterRead = closeFile;
    else closeFile();
  }
}

/** A stream of one Buffer already in memory. */
function bufferBody(bytes: Buffer): Readable {
  return new Readable({
    read() {
      this.push(bytes);
      this.push(null);
    },
  });
}

/**
 * Makes a rename or unlink in `folder` durable: fsync the folder and, when `created` (the first
 * folder `mkdir -p` made) is set, every new folder above it up to its parent, whose new entries
 * would otherwise be lost on a crash.
 */
async function syncFolders(folder: string, created: string | undefined): Promise<void> {
  let current = folder;
  await syncFolder(current);
  while (created !== undefined && current !== dirname(created)) {
    current = dirname(current);
    await syncFolder(current);
  }
}

async function syncFolder(folder: string): Promise<void> {
  const handle = await open(folder, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
