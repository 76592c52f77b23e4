import { QuorumError } from '../errors.js';
import { httpJson } from '../http/client.js';
import { parsePublicKey, verifyRaw, type PublicKey } from '../nix/keys.js';
import { contentKey, statementText } from './statement.js';
import { parseCheckpoint, parseNoteVerifierKey, type Checkpoint } from './checkpoint.js';
import { TreeFrontier } from './frontier.js';
import { decodeLeaf } from './leaf.js';
import { leafHash, verifyConsistency, verifyInclusion } from './merkle.js';

/** What an auditor remembers between runs: the log's key and the last checkpoint it verified. */
export interface AuditState {
  origin: string;
  verifierKey: string;
  size: number;
  rootHash: string;
}

export interface AuditReport {
  checkpoint: Checkpoint;
  verifiedEntries: number;
  previous: AuditState | undefined;
  /** Keys that signed two contents for one output (evidence kept in the log; not tampering). */
  equivocations: Array<{ builder: string; outPath: string; leaves: number[] }>;
  state: AuditState;
}

const PAGE = 1000;

interface EntriesPage {
  entries: Array<{ index: number; leaf: string }>;
}

/**
 * Audits a ledger without trusting its server:
 *  1. the checkpoint verifies under the log key (pinned, or remembered from the last run);
 *  2. every entry decodes and carries a valid signature by its builder's key;
 *  3. the root recomputed from all entries equals the checkpoint's root (on mismatch, the entry
 *     whose inclusion proof fails is named);
 *  4. the tree is an extension of the last checkpoint seen: same root at the old size, and the
 *     server's consistency proof verifies. A smaller tree or another root at the old size is a fork.
 */
