import { QuorumError } from '../errors.js';
import { strictBase64 } from './checkpoint.js';
import { HASH_SIZE } from './merkle.js';

/**
 * c2sp.org/tlog-proof@v1: an offline-verifiable proof that one entry is in the log, as text:
 *
 *   c2sp.org/tlog-proof@v1
 *   [extra <base64>]          opaque, unauthenticated: we never write it and never trust it
 *   index <decimal, no leading zeros>
 *   <base64 hash>             zero or more: the RFC 6962 inclusion path, leaf's sibling first
 *   <empty line>
 *   <the checkpoint note, verbatim, with the log's signature and the witnesses' cosignatures>
 *
 * Parsing checks the shape only; what makes the proof worth anything (the checkpoint's signatures,
 * the path leading to its root) is checked by the verifier (src/verification/).
 */

export const TLOG_PROOF_V1 = 'c2sp.org/tlog-proof@v1';

export interface TlogProof {
  index: number;
  /** 32-byte hashes, leaf side first. */
  hashes: Buffer[];
  /** The signed checkpoint note, verbatim. */
  checkpoint: string;
}

export function formatTlogProof({ index, hashes, checkpoint }: TlogProof): string {
  return `${TLOG_PROOF_V1}\nindex ${index}\n${hashes.map((h) => `${h.toString('base64')}\n`).join('')}\n${checkpoint}`;
}

export function parseTlogProof(text: string): TlogProof {
  // Hash lines are never empty, so the first blank line ends the proof and starts the checkpoint
  // (which has a blank line of its own, before its signatures).
  const split = text.indexOf('\n\n');
  if (split < 0) bad('a tlog-proof has an empty line between its inclusion proof and its checkpoint');
  const lines = text.slice(0, split).split('\n');
  if (lines[0] !== TLOG_PROOF_V1) bad(`a tlog-proof starts with the line ${TLOG_PROOF_V1}`);
  let at = 1;
  if (lines[at]?.startsWith('extra ')) {
    if (!strictBase64(lines[at]!.slice('extra '.length))) bad('the extra line of a tlog-proof holds standard base64');
    at++;
  }
  const index = /^index (0|[1-9][0-9]*)$/.exec(lines[at] ?? '')?.[1];
  if (index === undefined || !Number.isSafeInteger(Number(index))) bad('a tlog-proof names its entry in a line "index <decimal without leading zeros>"');
  const hashes = lines.slice(at + 1).map((line, i) => {
    const hash = strictBase64(line);
    if (!hash || hash.length !== HASH_SIZE) bad(`inclusion proof line ${i} of the tlog-proof is not the base64 of a ${HASH_SIZE}-byte hash`);
    return hash;
  });
  return { index: Number(index), hashes, checkpoint: text.slice(split + 2) };
}

function bad(message: string): never {
  throw new QuorumError('bad-proof', message);
}
