import { Router } from 'express';
import { QuorumError } from '../errors.js';
import { leavesByIndex } from '../ledger/queries.js';
import type { Service } from '../service.js';
import { CosignatureStore, servedCheckpoint } from '../witness/cosignatures.js';
import { query, queryOf, treeIndex } from './query.js';

const MAX_ENTRIES_PER_CALL = 1000;
/** Leaf bytes per page: a page of the largest leaves (1 MiB each) still fits a client's memory; it may then hold fewer entries. */
const MAX_PAGE_BYTES = 4 * 1024 * 1024;

const ENTRIES = queryOf({ start: treeIndex('start'), end: treeIndex('end') });
const INCLUSION = queryOf({ index: treeIndex('index'), size: treeIndex('size') });
const CONSISTENCY = queryOf({ first: treeIndex('first'), second: treeIndex('second') });

/** The transparency log: checkpoint, key, leaves of every kind, and RFC 9162 proofs. */
export function logRoutes(service: Service): Router {
  const { db, log, checkpoints } = service;
  const router = Router();
  const cosignatures = new CosignatureStore(db);
  router.get('/log/checkpoint', (req, res) => res.type('text/plain; charset=utf-8').send(servedCheckpoint(cosignatures, checkpoints, req.query.cosigned)));
  router.get('/log/key', (_req, res) => res.type('text/plain; charset=utf-8').send(`${service.noteVerifierText}\n`));
  router.get('/log/entries', (req, res) => {
    const { start, end } = query(req, ENTRIES);
    const size = log.size();
    if (end <= start) throw new QuorumError('bad-query', 'end must be greater than start (end is exclusive)', { field: 'end' });
    if (end > size) throw new QuorumError('bad-query', `end must be at most the tree size ${size}`, { field: 'end' });
    const leaves = leavesByIndex(db, start, Math.min(end, start + MAX_ENTRIES_PER_CALL), MAX_PAGE_BYTES);
    res.json({ entries: leaves.map(({ index, leaf, kind, builder, createdAt }) => ({ index, leaf: leaf.toString('base64'), kind, ...(builder === undefined ? {} : { builder, createdAt }) })) });
  });
  router.get('/log/proof/inclusion', (req, res) => {
    const { index, size } = query(req, INCLUSION);
    if (size > log.size()) throw new QuorumError('bad-query', `size must be at most the tree size ${log.size()}`, { field: 'size' });
    if (index >= size) throw new QuorumError('bad-query', 'index must be less than size', { field: 'index' });
    res.json({ index, size, hashes: log.inclusionProof(index, size).map((h) => h.toString('base64')) });
  });
  router.get('/log/proof/consistency', (req, res) => {
    const { first, second } = query(req, CONSISTENCY);
    if (second > log.size()) throw new QuorumError('bad-query', `second must be at most the tree size ${log.size()}`, { field: 'second' });
    if (first > second) throw new QuorumError('bad-query', 'first must not exceed second', { field: 'first' });
    res.json({ first, second, hashes: log.consistencyProof(first, second).map((h) => h.toString('base64')) });
  });
  return router;
}