export async function auditLog(
  server: string,
  options: { verifierKey?: string; previous?: AuditState; onProgress?: (done: number, total: number) => void } = {},
): Promise<AuditReport> {
  const base = server.endsWith('/') ? server : `${server}/`;
  const get = (path: string) => httpJson(new URL(path, base).href);
  const previous = options.previous;

  // 1. Checkpoint under a trusted key: the one given, else the remembered one, else the server's (first use).
  const keyText = options.verifierKey ?? previous?.verifierKey ?? String(await get('api/v1/log/key')).trim();
  const verifier = parseNoteVerifierKey(keyText, 'log key');
  if (previous && previous.verifierKey !== keyText) {
    throw new QuorumError('key-changed', `the log key differs from the one seen before (${previous.verifierKey}): refusing to trust a new key silently`);
  }
  const checkpoint = parseCheckpoint(String(await get('api/v1/log/checkpoint')), verifier, previous?.origin);

  // 2. Builder keys, revoked ones included: old entries stay verifiable.
  const { builders } = (await get('api/v1/builders')) as { builders: Array<{ name: string; publicKey: string }> };
  const keys = new Map<string, PublicKey>(builders.map((b) => [b.name, parsePublicKey(b.publicKey)]));

  const frontier = new TreeFrontier();
  let rootAtPrevious: Buffer | undefined = previous && previous.size === 0 ? frontier.root() : undefined;
  const contents = new Map<string, { key: string; leaves: number[]; differs: boolean }>();
  for (let start = 0; start < checkpoint.size; start += PAGE) {
    const end = Math.min(checkpoint.size, start + PAGE);
    const page = (await get(`api/v1/log/entries?start=${start}&end=${end}`)) as EntriesPage;
    if (page.entries.length !== end - start) throw new QuorumError('tampered', `the server returned ${page.entries.length} entries for [${start}, ${end})`);
    for (const [offset, entry] of page.entries.entries()) {
      const index = start + offset;
      if (entry.index !== index) throw new QuorumError('tampered', `entry ${index}: the server labelled it ${entry.index}`);
      const bytes = Buffer.from(entry.leaf, 'base64');
      let attestation;
      try {
        attestation = decodeLeaf(bytes);
      } catch (error) {
        throw new QuorumError('tampered', `entry ${index}: ${(error as Error).message}`);
      }
      const key = keys.get(attestation.builder);
      if (!key) throw new QuorumError('tampered', `entry ${index}: signed by ${attestation.builder}, which is not a known builder key`);
      if (!verifyRaw(key, statementText(attestation), attestation.signature)) {
        throw new QuorumError('tampered', `entry ${index}: the signature by ${attestation.builder} does not match the statement (${attestation.outPath})`);
      }
      const hash = leafHash(bytes);
      frontier.push(hash);
      if (previous && frontier.size === previous.size) rootAtPrevious = frontier.root();
      const id = `${attestation.builder} ${attestation.outPath}`;
      const seen = contents.get(id);
      const ck = contentKey({ narHash: attestation.narHash, narSize: attestation.narSize, refs: attestation.references.join(',') });
      if (!seen) contents.set(id, { key: ck, leaves: [index], differs: false });
      else {
        seen.leaves.push(index);
        seen.differs ||= seen.key !== ck;
      }
    }
    options.onProgress?.(end, checkpoint.size);
  }

  // 3. Root of what we replayed versus the signed root.
  if (!frontier.root().equals(checkpoint.rootHash)) {
    const culprit = await firstBadEntry(get, checkpoint);
    throw new QuorumError('tampered', `the entries do not hash to the checkpoint's root${culprit === undefined ? '' : `: entry ${culprit} differs from the one the checkpoint commits to`}`);
  }

  // 4. Append-only since the last run.
  if (previous) {
    if (checkpoint.size < previous.size) {
      throw new QuorumError('fork', `the log shrank from ${previous.size} to ${checkpoint.size} entries since the last checkpoint seen: history was rewritten`);
    }
    const oldRoot = Buffer.from(previous.rootHash, 'base64');
    if (!rootAtPrevious?.equals(oldRoot)) {
      throw new QuorumError('fork', `the first ${previous.size} entries no longer hash to the root seen before (${previous.rootHash}): history was rewritten`);
    }
    const proof = (await get(`api/v1/log/proof/consistency?first=${previous.size}&second=${checkpoint.size}`)) as { hashes: string[] };
    try {
      verifyConsistency(previous.size, checkpoint.size, proof.hashes.map((h) => Buffer.from(h, 'base64')), oldRoot, checkpoint.rootHash);
    } catch (error) {
      throw new QuorumError('fork', `the server's consistency proof from ${previous.size} to ${checkpoint.size} does not verify: ${(error as Error).message}`);
    }
  }

  const equivocations = [...contents.entries()]
    .filter(([, c]) => c.differs)
    .map(([id, c]) => ({ builder: id.split(' ')[0]!, outPath: id.split(' ')[1]!, leaves: c.leaves }));
  return {
    checkpoint,
    verifiedEntries: checkpoint.size,
    previous,
    equivocations,
    state: { origin: checkpoint.origin, verifierKey: keyText, size: checkpoint.size, rootHash: checkpoint.rootHash.toString('base64') },
  };
}

/**
 * Finds the first entry whose served leaf is not the one under the signed root, by checking
 * inclusion proofs (the rare failure path: entries are fetched again rather than kept in memory).
 */
async function firstBadEntry(get: (path: string) => Promise<unknown>, checkpoint: Checkpoint): Promise<number | undefined> {
  for (let start = 0; start < checkpoint.size; start += PAGE) {
    const end = Math.min(checkpoint.size, start + PAGE);
    const page = (await get(`api/v1/log/entries?start=${start}&end=${end}`)) as EntriesPage;
    for (const entry of page.entries) {
      const proof = (await get(`api/v1/log/proof/inclusion?index=${entry.index}&size=${checkpoint.size}`)) as { hashes: string[] };
      try {
        verifyInclusion(leafHash(Buffer.from(entry.leaf, 'base64')), entry.index, checkpoint.size, proof.hashes.map((h) => Buffer.from(h, 'base64')), checkpoint.rootHash);
      } catch {
        return entry.index;
      }
    }
  }
  return undefined;
}
