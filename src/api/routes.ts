import { Router } from 'express';
import type { Metrics } from '../metrics.js';
import type { Service } from '../service.js';
import { adminRoutes } from './admin.js';
import { attestationRoutes } from './attestations.js';
import { logRoutes } from './log.js';
import { pathRoutes } from './paths.js';
import { proofRoutes } from './proofs.js';

/** The JSON API under /api/v1: thin routes over the use cases in src/app/. */
export function apiRoutes(service: Service, metrics: Metrics): Router {
  return Router().use(attestationRoutes(service, metrics), adminRoutes(service), pathRoutes(service), proofRoutes(service), logRoutes(service));
}
