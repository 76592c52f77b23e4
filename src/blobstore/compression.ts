import { PassThrough, type Transform } from 'node:stream';
import { constants, createBrotliCompress, createBrotliDecompress, createGunzip, createGzip } from 'node:zlib';
import { QuorumError } from '../errors.js';

/**
 * How NARs are compressed at rest, named as in a narinfo's `Compression:` field. Nix 2.8
 * (src/libutil/compression.cc) decompresses `none` and `br` itself and everything else through
 * libarchive, which detects gzip, xz, bzip2, zstd… by content. Node's zlib can write gzip and
 * brotli; xz and zstd would need a new dependency, so they are not offered.
 */
export const COMPRESSION_METHODS = ['none', 'gzip', 'br'] as const;
export type CompressionMethod = (typeof COMPRESSION_METHODS)[number];

/** Valid levels per method and the level used when none is given. See docs/benchmarks.md. */
export const COMPRESSION_LEVELS: Record<Exclude<CompressionMethod, 'none'>, { min: number; max: number; default: number }> = {
  gzip: { min: 1, max: 9, default: 6 },
  br: { min: 0, max: 11, default: 5 },
};

/**
 * The default at rest: brotli 5 compresses NARs about as fast as gzip -6 (~40 MB/s per core) into
 * files 16% smaller, 17 times faster than xz -6 (Nix's default) for files 24% larger; brotli 6
 * saves 2% more for a third more CPU. Figures in docs/benchmarks.md, "Compression".
 */
export const DEFAULT_COMPRESSION: CompressionMethod = 'br';

export function isCompressionMethod(text: string): text is CompressionMethod {
  return (COMPRESSION_METHODS as readonly string[]).includes(text);
}

export function parseCompressionMethod(text: string, field = 'compression'): CompressionMethod {
  if (!isCompressionMethod(text)) {
    throw new QuorumError('bad-compression', `${field} must be one of ${COMPRESSION_METHODS.join(', ')}, got ${JSON.stringify(text)}`, { field });
  }
  return text;
}

function checkLevel(method: CompressionMethod, level: number | undefined): number | undefined {
  if (method === 'none') return undefined;
  const bounds = COMPRESSION_LEVELS[method];
  if (level === undefined) return bounds.default;
  if (!Number.isInteger(level) || level < bounds.min || level > bounds.max) {
    throw new QuorumError('bad-compression', `${method} level must be an integer from ${bounds.min} to ${bounds.max}, got ${level}`, { field: 'level' });
  }
  return level;
}

/** A transform that compresses with `method` (`none` passes bytes through). */
export function compressStream(method: CompressionMethod, level?: number): Transform {
  const checked = checkLevel(method, level);
  switch (method) {
    case 'none':
      return new PassThrough();
    case 'gzip':
      return createGzip({ level: checked });
    case 'br':
      return createBrotliCompress({ params: { [constants.BROTLI_PARAM_QUALITY]: checked!, [constants.BROTLI_PARAM_MODE]: constants.BROTLI_MODE_GENERIC } });
  }
}

/** The inverse of compressStream. */
export function decompressStream(method: CompressionMethod): Transform {
  switch (method) {
    case 'none':
      return new PassThrough();
    case 'gzip':
      return createGunzip();
    case 'br':
      return createBrotliDecompress();
  }
}

/**
 * What the method adds after `.nar` in a blob key (`nar/<nix32>.nar.br`), following Nix's own
 * naming for files in a binary cache; it is cosmetic, the narinfo's `Compression:` is what counts.
 */
export function fileExtension(method: CompressionMethod): string {
  switch (method) {
    case 'none':
      return '';
    case 'gzip':
      return '.gz';
    case 'br':
      return '.br';
  }
}
