import type { Follower } from '../mirror/follower.js';
import { Router, type ErrorRequestHandler, type Request, type Response } from 'express';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { QuorumError } from '../errors.js';
import { parseHashPart } from '../nix/storePath.js';
import { PROJECT_ROOT } from '../paths.js';
import type { Service } from '../service.js';
import { BuildLogs } from '../logs/buildLogs.js';
import { diffData } from './diff.js';
import { leafData } from './leaf.js';
import { leafPage } from './pages/leaf.js';
import { buildersData, conflictsData, logData, overviewData, parseCursor, pathData, searchData, type WebContext } from './model.js';
import { buildersPage } from './pages/builders.js';
import { conflictsPage } from './pages/conflicts.js';
import { errorPage } from './pages/error.js';
import { logPage } from './pages/log.js';
import { overviewPage } from './pages/overview.js';
import { pathPage } from './pages/path.js';
import { searchPage } from './pages/search.js';
import { WebIndex } from './webIndex.js';

const ASSETS = join(PROJECT_ROOT, 'src', 'web', 'assets');
/** Files under /assets: ours, and tweetnacl from node_modules (never a CDN). */
const ASSET_FILES: Record<string, string> = {
  'style.css': join(ASSETS, 'style.css'),
  'favicon.svg': join(ASSETS, 'favicon.svg'),
  'ledger-verify.js': join(ASSETS, 'ledger-verify.js'),
  'path-page.js': join(ASSETS, 'path-page.js'),
  'nacl-fast.min.js': createRequire(import.meta.url).resolve('tweetnacl/nacl-fast.min.js'),
};

/** Pages load only this server's own files; an injected script or remote asset would be refused. */
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";
/** A request waits for the web index to catch up only when it is this far behind; else it is served what is indexed. */
const AWAIT_BACKLOG = 20_000;

function sendPage(res: Response, body: string, status = 200): void {
  res
    .status(status)
    .set({ 'Content-Security-Policy': CSP, 'X-Content-Type-Options': 'nosniff', 'Referrer-Policy': 'no-referrer', 'Cache-Control': 'no-cache' })
    .type('text/html; charset=utf-8')
    .send(body);
}

const queryString = (req: Request, name: string): string => {
  const v = req.query[name];
  if (v !== undefined && typeof v !== 'string') throw new QuorumError('bad-query', `${name} must be given once`, { field: name });
  return v ?? '';
};

/**
 * The web ledger pages (`/`, `/search`, `/paths/<hashpart>`, `/builders`, `/conflicts`, `/transparency-log`, `/leaves/<index>`),
 * their JSON under /api/v1 and the static assets, over one web index of the service's ledger.
 */
