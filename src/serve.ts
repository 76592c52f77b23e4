import cron from 'node-cron';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Config } from './config.js';
import { createLogger, type Logger } from './log.js';
import { QuorumError } from './errors.js';
import { sendError } from './http/errors.js';
import { createMetrics } from './metrics.js';
import { requestHandler } from './server.js';
import { openService, type Service } from './service.js';
import { dataPaths, removeQuietly, writeFileDurable } from './dataDir.js';
import type { BlobStore } from './blobstore/blobStore.js';
import { createBlobStore } from './blobstore/config.js';
import { NarCatalog } from './nars/catalog.js';
import { runMaintenance } from './nars/maintenance.js';
import { MissingNars } from './nars/missing.js';
import { listen } from './http/listen.js';
import { NarListings } from './nars/listings.js';
import { narRoutes } from './nars/routes.js';
import { BuildLogs } from './logs/buildLogs.js';
import { buildLogRoutes } from './logs/routes.js';
import { listingRoutes } from './substituter/listingRoutes.js';
import { readOnlyCacheRoutes } from './substituter/readOnly.js';
import { substituterHandler } from './substituter/handler.js';
import { builderGate } from './api/builderGate.js';
import { upstreamResolver } from './substituter/upstream.js';
import { UpstreamCaches } from './blobstore/upstream.js';
import { webRoutes } from './web/routes.js';
import { witnessRoutes } from './witness/routes.js';
import { startWitnessing } from './witness/witnessing.js';
import { parseWitnessPolicy } from './witness/verifyCosigned.js';
import { Follower } from './mirror/follower.js';
import { createMirrorMetrics } from './mirror/metrics.js';
import { NarPrefetcher, narsFromPrimary } from './mirror/nars.js';
import { QuorumLookup } from './substituter/narinfo.js';
import { hashPartOf, type StorePath } from './nix/storePath.js';
import { DEFAULT_POLICY } from './quorum/policies.js';
import { mirrorRoutes, refuseWrites } from './mirror/routes.js';

export interface RunningServer {
  service: Service;
  catalog: NarCatalog;
  blobs: BlobStore;
  url: string;
  /** When serving as a mirror (config.follow): what follows the primary. */
  follower?: Follower;
  close(): Promise<void>;
}

/**
 * Listens, opens the data directory and serves every role until close(). The address is taken
 * first, so a port in use or an address that is not this machine's is said before anything in the
 * data directory is created; until the roles are ready, requests are answered 503.
 */
export async function startServer(config: Config, logger = createLogger(config.logLevel)): Promise<RunningServer> {
  const server = createServer(starting);
  await listen(server, config.listen.host, config.listen.port);
  try {
    return await serveOn(server, config, logger);
  } catch (error) {
    await new Promise((resolve) => server.close(resolve));
    throw error;
  }
}

function starting(_req: IncomingMessage, res: ServerResponse): void {
  sendError(res, new QuorumError('unavailable', 'the server is starting: retry in a moment'));
}

