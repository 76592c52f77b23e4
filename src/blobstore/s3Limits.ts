/**
 * S3's multipart bounds, apart from s3.ts so config validation does not load the AWS SDK:
 * every part but the last must be at least 5 MiB; at most 5 GiB; at most 10,000 parts.
 */
export const MIN_PART_SIZE = 5 * 1024 * 1024;
export const MAX_PART_SIZE = 5 * 1024 * 1024 * 1024;
export const MAX_PARTS = 10_000;
export const DEFAULT_PART_SIZE = 16 * 1024 * 1024;
