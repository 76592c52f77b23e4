import { Router, type Request, type Response } from 'express';
import { authorizeLogUpload } from '../app/buildLogs.js';
import { createBrotliDecompress } from 'node:zlib';
import type { BlobStore } from '../blobstore/blobStore.js';
import { HashCheck, sendChecked } from '../blobstore/hashCheck.js';
import { QuorumError } from '../errors.js';
import type { BuilderRegistry } from '../ledger/registry.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { narHashFromDigest } from '../nix/hash.js';
import { parseDrvPath, STORE_DIR, type StorePath } from '../nix/storePath.js';
import type { DecisionMaterializer } from '../quorum/decisions.js';
import { DEFAULT_POLICY } from '../quorum/policies.js';
import { LOG_ENCODING, MAX_LOG_BYTES, type BuildLog, type BuildLogs } from './buildLogs.js';
import { storeBuildLog } from './upload.js';

export interface LogRouteDeps {
  blobs: BlobStore;
  logs: BuildLogs;
  registry: BuilderRegistry;
  decisions: DecisionMaterializer;
  metrics: Metrics;
  logger: Logger;
}

const drvOf = (baseName: unknown): StorePath => parseDrvPath(`${STORE_DIR}/${String(baseName)}`, 'derivation');

/** RFC 9530 `Content-Digest: sha-256=:<base64>:`, the body's hash the upload signature covers. */
function contentDigest(header: string | undefined) {
  const m = /(?:^|,)\s*sha-256=:([A-Za-z0-9+/]{43}=):/.exec(header ?? '');
  if (!m) throw new QuorumError('bad-content-digest', 'log uploads need "Content-Digest: sha-256=:<base64 SHA-256 of the compressed body>:"', { field: 'Content-Digest' });
  return narHashFromDigest(Buffer.from(m[1]!, 'base64'));
}

/** Who signed a stored log and over what: enough to check the served bytes against the builder's key. */
function provenance(log: BuildLog, builder: string): Record<string, string> {
  return {
    'x-log-builder': builder,
    'x-log-file-hash': log.fileHash,
    'x-log-signature': `ts=${log.signedAt},sig=${log.signature.toString('base64')}`,
  };
}

/**
 * Build logs: builders deliver them (`PUT|HEAD /api/v1/logs/<drv basename>/<builder>`), and Nix
 * fetches one as from any binary cache (`GET /log/<drv basename>`, and under /policy/<name>/).
 */
export function buildLogRoutes(deps: LogRouteDeps): { api: Router; pages: Router } {
  const api = Router();
  const builderNamed = (name: unknown) => {
    const builder = deps.registry.get(String(name));
    if (!builder) throw new QuorumError('not-found', `no builder key named ${String(name)}`, { field: 'builder' });
    return builder;
  };

  api.head('/logs/:drv/:builder', (req, res) => {
    const log = deps.logs.get(drvOf(req.params.drv), builderNamed(req.params.builder).id);
    if (!log) return res.status(404).end();
    res.set({ 'x-log-size': String(log.logSize), 'x-file-size': String(log.fileSize) }).status(200).end();
  });

  api.put('/logs/:drv/:builder', async (req, res) => {
    const drvPath = drvOf(req.params.drv);
    const length = req.headers['content-length'];
    if (length === undefined || !/^[0-9]{1,16}$/.test(length)) throw new QuorumError('bad-content-length', 'Content-Length must be the size of the compressed log in bytes', { field: 'Content-Length' });
    const size = Number(length);
    if (size > MAX_LOG_BYTES) throw new QuorumError('too-large', `a compressed log may have at most ${MAX_LOG_BYTES} bytes`, { field: 'Content-Length' });
    if (req.headers['content-encoding'] !== LOG_ENCODING) throw new QuorumError('unsupported-encoding', `log uploads are brotli-compressed: Content-Encoding: ${LOG_ENCODING}`, { field: 'Content-Encoding' });
    const digest = req.headers['content-digest'];
    const fileHash = contentDigest(Array.isArray(digest) ? digest.join(',') : digest);
    const { builder, signedAt, signature } = authorizeLogUpload(deps.registry, deps.logs, { authorization: req.headers.authorization, builder: String(req.params.builder), drvPath, fileHash, size });
    const { created, log } = await storeBuildLog(deps.blobs, deps.logs, { drvPath, builderId: builder.id, body: req, size, fileHash, signedAt, signature });
    res.status(created ? 201 : 200).json({ drvPath, builder: builder.name, fileHash: log.fileHash, fileSize: log.fileSize, logSize: log.logSize, created });
  });

  async function send(req: Request, res: Response, policy: string): Promise<void> {
    const drvPath = drvOf(req.params.drv);
    if (!deps.decisions.getPolicies().some((p) => p.name === policy)) throw new QuorumError('not-found', `no policy named ${policy}`, { field: 'policy' });
    const wanted = req.query.builder;
    const log = wanted === undefined ? deps.logs.preferred(drvPath, policy) : deps.logs.get(drvPath, builderNamed(wanted).id);
    if (!log) throw new QuorumError('not-found', `no builder delivered a build log of ${drvPath}`, { field: 'derivation' });
    const blob = await deps.blobs.get(log.blobKey);
    if (!blob) throw new QuorumError('not-found', `the build log of ${drvPath} is catalogued but missing from the blob store`, { field: 'derivation' });
    // Compressed only for a client that asks for it: Nix (which asks for nothing) and curl get plain text.
    const encoded = /\bbr\b/.test(req.headers['accept-encoding'] ?? '');
    res.set({
      'content-type': 'text/plain; charset=utf-8',
      vary: 'Accept-Encoding',
      ...(encoded ? { 'content-encoding': LOG_ENCODING, 'content-length': String(log.fileSize) } : { 'content-length': String(log.logSize) }),
      ...provenance(log, deps.registry.getById(log.builderId)!.name),
    });
    if (req.method === 'HEAD') {
      blob.body.destroy();
      res.end();
      return;
    }
    // The blob store is not trusted: bytes other than those the builder signed cut the download short.
    await sendChecked(res, [blob.body, new HashCheck(log.fileHash, log.fileSize), ...(encoded ? [] : [createBrotliDecompress()])], (problem) => {
      deps.metrics.blobErrors.inc({ op: 'corrupt' });
      deps.logger.error('blob store returned a corrupted build log', { key: log.blobKey, store: deps.blobs.describe, problem });
    });
  }

  const pages = Router();
  pages.get('/log/:drv', (req, res) => send(req, res, DEFAULT_POLICY));
  pages.get('/policy/:policy/log/:drv', (req, res) => send(req, res, String(req.params.policy)));
  return { api, pages };
}
