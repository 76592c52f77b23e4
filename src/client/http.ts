import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { COMPRESSION_METHODS, fileExtension, type CompressionMethod } from '../blobstore/compression.js';
import type { Logger } from '../log.js';
import type { NarHash } from '../nix/hash.js';
import { NARINFO_CONTENT_TYPE } from '../nix/narinfo.js';
import type { HashPart } from '../nix/storePath.js';
import type { ClientMetrics } from './metrics.js';
import type { NarSources } from './nars.js';
import type { PathResolver } from './resolver.js';

const NARINFO = /^\/([0123456789abcdfghijklmnpqrsvwxyz]{32})\.narinfo$/;
const NAR = /^\/nar\/([0123456789abcdfghijklmnpqrsvwxyz]{52})\.nar(\.[a-z]+)?$/;
/** The compression a NAR route's name announces (`.nar.br`), as the narinfo the client signed spelled it. */
const METHOD_OF_EXTENSION = new Map<string, CompressionMethod>(COMPRESSION_METHODS.map((m) => [fileExtension(m), m]));
/** Below cache.nixos.org's 40: a path both have is taken from here, verified. */
const PRIORITY = 30;
const CACHE_INFO = `StoreDir: /nix/store\nWantMassQuery: 1\nPriority: ${PRIORITY}\n`;

/**
 * The client's listener for the local Nix, on bare node:http (it is a hot path, and there is no
 * API): nix-cache-info, narinfo, NAR, /metrics, /healthz. A thin transport over PathResolver and
 * NarSources; a narinfo is answered only from a verified quorum, anything else is 404 (503 when no
 * ledger could be asked at all, so Nix does not take "down" for "absent").
 */
export function createClientServer(deps: { resolver: PathResolver; nars: NarSources; metrics: ClientMetrics; logger: Logger; healthy: () => string | null }): Server {
  const { resolver, nars, metrics, logger } = deps;
  const send = (res: ServerResponse, status: number, type: string, body: string, head: boolean) => {
    res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body) });
    res.end(head ? undefined : body);
  };

  async function narinfo(res: ServerResponse, hashPart: HashPart, head: boolean): Promise<void> {
    const resolution = await resolver.resolve(hashPart);
    if (resolution.narinfo !== null) {
      metrics.narinfoRequests.inc({ result: 'hit' });
      send(res, 200, NARINFO_CONTENT_TYPE, resolution.narinfo, head);
      return resolver.prefetchReferences(resolution);
    }
    if (resolution.ledger === null) {
      metrics.narinfoRequests.inc({ result: 'unavailable' });
      return send(res, 503, 'text/plain', `no ledger gave a verifiable answer: ${resolution.skipped.map((s) => `${s.ledger}: ${s.message}`).join('; ')}\n`, head);
    }
    metrics.narinfoRequests.inc({ result: 'refused' });
    send(res, 404, 'text/plain', `not substitutable: ${resolution.verdict?.decision?.reason ?? 'no attestation of this path'}\n`, head);
  }

  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const head = req.method === 'HEAD';
    if (req.method !== 'GET' && !head) return send(res, 405, 'text/plain', 'this substituter is read-only\n', false);
    const path = (req.url ?? '/').split('?')[0]!;
    const info = NARINFO.exec(path);
    if (info) {
      const cached = resolver.cached(info[1] as HashPart);
      if (cached !== undefined) {
        metrics.narinfoRequests.inc({ result: 'cached' });
        return send(res, 200, NARINFO_CONTENT_TYPE, cached, head);
      }
      return void narinfo(res, info[1] as HashPart, head).catch((error: unknown) => fail(res, error));
    }
    const nar = NAR.exec(path);
    const method = nar && METHOD_OF_EXTENSION.get(nar[2] ?? '');
    if (nar && method) return void nars.serve(res, `sha256:${nar[1]!}` as NarHash, method, head).catch((error: unknown) => fail(res, error));
    if (path === '/nix-cache-info') return send(res, 200, 'text/plain', CACHE_INFO, head);
    if (path === '/healthz') {
      const problem = deps.healthy();
      return send(res, 200, 'text/plain', problem ? `degraded: ${problem}\n` : 'ok\n', head);
    }
    if (path === '/metrics') {
      return void metrics.registry.metrics().then((text) => send(res, 200, metrics.registry.contentType, text, head), (error: unknown) => fail(res, error));
    }
    send(res, 404, 'text/plain', `not found: ${path}\n`, head);
  };

  function fail(res: ServerResponse, error: unknown): void {
    logger.error('client request failed', { err: error });
    if (res.headersSent) res.destroy();
    else send(res, 500, 'text/plain', 'internal error\n', false);
  }

  return createServer(handle);
}
