import { Router } from 'express';
import { z } from 'zod';
import { pathProofReader } from '../app/proofs.js';
import { NarCatalog } from '../nars/catalog.js';
import { parseHashPart } from '../nix/storePath.js';
import type { Service } from '../service.js';
import { params, query, queryOf } from './query.js';

const PATH = z.object({
  hashPart: z.string().transform((s, ctx) => {
    try {
      return parseHashPart(s, 'hashPart');
    } catch (error) {
      ctx.addIssue({ code: 'custom', message: (error as Error).message });
      return z.NEVER;
    }
  }),
});
const PROOFS = queryOf({ cosigned: z.coerce.number({ error: 'cosigned must be a whole number of cosignatures' }).int().min(0).max(1000).default(0) });

/** GET /api/v1/paths/<hashPart>/proofs: a hash part's attestations with tlog-proofs (src/app/proofs.ts). */
export function proofRoutes(service: Service): Router {
  const read = pathProofReader(service, new NarCatalog(service.db));
  return Router().get('/paths/:hashPart/proofs', (req, res) => {
    const { hashPart } = params(req, PATH);
    res.json(read(hashPart, query(req, PROOFS).cosigned));
  });
}
