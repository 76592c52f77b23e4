import type { RequestHandler } from 'express';
import { QuorumError } from '../errors.js';

/**
 * At most `limit` requests without an Authorization header in flight per client address on the API
 * and the pages; more are answered 429 at once. Authenticated requests are refused or served by
 * their routes, which check the header before they read anything. The substituter's routes run
 * before express and are not limited: each costs one indexed read.
 */
export function perClientLimit(limit: number): RequestHandler {
  const inFlight = new Map<string, number>();
  return (req, res, next) => {
    if (req.headers.authorization !== undefined) return next();
    const client = req.socket.remoteAddress ?? '';
    const n = inFlight.get(client) ?? 0;
    if (n >= limit) {
      next(new QuorumError('too-many-requests', `more than ${limit} requests at once from one client: wait for answers before asking again`));
      return;
    }
    inFlight.set(client, n + 1);
    res.once('close', () => {
      const left = inFlight.get(client)! - 1;
      if (left === 0) inFlight.delete(client);
      else inFlight.set(client, left);
    });
    next();
  };
}
