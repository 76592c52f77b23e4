import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { QuorumError } from '../../errors.js';
import { narHashFromDigest } from '../hash.js';
import type { NarDigest } from './hashPath.js';
import type { NarEntry } from './listing.js';
import {
  invalidNameReason,
  MAX_DEPTH,
  MAX_NAME_BYTES,
  MAX_TAG_BYTES,
  MAX_TARGET_BYTES,
  NAR_MAGIC,
  paddingFor,
  showBytes,
} from './format.js';

/** Which string of the grammar (see format.ts) comes next. */
type Expect =
  | 'magic'
  | 'open' // "(" starting a node
  | 'type-keyword'
  | 'type'
  | 'regular-tag' // "executable" or "contents"
  | 'executable-value'
  | 'contents-keyword' // "contents" after "executable" ""
  | 'close' // ")" ending a regular file or symlink node
  | 'directory-tag' // "entry" or ")"
  | 'entry-open'
  | 'name-keyword'
  | 'name'
  | 'node-keyword'
  | 'entry-close'
  | 'target-keyword'
  | 'target'
  | 'end';

/** What the bytes being collected are. */
type Phase = 'length' | 'body' | 'contents-size' | 'contents' | 'contents-padding';

const TAGS: Partial<Record<Expect, string>> = {
  open: '(',
  'type-keyword': 'type',
  'contents-keyword': 'contents',
  close: ')',
  'entry-open': '(',
  'name-keyword': 'name',
  'node-keyword': 'node',
  'entry-close': ')',
  'target-keyword': 'target',
};

const DESCRIBE: Record<Expect, string> = {
  magic: `the magic "${NAR_MAGIC}"`,
  open: '"("',
  'type-keyword': '"type"',
  type: 'a file type',
  'regular-tag': '"executable" or "contents"',
  'executable-value': 'the empty value after "executable"',
  'contents-keyword': '"contents"',
  close: '")"',
  'directory-tag': '"entry" or ")"',
  'entry-open': '"("',
  'name-keyword': '"name"',
  name: 'an entry name',
  'node-keyword': '"node"',
  'entry-close': '")"',
  'target-keyword': '"target"',
  target: 'a symlink target',
  end: 'nothing',
};

function maxLength(expect: Expect): number {
  switch (expect) {
    case 'magic':
      return NAR_MAGIC.length;
    case 'executable-value':
      return 0;
    case 'name':
      return MAX_NAME_BYTES;
    case 'target':
      return MAX_TARGET_BYTES;
    default:
      return MAX_TAG_BYTES;
  }
}

/** A listing keeps every file in memory: a NAR with more files than this gets none (it is still verified). */
export const MAX_LISTED_ENTRIES = 500_000;

export interface NarParserOptions {
  /** Record the NAR's files (`listing`). */
  listing?: boolean;
  /** No listing for a NAR of more files than this (default MAX_LISTED_ENTRIES). */
  maxListed?: number;
}

/** The largest string body plus padding we ever collect. */
const MAX_COLLECT = MAX_TARGET_BYTES + paddingFor(MAX_TARGET_BYTES);

/**
 * A push parser that checks a NAR against Nix's grammar and limits while hashing it, in
 * constant memory: file contents are only counted and hashed, never kept. Feed it with
 * update(), then call finish(). The first problem throws a QuorumError 'bad-nar' naming the
 * byte offset; after that the parser stays failed.
 *
 * It is strict where old Nix versions were lenient (field order, duplicate fields): only the
 * canonical form that dumping produces is accepted, so a valid NAR has exactly one hash.
 *
 * With `listing`, it also records every file as it passes (listing.ts): path, type, size, offset of
 * the contents in the NAR and their SHA-256. That costs a second hash pass over file contents.
 */
