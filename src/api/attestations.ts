import { Router } from 'express';
import { ERROR_STATUS, QuorumError } from '../errors.js';
import { readBody } from '../http/body.js';
import { parseAttestation } from '../ledger/attestation.js';
import type { IngestResult } from '../ledger/ingest.js';
import type { Metrics } from '../metrics.js';
import type { Service } from '../service.js';
import { gatedBuilder } from './builderGate.js';

/** HTTP status of a one-item submission (a rejected one: its code's); arrays answer 200 unless every item was rejected. */
function statusOf(results: IngestResult[]): number {
  const ok = results.filter((r) => r.status !== 'rejected');
  if (ok.length === 0 && results[0]?.status === 'rejected') return ERROR_STATUS[results[0].code];
  if (results.length === 1 && results[0]!.status === 'accepted') return 201;
  return 200;
}

/**
 * POST /attestations: one attestation or an array, with a result per item. The cheap checks come
 * first: the builder's signature over the body's length and the time (builderGate, before express);
 * the body's size while it is read; then each attestation's own signature.
 */
export function attestationRoutes(service: Service, metrics: Metrics): Router {
  const { ingestor, config } = service;
  const router = Router();
  router.post('/attestations', async (req, res) => {
    gatedBuilder(req);
    const bytes = await readBody(req, config.ledger.maxRequestBytes);
    let body: unknown;
    try {
      body = JSON.parse(bytes.toString('utf8'));
    } catch (error) {
      throw new QuorumError('bad-json', `request body is not valid JSON: ${(error as Error).message}`, { field: 'body' });
    }
    const many = Array.isArray(body);
    const items: unknown[] = many ? (body as unknown[]) : [body];
    if (items.length === 0) throw new QuorumError('bad-attestation', 'the array holds no attestations');
    if (items.length > config.ledger.maxAttestationsPerRequest) {
      throw new QuorumError('too-large', `at most ${config.ledger.maxAttestationsPerRequest} attestations per request, got ${items.length}`);
    }
    // Parse everything first: one malformed item rejects the request and nothing is written.
    const parsed = items.map((item, i) => parseAttestation(item, many ? `[${i}]` : ''));
    const results = await ingestor.submit(parsed);
    const statuses = new Map<string, number>();
    const refusals = new Map<string, number>();
    for (const r of results) {
      statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
      if (r.status === 'rejected') refusals.set(r.code, (refusals.get(r.code) ?? 0) + 1);
    }
    for (const [status, n] of statuses) metrics.attestations.inc({ status }, n);
    for (const [code, n] of refusals) metrics.refused.inc({ code }, n);
    res.status(statusOf(results)).json(many ? { results } : results[0]);
  });
  return router;
}
