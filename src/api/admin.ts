import express, { Router } from 'express';
import { z } from 'zod';
import { addBuilder, revokeBuilder } from '../app/builders.js';
import { deletePolicy, listPolicies, setPolicy } from '../app/policies.js';
import { builderJson } from '../ledger/registry.js';
import { parsePublicKey } from '../nix/keys.js';
import { policyInput } from '../quorum/policies.js';
import type { Service } from '../service.js';
import { requireAdmin } from './auth.js';
import { input } from './query.js';

const builderBody = z.object({ publicKey: z.string({ error: 'publicKey must be a Nix public key name:base64' }) }).strict();

/** The builder registry and the policies: reads for anyone, changes with the admin token. */
export function adminRoutes(service: Service): Router {
  const router = Router();
  const admin = requireAdmin(service.adminToken);
  router.get('/builders', (_req, res) => res.json({ builders: service.registry.list().filter((b) => b.addedLeaf !== null).map(builderJson) }));
  router.post('/builders', admin, express.json(), (req, res) => {
    const { builder, created } = addBuilder(service, parsePublicKey(input(builderBody, req.body, 'bad-builder').publicKey));
    res.status(created ? 201 : 200).json(builderJson(builder));
  });
  router.post('/builders/:name/revoke', admin, (req, res) => res.json(builderJson(revokeBuilder(service, String(req.params.name)))));

  router.get('/policies', (_req, res) => res.json({ policies: listPolicies(service) }));
  router.put('/policies/:name', admin, express.json(), (req, res) => {
    const fields: unknown = req.body;
    const given = typeof fields === 'object' && fields !== null && !Array.isArray(fields) ? fields : {};
    res.json(setPolicy(service, input(policyInput, { ...given, name: String(req.params.name) }, 'bad-policy')));
  });
  router.delete('/policies/:name', admin, (req, res) => {
    deletePolicy(service, String(req.params.name));
    res.json({ deleted: String(req.params.name) });
  });
  return router;
}