export class NarParser {
  readonly #hash = createHash('sha256');
  /** Files in NAR order (depth first, names sorted), when a listing was asked for and the NAR is not too big to list. */
  #entries: NarEntry[] | undefined;
  /** The regular file whose contents are being read, and their hash. */
  #file: { entry: NarEntry; hash: Hash } | undefined;
  /** Bytes consumed so far, i.e. the offset of the next byte. */
  #offset = 0;
  #expect: Expect = 'magic';
  #phase: Phase = 'length';
  /** Bytes of the current length, string body or padding collected so far. */
  readonly #collected = Buffer.alloc(MAX_COLLECT);
  #have = 0;
  #need = 8;
  /** Offset where the current string (its length field) starts, for messages. */
  #itemStart = 0;
  /** Length of the current string, or size of the current file's contents. */
  #itemLength = 0;
  #contentsLeft = 0;
  /** Last entry name of each open directory, innermost last; its length is the current depth. */
  readonly #directories: Buffer[] = [];
  #failure: QuorumError | undefined;
  #result: NarDigest | undefined;

  readonly #maxListed: number;

  constructor(options: NarParserOptions = {}) {
    if (options.listing) this.#entries = [];
    this.#maxListed = options.maxListed ?? MAX_LISTED_ENTRIES;
  }

  /** The files of the NAR, once finish() succeeded, if the parser was made with `listing` (none past MAX_LISTED_ENTRIES files). */
  get listing(): readonly NarEntry[] | undefined {
    return this.#result ? this.#entries : undefined;
  }