export function webRoutes(service: Service, follower?: Follower): Router {
  const index = new WebIndex(service.db, service.registry, service.logger);
  const ctx: WebContext = { service, index, ...(follower ? { follower } : {}) };
  index.catchUpLater();
  service.ingestor.onCommit((batch) => index.indexCommit(batch));
  service.ingestor.onCommitted(() => index.committed());

  const buildLogs = new BuildLogs(service.db);
  const requirePath = (text: string, after?: number) => {
    const hashPart = parseHashPart(text, 'hashPart');
    const data = pathData(ctx, hashPart, after);
    if (!data) throw new QuorumError('not-found', `no builder has attested hash part ${hashPart}`, { field: 'hashPart' });
    return data;
  };
  const requireLeaf = (text: unknown) => {
    if (typeof text !== 'string' || !/^(0|[1-9][0-9]{0,15})$/.test(text)) throw new QuorumError('bad-query', 'a leaf index is a non-negative integer', { field: 'index' });
    const leaf = leafData(service, Number(text));
    if (!leaf) throw new QuorumError('not-found', `the log has ${service.log.size()} entries, none with index ${text}`, { field: 'index' });
    return leaf;
  };

  async function indexed(): Promise<void> {
    if (index.logSize() - index.indexed() <= AWAIT_BACKLOG) await index.catchUp();
    else index.catchUpLater();
  }

  const api = Router();
  api.get('/stats', async (_req, res) => {
    await indexed();
    res.json(overviewData(ctx));
  });
  api.get('/search', async (req, res) => {
    const before = parseCursor(req.query.before);
    await indexed();
    res.json(searchData(ctx, queryString(req, 'q'), before));
  });
  api.get('/paths/:hashPart/summary', (req, res) => res.json(requirePath(String(req.params.hashPart), parseCursor(req.query.after, 'after'))));
  api.get('/builders/stats', async (_req, res) => {
    await indexed();
    res.json(buildersData(ctx));
  });
  api.get('/conflicts/unreproduced', async (req, res) => {
    const before = parseCursor(req.query.before);
    await indexed();
    const { unreproduced, unreproducedTotal, next, index: progress } = conflictsData(ctx, before);
    res.json({ unreproduced, total: unreproducedTotal, next, index: progress });
  });
  api.get('/paths/:hashPart/diff', async (req, res) => res.json(await diffData(service, requirePath(String(req.params.hashPart)))));
  api.get('/leaves/:index', (req, res) => res.json(requireLeaf(req.params.index)));
  api.get('/log/checkpoints', (_req, res) => res.json(logData(ctx)));

  const pages = Router();
  pages.get('/', async (_req, res) => {
    await indexed();
    sendPage(res, overviewPage(overviewData(ctx)));
  });
  pages.get('/search', async (req, res) => {
    const before = parseCursor(req.query.before);
    await indexed();
    sendPage(res, searchPage(searchData(ctx, queryString(req, 'q'), before), before));
  });
  pages.get('/paths/:hashPart', async (req, res) => {
    const hashPart = parseHashPart(String(req.params.hashPart), 'hash part');
    const data = pathData(ctx, hashPart, parseCursor(req.query.after, 'after'));
    if (!data) return sendPage(res, errorPage(404, `No builder has attested hash part ${hashPart} in this ledger.`), 404);
    const logs = buildLogs.builders([...new Set(data.outputs.flatMap((o) => o.attestations.map((a) => a.drvPath)))]);
    sendPage(res, pathPage(data, { diff: await diffData(service, data), logs }));
  });
  pages.get('/leaves/:index', (req, res) => sendPage(res, leafPage(requireLeaf(req.params.index))));
  pages.get('/builders', async (_req, res) => {
    await indexed();
    sendPage(res, buildersPage(buildersData(ctx)));
  });
  pages.get('/conflicts', async (req, res) => {
    const before = parseCursor(req.query.before);
    await indexed();
    sendPage(res, conflictsPage(conflictsData(ctx, before), before));
  });
  // /log/<drv> is a build log, as Nix fetches it from a binary cache (src/logs/routes.ts).
  pages.get('/log', (_req, res) => res.redirect(301, '/transparency-log'));
  pages.get('/transparency-log', (_req, res) => sendPage(res, logPage(logData(ctx))));
  pages.get('/assets/:file', (req, res) => {
    const file = ASSET_FILES[String(req.params.file)];
    if (!file) throw new QuorumError('not-found', `no asset ${String(req.params.file)}`);
    res.set({ 'Cache-Control': 'public, max-age=300', 'X-Content-Type-Options': 'nosniff' }).sendFile(file);
  });
  // Errors on pages are pages too; the JSON routes above keep the API's JSON errors.
  const htmlErrors: ErrorRequestHandler = (err, req, res, _next) => {
    // express's own 4xx (a path that does not decode, say) are the client's too.
    const status = err instanceof QuorumError ? err.status : typeof err?.status === 'number' && err.status >= 400 && err.status < 500 ? (err.status as number) : 500;
    if (status >= 500) service.logger.error('page failed', { url: req.originalUrl, err });
    sendPage(res, errorPage(status, status >= 500 ? 'Internal error; the server log has the details.' : (err as Error).message), status);
  };
  pages.use(htmlErrors);

  const router = Router();
  router.use('/api/v1', api);
  router.use(pages);
  return router;
}
