import { Router, type Response } from 'express';
import type { Db } from '../db.js';
import { QuorumError } from '../errors.js';
import type { NarListings } from '../nars/listings.js';
import { nixListingJson } from '../nix/nar/listing.js';
import type { HashPart } from '../nix/storePath.js';
import { DEFAULT_POLICY } from '../quorum/policies.js';
import { QuorumLookup } from './narinfo.js';

/**
 * `GET /<hashPart>.ls` (and under /policy/<name>/): Nix's JSON listing of the NAR a path is served
 * with, as `nix copy` writes it with `write-nar-listing`. Only for a path the policy advertises, like
 * its narinfo: the listing describes exactly the NAR Nix would download.
 */
export function listingRoutes(deps: { db: Db; listings: NarListings }): Router {
  const router = Router();
  const lookup = new QuorumLookup(deps.db);
  const send = async (res: Response, policy: string, hashPart: string) => {
    const path = lookup.find(policy, hashPart as HashPart);
    if (!path?.nar) throw new QuorumError('not-found', 'not advertised: no quorum for this path, or its NAR is not available', { field: 'hashPart' });
    const entries = await deps.listings.get(path.narHash);
    if (!entries) throw new QuorumError('not-found', 'no listing of this NAR: it was uploaded before listings were recorded, or has too many files to list', { field: 'hashPart' });
    res.type('application/json').send(nixListingJson(entries));
  };
  router.get(/^\/([0-9a-df-np-sv-z]{32})\.ls$/, (req, res) => send(res, DEFAULT_POLICY, String(req.params[0])));
  router.get(/^\/policy\/([A-Za-z0-9._-]{1,64})\/([0-9a-df-np-sv-z]{32})\.ls$/, (req, res) => send(res, String(req.params[0]), String(req.params[1])));
  return router;
}
