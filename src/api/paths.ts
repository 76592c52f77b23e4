import { Router } from 'express';
import { z } from 'zod';
import { pathStatus, quorumDecisions } from '../app/paths.js';
import { conflicts } from '../ledger/queries.js';
import { parseHashPart } from '../nix/storePath.js';
import { POLICY_NAME } from '../ledger/leaf.js';
import type { Service } from '../service.js';
import { query, queryOf, treeIndex } from './query.js';

const PATH = queryOf({ after: treeIndex('after').optional(), limit: z.coerce.number().int().min(1).max(1000).default(500) });
const DECISIONS = queryOf({
  policy: z.string().regex(POLICY_NAME, 'policy must be a policy name').default('default'),
  after: z.string().max(300, 'after must be an output path').default(''),
  limit: z.coerce.number().int().min(1).max(10_000).default(1000),
});
const CONFLICTS = queryOf({ limit: z.coerce.number().int().min(1).max(1000).default(100) });

/** Per-path status, the decisions with quorum, and the conflicts. */
export function pathRoutes(service: Service): Router {
  const router = Router();
  router.get('/paths/:hashPart', (req, res) => {
    const { after, limit } = query(req, PATH);
    res.json(pathStatus(service, parseHashPart(String(req.params.hashPart), 'hashPart'), { after, limit }));
  });
  router.get('/decisions', (req, res) => {
    const { policy, after, limit } = query(req, DECISIONS);
    res.json(quorumDecisions(service, policy, after, limit));
  });
  router.get('/conflicts', (req, res) => {
    const { limit } = query(req, CONFLICTS);
    res.json({ conflicts: conflicts(service.db, { limit }) });
  });
  return router;
}
