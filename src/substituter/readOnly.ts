import { Router } from 'express';
import { QuorumError } from '../errors.js';
import { sendError } from '../http/errors.js';

/** Files `nix copy --to <binary cache>` writes (src/libstore/binary-cache-store.cc), at the root and under /policy/<name>/. */
const CACHE_FILE = /^\/(?:policy\/[A-Za-z0-9._-]{1,64}\/)?(?:nix-cache-info|nar\/.+|[0-9a-df-np-sv-z]{32}\.(?:narinfo|ls)|log\/.+|realisations\/.+|debuginfo\/.+)$/;

/** Short: Nix prints a response body under 1 KiB with its error. */
const NOT_AN_UPLOAD_PATH =
  'this binary cache is read-only: `nix copy --to` cannot add paths to it; a path is served once enough builders attested it: on a registered builder, attest and upload with `nix-quorum submit --upload PATH...`';

/**
 * 405 for anything but GET and HEAD on a binary cache file, instead of the 404 that made `nix copy
 * --to` look like a missing route. Attestations and NARs come in through /api/v1 only.
 */
export function readOnlyCacheRoutes(): Router {
  const router = Router();
  router.all(CACHE_FILE, (req, res, next) => {
    if (req.method === 'GET' || req.method === 'HEAD') return next();
    res.setHeader('allow', 'GET, HEAD');
    sendError(res, new QuorumError('method-not-allowed', NOT_AN_UPLOAD_PATH, { field: 'method' }));
  });
  return router;
}
