import { Router } from 'express';
import { gatedBuilder } from '../api/builderGate.js';
import type { BlobStore } from '../blobstore/blobStore.js';
import { HashCheck, sendChecked } from '../blobstore/hashCheck.js';
import { decompressStream, parseCompressionMethod, type CompressionMethod } from '../blobstore/compression.js';
import { QuorumError } from '../errors.js';
import type { BuilderRegistry } from '../ledger/registry.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { parseNarHash } from '../nix/hash.js';
import { isUpstreamKey, type NarCatalog } from './catalog.js';
import type { NarListings } from './listings.js';
import type { MissingNars } from './missing.js';
import { uploadNar } from './upload.js';

export interface NarRouteDeps {
  blobs: BlobStore;
  catalog: NarCatalog;
  listings: NarListings;
  registry: BuilderRegistry;
  compression: CompressionMethod;
  metrics: Metrics;
  logger: Logger;
  missing: MissingNars;
}

/**
 * PUT|HEAD|GET /api/v1/nars/<narHash>: verified NAR upload by registered builders, existence checks,
 * and the stored NAR itself, uncompressed, whether or not its path has quorum (to compare what
 * builders who disagree produced; Nix never substitutes from here, there is no narinfo).
 */
export function narRoutes(deps: NarRouteDeps): Router {
  const router = Router();

  router.head('/nars/:narHash', (req, res) => {
    const record = deps.catalog.get(parseNarHash(String(req.params.narHash), 'narHash'));
    if (!record) return res.status(404).end();
    res.set({ 'x-nar-size': String(record.narSize), 'x-file-size': String(record.fileSize), 'x-compression': record.compression }).status(200).end();
  });

  router.get('/nars/:narHash', async (req, res) => {
    const narHash = parseNarHash(String(req.params.narHash), 'narHash');
    const record = deps.catalog.get(narHash);
    if (!record) throw new QuorumError('not-found', `no NAR ${narHash} is stored here: no builder uploaded it`, { field: 'narHash' });
    // Held by an upstream cache: it serves the file (compressed as its narinfo says).
    if (isUpstreamKey(record.blobKey)) return res.redirect(302, record.blobKey);
    const blob = await deps.blobs.get(record.blobKey);
    if (!blob) {
      await deps.missing.found(record, 'read');
      throw new QuorumError('not-found', `the NAR ${narHash} is missing from the blob store: upload it again`, { field: 'narHash' });
    }
    res.set({
      'content-type': 'application/x-nix-nar',
      'content-length': String(record.narSize),
      'content-disposition': `attachment; filename="${narHash.slice('sha256:'.length)}.nar"`,
      'x-nar-hash': record.narHash,
    });
    // The blob store is not trusted: bytes that do not hash to narHash cut the download short.
    await sendChecked(res, [blob.body, decompressStream(parseCompressionMethod(record.compression)), new HashCheck(record.narHash, record.narSize)], (problem) => {
      deps.metrics.blobErrors.inc({ op: 'corrupt' });
      deps.logger.error('blob store returned corrupted NAR bytes', { key: record.blobKey, store: deps.blobs.describe, problem });
    });
  });

  router.put('/nars/:narHash', async (req, res) => {
    const narHash = parseNarHash(String(req.params.narHash), 'narHash');
    const narSize = Number(req.headers['content-length']);
    const builder = gatedBuilder(req);
    // A row whose blob is gone would make this upload a no-op ("exists"): the upload restores it instead.
    const existing = deps.catalog.get(narHash);
    if (existing) await deps.missing.found(existing, 'upload');
    try {
      const { created, record } = await uploadNar(deps.blobs, deps.catalog, { narHash, narSize, body: req, compression: deps.compression, uploadedBy: builder.id, listings: deps.listings });
      deps.metrics.uploads.inc({ result: created ? 'stored' : 'exists' });
      res.status(created ? 201 : 200).json({ narHash: record.narHash, narSize: record.narSize, fileHash: record.fileHash, fileSize: record.fileSize, compression: record.compression, created });
    } catch (error) {
      deps.metrics.uploads.inc({ result: 'rejected' });
      throw error;
    }
  });

  return router;
}