  update(chunk: Uint8Array): void {
    if (this.#failure) throw this.#failure;
    if (this.#result) throw new QuorumError('bad-nar', 'NarParser.update() called after finish()');
    try {
      this.#consume(chunk);
    } catch (err) {
      if (err instanceof QuorumError) this.#failure = err;
      throw err;
    }
    this.#hash.update(chunk);
  }

  /** Ends the input; throws if the NAR is incomplete. */
  finish(): NarDigest {
    if (this.#failure) throw this.#failure;
    if (this.#result) return this.#result;
    if (this.#expect !== 'end') {
      this.#failure = this.#bad(`NAR is truncated: input ends at byte ${this.#offset} ${this.#where()}`);
      throw this.#failure;
    }
    this.#result = { narHash: narHashFromDigest(this.#hash.digest()), narSize: this.#offset };
    return this.#result;
  }

  #where(): string {
    if (this.#phase === 'contents' || this.#phase === 'contents-size' || this.#phase === 'contents-padding') {
      return 'inside the contents of a regular file';
    }
    if (this.#phase === 'body') return `inside ${DESCRIBE[this.#expect]} (a string of ${this.#itemLength} bytes at byte ${this.#itemStart})`;
    return `while expecting ${DESCRIBE[this.#expect]}`;
  }

  #consume(chunk: Uint8Array): void {
    let pos = 0;
    while (pos < chunk.length) {
      if (this.#phase === 'contents') {
        const n = Math.min(this.#contentsLeft, chunk.length - pos);
        this.#file?.hash.update(chunk.subarray(pos, pos + n));
        pos += n;
        this.#offset += n;
        this.#contentsLeft -= n;
        if (this.#contentsLeft === 0) this.#afterContents();
        continue;
      }
      if (this.#expect === 'end') {
        throw this.#bad(`trailing data at byte ${this.#offset} after the end of the NAR`);
      }
      const n = Math.min(this.#need - this.#have, chunk.length - pos);
      this.#collected.set(chunk.subarray(pos, pos + n), this.#have);
      this.#have += n;
      pos += n;
      this.#offset += n;
      if (this.#have === this.#need) {
        this.#have = 0;
        this.#complete();
      }
    }
  }

  /** The bytes for the current phase are all in #collected. */
  #complete(): void {
    switch (this.#phase) {
      case 'length': {
        this.#itemStart = this.#offset - 8;
        const length = this.#u64();
        const max = maxLength(this.#expect);
        if (length > max) throw this.#tooLong(max);
        this.#itemLength = length;
        if (length === 0) {
          this.#onString(Buffer.alloc(0));
        } else {
          this.#phase = 'body';
          this.#need = length + paddingFor(length);
        }
        return;
      }
      case 'body': {
        this.#checkPadding(this.#itemLength, this.#need);
        this.#phase = 'length';
        this.#need = 8;
        this.#onString(this.#collected.subarray(0, this.#itemLength));
        return;
      }
      case 'contents-size': {
        const size = this.#u64();
        if (size > Number.MAX_SAFE_INTEGER) {
          throw this.#bad(`file size ${this.#u64Text()} at byte ${this.#itemStart} is too large`);
        }
        this.#contentsLeft = size;
        this.#itemLength = size;
        if (this.#entries) {
          const entry = this.#entries[this.#entries.length - 1]!;
          entry.size = size;
          entry.narOffset = this.#offset;
          this.#file = { entry, hash: createHash('sha256') };
        }
        if (size > 0) this.#phase = 'contents';
        else this.#afterContents();
        return;
      }
      case 'contents-padding': {
        this.#checkPadding(0, this.#need);
        this.#expect = 'close';
        this.#phase = 'length';
        this.#need = 8;
        return;
      }
      case 'contents':
        throw new Error('unreachable: contents are skipped, not collected');
    }
  }

  #afterContents(): void {
    if (this.#file) {
      this.#file.entry.sha256 = this.#file.hash.digest('hex');
      this.#file = undefined;
    }
    const padding = paddingFor(this.#itemLength);
    if (padding > 0) {
      this.#phase = 'contents-padding';
      this.#need = padding;
    } else {
      this.#expect = 'close';
      this.#phase = 'length';
      this.#need = 8;
    }
  }

  /** A complete string arrived where #expect says; check it and move the grammar on. */
  #onString(value: Buffer): void {
    const at = this.#itemStart;
    const tag = TAGS[this.#expect];
    if (tag !== undefined) {
      if (value.toString('latin1') !== tag) throw this.#unexpected(value);
    }
    switch (this.#expect) {
      case 'magic':
        if (value.toString('latin1') !== NAR_MAGIC) {
          throw this.#bad(`not a NAR: expected the magic "${NAR_MAGIC}" at byte ${at}, got ${showBytes(value)}`);
        }
        this.#expect = 'open';
        return;
      case 'open':
        this.#expect = 'type-keyword';
        return;
      case 'type-keyword':
        this.#expect = 'type';
        return;
      case 'type': {
        const type = value.toString('latin1');
        if (type === 'regular') {
          this.#record('regular');
          this.#expect = 'regular-tag';
        } else if (type === 'symlink') {
          this.#record('symlink');
          this.#expect = 'target-keyword';
        } else if (type === 'directory') {
          this.#record('directory');
          this.#directories.push(Buffer.alloc(0));
          this.#expect = 'directory-tag';
        } else {
          throw this.#bad(`unknown file type ${showBytes(value)} at byte ${at} (expected "regular", "directory" or "symlink")`);
        }
        return;
      }
      case 'regular-tag': {
        const text = value.toString('latin1');
        if (text === 'executable') this.#expect = 'executable-value';
        else if (text === 'contents') this.#startContents();
        else throw this.#unexpected(value);
        return;
      }
      case 'executable-value':
        if (this.#entries) this.#entries[this.#entries.length - 1]!.executable = true;
        this.#expect = 'contents-keyword';
        return;
      case 'contents-keyword':
        this.#startContents();
        return;
      case 'close':
        this.#nodeDone();
        return;
      case 'directory-tag': {
        const text = value.toString('latin1');
        if (text === 'entry') this.#expect = 'entry-open';
        else if (text === ')') {
          this.#directories.pop();
          this.#nodeDone();
        } else throw this.#unexpected(value);
        return;
      }
      case 'entry-open':
        this.#expect = 'name-keyword';
        return;
      case 'name-keyword':
        this.#expect = 'name';
        return;
      case 'name': {
        const reason = invalidNameReason(value);
        if (reason) throw this.#bad(`invalid entry name ${showBytes(value)} at byte ${at}: ${reason}`);
        const depth = this.#directories.length;
        const previous = this.#directories[depth - 1]!;
        const order = Buffer.compare(value, previous);
        if (order === 0) throw this.#bad(`duplicate entry name ${showBytes(value)} at byte ${at}`);
        if (order < 0) {
          throw this.#bad(`directory entries not sorted at byte ${at}: ${showBytes(value)} comes after ${showBytes(previous)} (byte order required)`);
        }
        this.#directories[depth - 1] = Buffer.from(value);
        this.#expect = 'node-keyword';
        return;
      }
      case 'node-keyword':
        // The entry's node sits one level below the innermost open directory.
        if (this.#directories.length >= MAX_DEPTH) {
          throw this.#bad(`directory nesting at byte ${at} exceeds the maximum NAR depth of ${MAX_DEPTH}`);
        }
        this.#expect = 'open';
        return;
      case 'entry-close':
        this.#expect = 'directory-tag';
        return;
      case 'target-keyword':
        this.#expect = 'target';
        return;
      case 'target':
        if (value.length === 0) throw this.#bad(`empty symlink target at byte ${at}`);
        if (value.includes(0)) throw this.#bad(`symlink target ${showBytes(value)} at byte ${at} contains a NUL byte`);
        if (this.#entries) this.#entries[this.#entries.length - 1]!.target = value.toString('utf8');
        this.#expect = 'close';
        return;
      case 'end':
        throw new Error('unreachable: trailing data is refused before it is collected');
    }
  }

  /** A node of `type` starts at the current path: the last entry name of every open directory. */
  #record(type: NarEntry['type']): void {
    if (!this.#entries) return;
    if (this.#entries.length >= this.#maxListed) {
      this.#entries = undefined;
      this.#file = undefined;
      return;
    }
    this.#entries.push({ path: this.#directories.map((name) => name.toString('utf8')).join('/'), type });
  }

  #startContents(): void {
    this.#phase = 'contents-size';
    this.#need = 8;
    this.#itemStart = this.#offset;
  }

  /** A node's ")" was read: back to the enclosing entry, or the end of the NAR. */
  #nodeDone(): void {
    this.#expect = this.#directories.length > 0 ? 'entry-close' : 'end';
  }

  #u64(): number {
    return this.#collected.readUInt32LE(4) * 2 ** 32 + this.#collected.readUInt32LE(0);
  }

  #u64Text(): string {
    return this.#collected.readBigUInt64LE(0).toString();
  }

  #checkPadding(from: number, to: number): void {
    for (let i = from; i < to; i++) {
      if (this.#collected[i] !== 0) {
        const at = this.#offset - to + i;
        throw this.#bad(`nonzero padding byte 0x${this.#collected[i]!.toString(16).padStart(2, '0')} at byte ${at}`);
      }
    }
  }

  #tooLong(max: number): QuorumError {
    const at = this.#itemStart;
    const what = DESCRIBE[this.#expect];
    if (this.#expect === 'magic') return this.#bad(`not a NAR: expected the magic "${NAR_MAGIC}" at byte 0, got a string length of ${this.#u64Text()}`);
    if (this.#expect === 'executable-value') return this.#bad(`the "executable" marker at byte ${at} must have an empty value, got ${this.#u64Text()} bytes`);
    return this.#bad(`string of ${this.#u64Text()} bytes at byte ${at} is longer than the ${max}-byte limit for ${what}`);
  }

  #unexpected(value: Buffer): QuorumError {
    const at = this.#itemStart;
    return this.#bad(`expected ${DESCRIBE[this.#expect]} at byte ${at}, got ${showBytes(value)}`);
  }

  #bad(message: string): QuorumError {
    return new QuorumError('bad-nar', `bad NAR: ${message}`, { field: 'nar' });
  }
}

/** Validates a NAR stream and returns its narHash and narSize; throws QuorumError 'bad-nar'. */
export async function verifyNar(source: AsyncIterable<Uint8Array>): Promise<NarDigest> {
  const parser = new NarParser();
  for await (const chunk of source) parser.update(chunk);
  return parser.finish();
}

/**
 * Pass-through stream that validates and hashes the NAR flowing through it, so an uploader can
 * pipe NAR -> verifier -> compressor -> storage. A chunk is passed on only after it checked out;
 * on invalid input the stream errors with QuorumError 'bad-nar'. `result` is set once 'finish'
 * has been emitted.
 */
export class NarVerifier extends Transform {
  readonly #parser: NarParser;
  #result: NarDigest | undefined;

  constructor(options: NarParserOptions = {}) {
    super();
    this.#parser = new NarParser(options);
  }

  /** The NAR's files (see NarParser), after 'finish', if made with `listing`. */
  get listing(): readonly NarEntry[] | undefined {
    return this.#parser.listing;
  }

  /** narHash and narSize, available after 'finish'. */
  get result(): NarDigest | undefined {
    return this.#result;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    try {
      this.#parser.update(chunk);
    } catch (err) {
      callback(err as Error);
      return;
    }
    callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    try {
      this.#result = this.#parser.finish();
    } catch (err) {
      callback(err as Error);
      return;
    }
    callback();
  }
}
