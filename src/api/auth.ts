import { timingSafeEqual } from 'node:crypto';
import type { RequestHandler } from 'express';
import { QuorumError } from '../errors.js';

/** Admin calls carry `Authorization: Bearer <token>` (the token file in the data directory). */
export function requireAdmin(token: string): RequestHandler {
  const expected = Buffer.from(token);
  return (req, _res, next) => {
    const header = req.headers.authorization ?? '';
    const given = Buffer.from(header.startsWith('Bearer ') ? header.slice(7).trim() : '');
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
      next(new QuorumError('unauthorized', 'admin calls need "Authorization: Bearer <admin token>" (the admin-token file in the data directory)'));
      return;
    }
    next();
  };
}
