import { Router } from 'express';
import { authorizeUpload } from '../app/nars.js';
import type { BlobStore } from '../blobstore/blobStore.js';
import type { CompressionMethod } from '../blobstore/compression.js';
import { QuorumError } from '../errors.js';
import type { BuilderRegistry } from '../ledger/registry.js';
import type { Metrics } from '../metrics.js';
import { parseNarHash } from '../nix/hash.js';
import type { NarCatalog } from './catalog.js';
import { uploadNar } from './upload.js';

export interface NarRouteDeps {
  blobs: BlobStore;
  catalog: NarCatalog;
  registry: BuilderRegistry;
  compression: CompressionMethod;
  metrics: Metrics;
}

/** PUT|HEAD /api/v1/nars/<narHash>: verified NAR upload by registered builders, and existence checks. */
export function narRoutes(deps: NarRouteDeps): Router {
  const router = Router();

  router.head('/nars/:narHash', (req, res) => {
    const record = deps.catalog.get(parseNarHash(String(req.params.narHash), 'narHash'));
    if (!record) return res.status(404).end();
    res.set({ 'x-nar-size': String(record.narSize), 'x-file-size': String(record.fileSize), 'x-compression': record.compression }).status(200).end();
  });

  router.put('/nars/:narHash', async (req, res) => {
    const narHash = parseNarHash(String(req.params.narHash), 'narHash');
    const length = req.headers['content-length'];
    if (length === undefined || !/^[0-9]{1,16}$/.test(length)) {
      throw new QuorumError('bad-content-length', 'Content-Length must be the NAR size in bytes (uploads are uncompressed NARs, not chunked)', { field: 'Content-Length' });
    }
    const narSize = Number(length);
    const builder = authorizeUpload(deps.registry, req.headers.authorization, narHash, narSize);
    try {
      const { created, record } = await uploadNar(deps.blobs, deps.catalog, { narHash, narSize, body: req, compression: deps.compression, uploadedBy: builder.id });
      deps.metrics.uploads.inc({ result: created ? 'stored' : 'exists' });
      res.status(created ? 201 : 200).json({ narHash: record.narHash, narSize: record.narSize, fileHash: record.fileHash, fileSize: record.fileSize, compression: record.compression, created });
    } catch (error) {
      deps.metrics.uploads.inc({ result: 'rejected' });
      throw error;
    }
  });

  return router;
}
