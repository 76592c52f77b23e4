import type { RequestHandler } from 'express';
import { QuorumError } from '../errors.js';

/**
 * Whose X-Forwarded-For express believes: a proxy on this machine, as the README's nginx is. A
 * client elsewhere cannot send from these addresses, so it cannot choose its own budget.
 */
export const TRUSTED_PROXIES = 'loopback';

/**
 * At most `limit` requests without an Authorization header in flight per client address on the API
 * and the pages; more are answered 429 at once. Authenticated requests are refused or served by
 * their routes, which check the header before they read anything. The substituter's routes run
 * before express and are not limited: each costs one indexed read.
 *
 * The address is express's `req.ip` (the app sets `trust proxy` to TRUSTED_PROXIES): behind such
 * a proxy, the client's as the proxy appended it to X-Forwarded-For, so the clients of one proxy do
 * not share one budget; from anywhere else the connection's own, whatever the header claims.
 */
export function perClientLimit(limit: number): RequestHandler {
  const inFlight = new Map<string, number>();
  return (req, res, next) => {
    if (req.headers.authorization !== undefined) return next();
    const client = req.ip ?? '';
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
