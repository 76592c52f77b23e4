import { Router } from 'express';
import type { Witnessing } from './witnessing.js';

/** GET /api/v1/log/witnesses: each configured witness, what it cosigned and its last failure. */
export function witnessRoutes(witnessing: Witnessing): Router {
  const router = Router();
  router.get('/log/witnesses', (_req, res) => res.json({ witnesses: witnessing.submitter.status() }));
  return router;
}
