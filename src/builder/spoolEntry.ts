import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { QuorumError } from '../errors.js';
import { describeZodError, parseAttestation } from '../ledger/attestation.js';
import type { Spool, SpoolEntry } from './spool.js';

/*
 * Reading spool entries back (the agent, flush), apart from spool.ts: the post-build hook only
 * writes entries and must not pay for loading zod.
 */

const ENTRY_NAME = /^[0-9a-df-np-sv-z]{32}-[0-9a-f]{16}\.json$/;

const envelope = z
  .object({
    version: z.literal(1, 'version must be 1'),
    attestation: z.record(z.string(), z.unknown(), 'attestation must be an object'),
    store: z.string().min(1).nullable(),
    createdAt: z.string(),
  })
  .strict();

/** Reads and validates an entry; throws 'bad-spool-entry' for anything the agent cannot submit. */
export function readSpoolEntry(spool: Spool, name: string): SpoolEntry {
  if (!ENTRY_NAME.test(name)) throw new QuorumError('bad-spool-entry', `${name}: not a spool entry name (<hashPart>-<16 hex>.json)`);
  const text = readFileSync(join(spool.dir, name), 'utf8');
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new QuorumError('bad-spool-entry', `${name}: not valid JSON (${(e as Error).message})`);
  }
  const parsed = envelope.safeParse(json);
  if (!parsed.success) throw new QuorumError('bad-spool-entry', `${name}: ${describeZodError(parsed.error)}`);
  try {
    return { name, attestation: parseAttestation(parsed.data.attestation, 'attestation'), store: parsed.data.store };
  } catch (e) {
    throw new QuorumError('bad-spool-entry', `${name}: ${(e as Error).message}`);
  }
}