async function serveOn(server: Server, config: Config, logger: Logger): Promise<RunningServer> {
  const service = openService(config, logger);
  const metrics = createMetrics();
  service.ingestor.onCommitted(() => metrics.commits.inc());
  service.decisions.onDecided((policy, status) => metrics.decisions.inc({ policy, status }));
  const blobs = await createBlobStore(config.blobStore, config.dataDir);
  const catalog = new NarCatalog(service.db);
  const witnessing = startWitnessing(service, metrics);
  const listings = new NarListings(service.db);
  const missing = new MissingNars({ db: service.db, blobs, catalog, metrics, logger });
  const follower = config.follow
    ? new Follower(service, config.follow.url, service.noteVerifier, config.follow.witnesses.length > 0 ? parseWitnessPolicy(config.follow.witnesses, config.follow.witnessThreshold, 'follow.witnesses') : null, { pollMs: config.follow.pollMs, bulkCatchUp: config.follow.bulkCatchUp }, createMirrorMetrics(metrics.registry), logger)
    : undefined;
  const upstream = config.follow
    ? narsFromPrimary({ primary: config.follow.url, blobs, catalog, listings, compression: config.compression })
    : config.upstreams.length > 0
      ? upstreamResolver(new UpstreamCaches(config.upstreams), catalog)
      : undefined;
  const substituter = substituterHandler({
    db: service.db,
    decisions: service.decisions,
    catalog,
    blobs,
    cacheKey: service.cacheKey,
    priority: config.substituter.priority,
    cacheEntries: config.substituter.narinfoCacheEntries,
    metrics,
    logger,
    missing,
    health: service.health,
    ...(upstream ? { upstream } : {}),
  });
  const logs = buildLogRoutes({ blobs, logs: new BuildLogs(service.db), registry: service.registry, decisions: service.decisions, metrics, logger });
  const handler = requestHandler(service, metrics, {
    api: [narRoutes({ blobs, catalog, listings, registry: service.registry, compression: config.compression, metrics, logger, missing }), logs.api, witnessRoutes(witnessing), ...(follower ? [mirrorRoutes(follower)] : [])],
    pages: [readOnlyCacheRoutes(), listingRoutes({ db: service.db, listings }), logs.pages, webRoutes(service, follower)],
    fast: [...(config.follow ? [refuseWrites(config.follow.url)] : []), builderGate(service.registry), substituter.handle],
    ...(follower ? { degraded: () => follower.current().degraded } : {}),
  });
  // A mirror signs no checkpoints.
  const republish = config.follow ? undefined : cron.schedule(config.ledger.checkpointCron, () => service.checkpoints.tryPublish());
  let gcRun: Promise<void> | undefined;
  const maintain = () => runMaintenance({ db: service.db, blobs, catalog, missing, logger, dataDir: config.dataDir, retentionDays: config.gc.retentionDays });
  const gc = cron.schedule(config.gc.cron, () => (gcRun = maintain()), { name: 'gc', noOverlap: true });
  const close = async () => {
    await follower?.stop();
    republish?.stop();
    await gc.stop();
    await gcRun;
    substituter.stop();
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeAllConnections();
    await closed;
    // Cache Sigs still being made for the last commits: store them rather than leave them to be made on read.
    await service.decisions.signaturesStored();
    await witnessing.stop();
    removeQuietly(dataPaths(config.dataDir).server);
    service.close();
  };
  server.off('request', starting).on('request', handler);
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const url = `http://${host}:${address.port}`;
  // Admin commands given --data find the server here (src/cli/admin.ts); a wildcard address is reached on loopback.
  const local = address.address === '0.0.0.0' ? '127.0.0.1' : address.address === '::' ? '[::1]' : host;
  writeFileDurable(dataPaths(config.dataDir).server, `${JSON.stringify({ url: `http://${local}:${address.port}`, pid: process.pid })}\n`);
  logger.info('listening', { url, dataDir: config.dataDir, origin: service.origin, ...(config.follow ? { mirrorOf: config.follow.url } : {}) });
  if (follower && upstream) {
    // NARs of what reached quorum are fetched ahead, so the mirror serves them when the primary is
    // gone. Not during a catch-up: a mirror started on a large log would fetch every NAR the primary
    // holds while it still verifies; those NARs are fetched when first asked for.
    const prefetch = new NarPrefetcher(upstream);
    const lookup = new QuorumLookup(service.db);
    follower.onApplied((outPaths, catchingUp) => {
      if (catchingUp) return;
      const wanted = [...outPaths].map((p) => hashPartOf(p as StorePath)).flatMap((hashPart) => {
        const path = lookup.find(DEFAULT_POLICY, hashPart);
        return path && !path.nar ? [{ hashPart, path }] : [];
      });
      prefetch.add(wanted);
    });
  }
  follower?.start();
  return {
    service,
    catalog,
    blobs,
    url,
    ...(follower ? { follower } : {}),
    close,
  };
}
