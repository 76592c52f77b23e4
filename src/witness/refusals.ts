import { createHash } from 'node:crypto';
import { QuorumError } from '../errors.js';
import { httpJson } from '../http/client.js';
import { parseCheckpoint, type Checkpoint, type NoteVerifierKey } from '../ledger/checkpoint.js';
import { verifyConsistency } from '../ledger/merkle.js';
import { verifyCosignatures, type Cosignature, type CosignerVerifier } from './cosignature.js';
import type { Evidence } from './state.js';
import type { WitnessStatus } from './submitter.js';
import { verifyCosigned, type WitnessPolicy } from './verifyCosigned.js';

type Get = (path: string) => Promise<unknown>;

/** A new checkpoint is cosigned within moments; a log whose newest stays uncosigned this long is not witnessed. */
const WITNESS_WAIT_MS = 10_000;
const POLL_MS = 500;

/**
 * The checkpoint an auditor checks under a witness policy: the server's newest, once it carries
 * `threshold` valid cosignatures (it is asked again for up to WITNESS_WAIT_MS, as the newest may be
 * moments old). Not the newest witnessed one: a fork that keeps an old witnessed prefix and shows
 * unwitnessed checkpoints on top must fail. If it fails, the error says why for each witness that
 * did not cosign (refusals).
 */
export async function witnessedCheckpoint(get: Get, logKey: NoteVerifierKey, policy: WitnessPolicy, waitMs = WITNESS_WAIT_MS): Promise<{ note: string; cosignatures: Cosignature[] }> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    const note = String(await get('api/v1/log/checkpoint'));
    try {
      const { cosignatures } = verifyCosigned(note, logKey, policy);
      return { note, cosignatures };
    } catch (error) {
      if (!(error instanceof QuorumError) || error.code !== 'not-witnessed') throw error;
      if (Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, POLL_MS));
        continue;
      }
      const checkpoint = parseCheckpoint(note, logKey);
      const cosigned = verifyCosignatures(note, policy.witnesses).map((c) => c.witness);
      const lines = await refusals(get, checkpoint, logKey, policy.witnesses.filter((w) => !cosigned.includes(w)));
      throw new QuorumError('not-witnessed', [error.message, ...lines.map((l) => `  ${l}`)].join('\n'));
    }
  }
}

/**
 * Why each witness did not cosign `checkpoint`, as far as can be learnt: what the server says it was
 * told (unauthenticated: the server may lie), and, from the witness itself at the URL the server
 * names, the checkpoint it did cosign (checked under the log key and the witness key, so it is proof:
 * a tree it cosigned that this server's tree does not extend is a fork) and the refused checkpoints
 * it keeps as evidence (only those the log key signed count).
 */
export async function refusals(get: Get, checkpoint: Checkpoint, logKey: NoteVerifierKey, witnesses: readonly CosignerVerifier[]): Promise<string[]> {
  let reported: WitnessStatus[] = [];
  try {
    reported = ((await get('api/v1/log/witnesses')) as { witnesses?: WitnessStatus[] }).witnesses ?? [];
  } catch {
    // A server without witnesses configured, or one that hides them: the witnesses are named anyway.
  }
  const lines: string[] = [];
  for (const witness of witnesses) {
    const status = reported.find((r) => r.vkey === witness.text);
    if (!status) {
      lines.push(`${witness.name}: the server does not list this witness`);
      continue;
    }
    const error = status.lastError ? `${status.lastError.status ?? 'no answer'}: ${status.lastError.message} (${status.lastError.at})` : 'no error recorded';
    lines.push(`${witness.name} (${status.url}): the server reports ${error}; cosigned up to ${status.cosignedSize ?? 'nothing'}`);
    lines.push(...(await fromWitness(get, status.url, checkpoint, logKey, witness)).map((l) => `${witness.name}: ${l}`));
  }
  return lines;
}

async function fromWitness(get: Get, url: string, checkpoint: Checkpoint, logKey: NoteVerifierKey, witness: CosignerVerifier): Promise<string[]> {
  const base = url.endsWith('/') ? url : `${url}/`;
  const lines: string[] = [];
  try {
    const head = String(await httpJson(new URL(`${createHash('sha256').update(checkpoint.origin).digest('hex')}/checkpoint`, base).href, { timeoutMs: 10_000 }));
    const held = parseCheckpoint(head, logKey, checkpoint.origin);
    if (verifyCosignatures(head, [witness]).length === 0) throw new QuorumError('tampered', 'its checkpoint carries no valid cosignature of its own key');
    lines.push(await compare(get, held, checkpoint));
  } catch (error) {
    lines.push(`its latest cosigned checkpoint could not be checked: ${(error as Error).message}`);
  }
  try {
    const { evidence } = (await httpJson(new URL(`evidence?origin=${encodeURIComponent(checkpoint.origin)}&limit=20`, base).href, { timeoutMs: 10_000 })) as { evidence: Evidence[] };
    const signed = evidence.filter((e) => {
      try {
        parseCheckpoint(e.note, logKey, checkpoint.origin);
        return true;
      } catch {
        return false;
      }
    });
    if (signed.length > 0) {
      const last = signed[0]!;
      lines.push(`it keeps ${signed.length}${evidence.length === 20 ? '+' : ''} refused checkpoint(s) signed by the log key as evidence; the latest: ${last.status} ${last.reason} (${last.receivedAt})`);
    }
  } catch (error) {
    lines.push(`its evidence could not be read: ${(error as Error).message}`);
  }
  return lines;
}

/** What the witness's own cosigned checkpoint says about the one this server shows. */
async function compare(get: Get, held: Checkpoint, shown: Checkpoint): Promise<string> {
  const what = `it cosigned a checkpoint of ${held.size} entries (root ${held.rootHash.toString('base64')}), signed by the log key`;
  if (held.size === shown.size) {
    return held.rootHash.equals(shown.rootHash) ? `${what}: this very tree` : `${what}: FORK, the log signed two different trees of ${held.size} entries`;
  }
  if (held.size > shown.size) return `${what}: larger than the ${shown.size} entries this server shows, so the server shows an old or forked history`;
  try {
    const proof = (await get(`api/v1/log/proof/consistency?first=${held.size}&second=${shown.size}`)) as { hashes: string[] };
    verifyConsistency(held.size, shown.size, proof.hashes.map((h) => Buffer.from(h, 'base64')), held.rootHash, shown.rootHash);
    return `${what}: this server's tree extends it (the witness is behind)`;
  } catch (error) {
    return `${what}: FORK, this server's tree does not extend it (${(error as Error).message})`;
  }
}
