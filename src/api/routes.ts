import express, { Router, type Request } from 'express';
import { z } from 'zod';
import { QuorumError } from '../errors.js';
import { describeZodError, parseAttestation } from '../ledger/attestation.js';
import type { IngestResult } from '../ledger/ingest.js';
import { encodeLeaf } from '../ledger/leaf.js';
import { attestationOf, attestationsByLeaf, attestationsOfHashPart, conflicts } from '../ledger/queries.js';
import { builderJson } from '../ledger/registry.js';
import { parsePublicKey } from '../nix/keys.js';
import { parseHashPart } from '../nix/storePath.js';
import { policyInput, policyJson, requirePolicy } from '../quorum/policies.js';
import type { Metrics } from '../metrics.js';
import type { Service } from '../service.js';
import { requireAdmin } from './auth.js';

const MAX_ENTRIES_PER_CALL = 1000;

/** Parses query parameters with zod, throwing a 400 that names the parameter. */
function query<T extends z.ZodRawShape>(req: Request, shape: T): z.output<z.ZodObject<T>> {
  const parsed = z.object(shape).safeParse(req.query);
  if (!parsed.success) throw new QuorumError('bad-query', describeZodError(parsed.error), { field: String(parsed.error.issues[0]?.path[0] ?? '') });
  return parsed.data;
}

const treeIndex = (name: string) => z.coerce.number({ error: `${name} must be a non-negative integer` }).int(`${name} must be an integer`).min(0, `${name} must be at least 0`).max(Number.MAX_SAFE_INTEGER);

/** HTTP status of a one-item submission; arrays answer 200 unless every item was rejected. */
function statusOf(results: IngestResult[]): number {
  const ok = results.filter((r) => r.status !== 'rejected');
  if (ok.length === 0 && results[0]?.status === 'rejected') return results[0].code === 'bad-signature' ? 400 : 403;
  if (results.length === 1 && results[0]!.status === 'accepted') return 201;
  return 200;
}

export function apiRoutes(service: Service, metrics: Metrics): Router {
  const { db, registry, ingestor, decisions, log, checkpoints, config } = service;
  const router = Router();
  const admin = requireAdmin(service.adminToken);
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

  router.get('/paths/:hashPart', (req, res) => {
    const hashPart = parseHashPart(String(req.params.hashPart), 'hashPart');
    const attestations = attestationsOfHashPart(db, hashPart);
    const outPaths = [...new Set(attestations.map((a) => a.outPath))];
    res.json({
      hashPart,
      paths: outPaths.map((outPath) => ({
        outPath,
        attestations: attestations.filter((a) => a.outPath === outPath),
        decisions: decisions.evaluatePath(outPath).map(({ policy, decision }) => ({ policy: policy.name, ...decision })),
        conflicts: conflicts(db, { limit: 100, outPath }),
      })),
    });
  });

  router.get('/builders', (_req, res) => res.json({ builders: registry.list().map(builderJson) }));
  router.post('/builders', admin, express.json(), (req, res) => {
    const body = z.object({ publicKey: z.string({ error: 'publicKey must be a Nix public key name:base64' }) }).strict().safeParse(req.body);
    if (!body.success) throw new QuorumError('bad-builder', describeZodError(body.error), { field: 'publicKey' });
    res.status(201).json(builderJson(registry.add(parsePublicKey(body.data.publicKey))));
  });
  router.post('/builders/:name/revoke', admin, (req, res) => res.json(builderJson(registry.revoke(String(req.params.name)))));

  router.get('/policies', (_req, res) => res.json({ policies: decisions.getPolicies().map(policyJson) }));
  router.put('/policies/:name', admin, express.json(), (req, res) => {
    const parsed = policyInput.safeParse({ ...req.body, name: req.params.name });
    if (!parsed.success) throw new QuorumError('bad-policy', describeZodError(parsed.error), { field: String(parsed.error.issues[0]?.path[0] ?? '') });
    const p = parsed.data;
    decisions.setPolicy({ name: p.name, threshold: p.threshold, onConflict: p.onConflict, builders: p.builders === null ? null : new Set(p.builders) });
    res.json(policyJson(requirePolicy(decisions.getPolicies(), p.name)));
  });

  router.get('/conflicts', (req, res) => {
    const { limit } = query(req, { limit: z.coerce.number().int().min(1).max(1000).default(100) });
    res.json({ conflicts: conflicts(db, { limit }) });
  });

  router.get('/log/checkpoint', (_req, res) => {
    res.type('text/plain; charset=utf-8').send(checkpoints.latest()?.note ?? checkpoints.publish().note);
  });
  router.get('/log/key', (_req, res) => res.type('text/plain; charset=utf-8').send(`${service.noteVerifierText}\n`));
  router.get('/log/entries', (req, res) => {
    const { start, end } = query(req, { start: treeIndex('start'), end: treeIndex('end') });
    const size = log.size();
    if (end <= start) throw new QuorumError('bad-query', 'end must be greater than start (end is exclusive)', { field: 'end' });
    if (end > size) throw new QuorumError('bad-query', `end must be at most the tree size ${size}`, { field: 'end' });
    const records = attestationsByLeaf(db, start, Math.min(end, start + MAX_ENTRIES_PER_CALL));
    res.json({ entries: records.map((r) => ({ index: r.leafIndex, leaf: encodeLeaf(attestationOf(r)).toString('base64'), builder: r.builder, createdAt: r.createdAt })) });
  });
  router.get('/log/proof/inclusion', (req, res) => {
    const { index, size } = query(req, { index: treeIndex('index'), size: treeIndex('size') });
    if (size > log.size()) throw new QuorumError('bad-query', `size must be at most the tree size ${log.size()}`, { field: 'size' });
    if (index >= size) throw new QuorumError('bad-query', 'index must be less than size', { field: 'index' });
    res.json({ index, size, hashes: log.inclusionProof(index, size).map((h) => h.toString('base64')) });
  });
  router.get('/log/proof/consistency', (req, res) => {
    const { first, second } = query(req, { first: treeIndex('first'), second: treeIndex('second') });
    if (second > log.size()) throw new QuorumError('bad-query', `second must be at most the tree size ${log.size()}`, { field: 'second' });
    if (first > second) throw new QuorumError('bad-query', 'first must not exceed second', { field: 'first' });
    res.json({ first, second, hashes: log.consistencyProof(first, second).map((h) => h.toString('base64')) });
  });

  return router;
}
