import type { ErrorRequestHandler } from 'express';
import { QuorumError } from '../errors.js';
import type { Logger } from '../log.js';
import { closeAfterAnswer } from './body.js';

/** Express error handler: QuorumError -> JSON {error, code, field}; body-parser errors named; never a stack trace. */
export function jsonErrors(log: Logger): ErrorRequestHandler {
  return (err, req, res, _next) => {
    // A client that hung up mid-request (e.g. an interrupted NAR upload) is not a server failure.
    if (err?.code === 'ECONNRESET') {
      log.info('client went away', { method: req.method, url: req.originalUrl });
      res.destroy();
      return;
    }
    let status = 500;
    let body: { error: string; code: string; field?: string };
    if (err instanceof QuorumError) {
      status = err.status;
      body = { error: err.message, code: err.code, ...(err.field ? { field: err.field } : {}) };
    } else if (err?.type === 'entity.parse.failed') {
      status = 400;
      body = { error: `request body is not valid JSON: ${err.message}`, code: 'bad-json' };
    } else if (err?.type === 'entity.too.large') {
      status = 413;
      body = { error: `request body is larger than the limit of ${err.limit} bytes: send fewer attestations per request`, code: 'too-large' };
    } else if (typeof err?.status === 'number' && err.status >= 400 && err.status < 500) {
      status = err.status;
      body = { error: String(err.message), code: 'bad-request' };
    } else {
      body = { error: 'internal error', code: 'internal' };
    }
    if (status >= 500) log.error('request failed', { method: req.method, url: req.originalUrl, err });
    closeAfterAnswer(req, res);
    if (status === 429) res.setHeader('retry-after', '1');
    res.status(status).json(body);
  };
}
