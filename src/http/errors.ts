import type { ErrorRequestHandler } from 'express';
import type { ServerResponse } from 'node:http';
import type { DatabaseHealth } from '../db/health.js';
import { QuorumError } from '../errors.js';
import { asStorageFull } from '../faults/storageFull.js';
import type { Logger } from '../log.js';
import { closeAfterAnswer } from './body.js';

/** Seconds a client is told to wait: a burst of its own requests (429) passes quickly; a full disk or a failing store (503) takes an operator. */
const RETRY_AFTER: Partial<Record<number, string>> = { 429: '1', 503: '30' };

/** The one shape of every error answer: {error, code, field?}. */
export function errorBody(error: QuorumError): string {
  return JSON.stringify({ error: error.message, code: error.code, ...(error.field ? { field: error.field } : {}) });
}

/** Answers `error` as JSON with its status (and Retry-After for 429 and 503); HEAD gets the head only. */
export function sendError(res: ServerResponse, error: QuorumError, head = false): void {
  const body = errorBody(error);
  const retryAfter = RETRY_AFTER[error.status];
  res.writeHead(error.status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body), ...(retryAfter ? { 'retry-after': retryAfter } : {}) });
  res.end(head ? undefined : body);
}

/**
 * What an error thrown while answering means to the client: a QuorumError as it is; a full disk
 * (SQLITE_FULL, ENOSPC) as 'storage-full'; a damaged database as 'database-unreadable' (and
 * remembered by `health` for /healthz); express's own refusals (body parsing, a path it cannot
 * decode) as the 4xx they are; anything else as 'internal', whose details stay in the log.
 */
export function classifyError(err: unknown, what: string, health?: DatabaseHealth): QuorumError {
  if (err instanceof QuorumError) return err;
  const known = health?.notice(err) ?? asStorageFull(err, what);
  if (known) return known;
  const e = err as { type?: unknown; status?: unknown; message?: unknown; limit?: unknown } | null;
  if (e?.type === 'entity.parse.failed') return new QuorumError('bad-json', `request body is not valid JSON: ${String(e.message)}`, { field: 'body' });
  if (e?.type === 'entity.too.large') return new QuorumError('too-large', `request body is larger than the limit of ${String(e.limit)} bytes: send fewer attestations per request`, { field: 'body' });
  if (e?.status === 415) return new QuorumError('unsupported-encoding', String(e.message), { field: 'Content-Encoding' });
  if (typeof e?.status === 'number' && e.status >= 400 && e.status < 500) return new QuorumError('bad-request', String(e.message), { field: 'path' });
  return new QuorumError('internal', 'internal error');
}

/** Express error handler: every error as JSON {error, code, field}; never a stack trace. */
export function jsonErrors(log: Logger, health?: DatabaseHealth): ErrorRequestHandler {
  return (err, req, res, _next) => {
    // A client that hung up mid-request (e.g. an interrupted NAR upload) is not a server failure.
    if (err?.code === 'ECONNRESET') {
      log.info('client went away', { method: req.method, url: req.originalUrl });
      res.destroy();
      return;
    }
    const error = classifyError(err, `${req.method} ${req.path}`, health);
    if (error.status >= 500) log.error('request failed', { method: req.method, url: req.originalUrl, code: error.code, err });
    // Half an answer is already out (a streamed download): only dropping the connection says it failed.
    if (res.headersSent) {
      res.destroy();
      return;
    }
    closeAfterAnswer(req, res);
    sendError(res, error, req.method === 'HEAD');
  };
}
