import express, { Router } from 'express';
import { QuorumError } from '../errors.js';
import { parseAttestation } from '../ledger/attestation.js';
import type { IngestResult } from '../ledger/ingest.js';
import type { Metrics } from '../metrics.js';
import type { Service } from '../service.js';

/** HTTP status of a one-item submission; arrays answer 200 unless every item was rejected. */
function statusOf(results: IngestResult[]): number {
  const ok = results.filter((r) => r.status !== 'rejected');
  if (ok.length === 0 && results[0]?.status === 'rejected') return results[0].code === 'bad-signature' ? 400 : 403;
  if (results.length === 1 && results[0]!.status === 'accepted') return 201;
  return 200;
}

/** POST /attestations: one attestation or an array, with a result per item. */
export function attestationRoutes(service: Service, metrics: Metrics): Router {
  const { ingestor, config } = service;
  const router = Router();
  // Each attestation is < 64 KiB even with many references; the limit scales with the batch size.
  const json = express.json({ limit: config.ledger.maxAttestationsPerRequest * 64 * 1024, strict: false });
  router.post('/attestations', json, async (req, res) => {
    const body: unknown = req.body;
    const many = Array.isArray(body);
    const items = many ? body : [body];
    if (items.length === 0) throw new QuorumError('bad-attestation', 'the array holds no attestations');
    if (items.length > config.ledger.maxAttestationsPerRequest) {
      throw new QuorumError('too-large', `at most ${config.ledger.maxAttestationsPerRequest} attestations per request, got ${items.length}`);
    }
    // Parse everything first: one malformed item rejects the request and nothing is written.
    const parsed = items.map((item, i) => parseAttestation(item, many ? `[${i}]` : ''));
    const results = await ingestor.submit(parsed);
    const counts = new Map<IngestResult['status'], number>();
    for (const r of results) counts.set(r.status, (counts.get(r.status) ?? 0) + 1);
    for (const [status, n] of counts) metrics.attestations.inc({ status }, n);
    res.status(statusOf(results)).json(many ? { results } : results[0]);
  });
  return router;
}
