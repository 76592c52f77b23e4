import { QuorumError } from '../errors.js';
import { openNote, parseCheckpointBody, strictBase64, type Checkpoint, type NoteSignature } from '../ledger/checkpoint.js';
import { HASH_SIZE } from '../ledger/merkle.js';

/**
 * The body of a c2sp.org/tlog-witness add-checkpoint request:
 *
 *   old <size>\n
 *   <base64 consistency proof hash>\n   (0 to 63 lines)
 *   \n
 *   <checkpoint: a signed note>
 */

/** tlog-witness: a client must not send more than 63 consistency proof lines. */
export const MAX_PROOF_LINES = 63;

export interface AddCheckpointRequest {
  oldSize: number;
  proof: Buffer[];
  /** The checkpoint note as received, every signature line included. */
  note: string;
  /** Its text (origin, size, root), with the final newline: what the log and the witnesses sign. */
  body: string;
  checkpoint: Checkpoint;
  signatures: NoteSignature[];
}

export function formatAddCheckpoint(oldSize: number, proof: readonly Uint8Array[], note: string): string {
  return `old ${oldSize}\n${proof.map((h) => `${Buffer.from(h).toString('base64')}\n`).join('')}\n${note}`;
}

/** Parses a request body; anything malformed is a QuorumError 'bad-add-checkpoint' (HTTP 400). */
export function parseAddCheckpoint(text: string): AddCheckpointRequest {
  // The header lines are never empty, so the first blank line ends them.
  const split = text.indexOf('\n\n');
  if (split < 0) bad('the body must be an "old <size>" line, proof lines, a blank line and a checkpoint');
  const [oldLine, ...proofLines] = text.slice(0, split).split('\n') as [string, ...string[]];
  const old = /^old (0|[1-9][0-9]*)$/.exec(oldLine);
  if (!old || !Number.isSafeInteger(Number(old[1]))) bad(`the first line must be "old <size>" in decimal without leading zeros (at most 2^53-1), got ${JSON.stringify(oldLine.slice(0, 40))}`);
  if (proofLines.length > MAX_PROOF_LINES) bad(`at most ${MAX_PROOF_LINES} consistency proof lines, got ${proofLines.length}`);
  const proof = proofLines.map((line, i) => {
    const hash = strictBase64(line);
    if (!hash || hash.length !== HASH_SIZE) bad(`consistency proof line ${i + 1} must be the base64 of a ${HASH_SIZE}-byte hash`);
    return hash;
  });
  const note = text.slice(split + 2);
  let opened: ReturnType<typeof openNote>;
  let checkpoint: Checkpoint;
  try {
    opened = openNote(note);
    checkpoint = parseCheckpointBody(opened.body);
  } catch (error) {
    bad(`the checkpoint is malformed: ${(error as Error).message}`);
  }
  return { oldSize: Number(old[1]), proof, note, body: opened.body, checkpoint, signatures: opened.signatures };
}

function bad(message: string): never {
  throw new QuorumError('bad-add-checkpoint', message);
}
