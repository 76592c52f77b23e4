import express, { type Router } from 'express';
import { perClientLimit, TRUSTED_PROXIES } from './http/perClientLimit.js';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { apiRoutes } from './api/routes.js';
import { QuorumError } from './errors.js';
import { classifyError, jsonErrors, sendError } from './http/errors.js';
import type { Metrics } from './metrics.js';
import type { Service } from './service.js';

/** A handler that answers the request and returns true, or returns false to pass it on. */
export type FastHandler = (req: IncomingMessage, res: ServerResponse) => boolean;

/**
 * One listener for every role. The substituter's hot path is a bare node:http handler tried first
 * (express costs ~10x per request); everything else goes through express.
 */
export interface Routes {
  /** Mounted under /api/v1. */
  api: Router[];
  /** Mounted at the root (web pages). */
  pages: Router[];
  /** Tried before express. */
  fast: FastHandler[];
  /** Why the server serves less than it should, if it does (a mirror that stopped following): shown by /healthz. */
  degraded?: () => string | null;
}

export function requestHandler(service: Service, metrics: Metrics, routes: Routes): (req: IncomingMessage, res: ServerResponse) => void {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.set('trust proxy', TRUSTED_PROXIES);
  app.use(perClientLimit(service.config.http.maxConcurrentPerClient));
  app.use('/api/v1', apiRoutes(service, metrics), ...routes.api);
  app.get('/healthz', (_req, res) => {
    // 503 when the ledger cannot be read: a balancer takes this server out, an operator reads why.
    const unreadable = service.health.problem();
    if (unreadable) return sendError(res, new QuorumError('database-unreadable', `unhealthy: ${unreadable}`));
    const degraded = routes.degraded?.();
    // Still 200: it serves what it verified; the body says what is wrong.
    res.type('text/plain').send(degraded ? `degraded: ${degraded}\n` : 'ok\n');
  });
  app.get('/metrics', async (_req, res) => {
    metrics.treeSize.set(service.log.size());
    res.type(metrics.registry.contentType).send(await metrics.registry.metrics());
  });
  for (const pages of routes.pages) app.use(pages);
  app.use((req, res) => sendError(res, new QuorumError('not-found', `nothing is served at ${req.method} ${req.path.slice(0, 200)}`, { field: 'path' })));
  app.use(jsonErrors(service.logger, service.health));

  return (req, res) => {
    try {
      for (const handler of routes.fast) if (handler(req, res)) return;
    } catch (err) {
      // Thrown on bare node:http (a database that became unreadable under a lookup) it would end the process.
      const error = classifyError(err, `${req.method} ${req.url}`, service.health);
      service.logger.error('request failed', { method: req.method, url: req.url, code: error.code, err });
      if (res.headersSent) res.destroy();
      else sendError(res, error);
      return;
    }
    app(req, res);
  };
}
