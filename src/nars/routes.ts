import { Router } from 'express';
import { gatedBuilder } from '../api/builderGate.js';
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
    const narSize = Number(req.headers['content-length']);
    const builder = gatedBuilder(req);
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
