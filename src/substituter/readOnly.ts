import { Router } from 'express';

/** Files `nix copy --to <binary cache>` writes (src/libstore/binary-cache-store.cc), at the root and under /policy/<name>/. */
const CACHE_FILE = /^\/(?:policy\/[A-Za-z0-9._-]{1,64}\/)?(?:nix-cache-info|nar\/.+|[0-9a-df-np-sv-z]{32}\.(?:narinfo|ls)|log\/.+|realisations\/.+|debuginfo\/.+)$/;

/** Short: Nix prints a response body under 1 KiB with its error. */
export const NOT_AN_UPLOAD_PATH = [
  'nix-quorum: this binary cache is read-only; `nix copy --to` cannot add paths to it.',
  'A path is served once enough builders attested it. On a registered builder, attest and upload with:',
  '  nix-quorum submit --upload PATH...',
  '',
].join('\n');

/**
 * 405 for anything but GET and HEAD on a binary cache file, instead of the 404 that made `nix copy
 * --to` look like a missing route. Attestations and NARs come in through /api/v1 only.
 */
export function readOnlyCacheRoutes(): Router {
  const router = Router();
  router.all(CACHE_FILE, (req, res, next) => {
    if (req.method === 'GET' || req.method === 'HEAD') return next();
    res.status(405).set('allow', 'GET, HEAD').type('text/plain; charset=utf-8').send(NOT_AN_UPLOAD_PATH);
  });
  return router;
}
