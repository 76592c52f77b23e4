import { QuorumError } from '../errors.js';
import { httpJson } from '../http/client.js';
import { formatPublicKey, publicKeyFromRaw, verifyRaw, type PublicKey } from '../nix/keys.js';
import { evaluate, trustedKeys, type Vote } from '../quorum/evaluate.js';
import { parseCheckpoint, parseNoteVerifierKey, type Checkpoint } from './checkpoint.js';
import { TreeFrontier } from './frontier.js';
import { decodeLeaf } from './leaf.js';
import { LogState } from './logState.js';
import { leafHash, verifyConsistency, verifyInclusion } from './merkle.js';
import { contentKey, statementText, type Attestation } from './statement.js';
import type { Cosignature } from '../witness/cosignature.js';
import { witnessedCheckpoint } from '../witness/refusals.js';
import type { WitnessPolicy } from '../witness/verifyCosigned.js';

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
  /** With a witness policy: the cosignatures that met it. */
  cosignatures?: Cosignature[];
  /** Keys that signed two contents for one output (evidence kept in the log; not tampering). */
  equivocations: Array<{ builder: string; outPath: string; leaves: number[] }>;
  /** What the server shows or serves that does not follow from the log, each naming the leaf, path or policy. */
  problems: string[];
  /** Facts worth knowing that are no failure. */
  notes: string[];
  /** The replay's counts, for the report. */
  replayed: { builders: number; policies: number; attestations: number; decisions: number };
  state: AuditState;
}

const PAGE = 1000;
/** Problems listed one by one; beyond that they are counted. */
const MAX_LISTED = 100;

interface EntriesPage {
  entries: Array<{ index: number; leaf: string }>;
}

type Get = (path: string) => Promise<unknown>;

/** One attestation the replay holds until its signature is checked and its vote counted. */
interface Held {
  index: number;
  attestation: Attestation;
}

/**
 * Audits a ledger without trusting its server, by replaying its log:
 *  1. the checkpoint verifies under the log key (pinned, or remembered from the last run);
 *  2. every leaf decodes; registry and policy leaves are replayed with the identity rule (a name is
 *     bound once, a key has one name ever, small-order keys refused): the registry and policies
 *     come from the log, never from what the server's API says;
 *  3. every attestation's signature verifies under the key its name is bound to in the log; one by
 *     a name the log never registers, or logged after that key's revocation, is a problem;
 *  4. the root recomputed from all leaves equals the checkpoint's root (on mismatch, the leaf whose
 *     inclusion proof fails is named);
 *  5. the tree is an extension of the last checkpoint seen (same root at the old size, and the
 *     server's consistency proof verifies): a smaller tree or another root is a fork;
 *  6. every decision is recomputed with the quorum rule, and every path the server says has quorum
 *     under a policy (GET /api/v1/decisions) must follow from the log with the same content; the
 *     registry and policies the server shows must be the ones the log states.
 */
export async function auditLog(
  server: string,
  options: { verifierKey?: string; previous?: AuditState; witnesses?: WitnessPolicy; onProgress?: (done: number, total: number) => void } = {},
): Promise<AuditReport> {
  const base = server.endsWith('/') ? server : `${server}/`;
  const get: Get = (path) => httpJson(new URL(path, base).href);
  const previous = options.previous;
  const problems: string[] = [];
  const problem = (text: string) => problems.push(text);
  const notes: string[] = [];

  // 1. Checkpoint under a trusted key: the one given, else the remembered one, else the server's (first use).
  const keyText = options.verifierKey ?? previous?.verifierKey ?? String(await get('api/v1/log/key')).trim();
  const verifier = parseNoteVerifierKey(keyText, 'log key');
  if (previous && previous.verifierKey !== keyText) {
    throw new QuorumError('key-changed', `the log key differs from the one seen before (${previous.verifierKey}): refusing to trust a new key silently`);
  }
  // With witnesses: a checkpoint they cosigned, so this is the history everyone else is shown too.
  const witnessed = options.witnesses && (await witnessedCheckpoint(get, verifier, options.witnesses));
  const checkpoint = parseCheckpoint(witnessed?.note ?? String(await get('api/v1/log/checkpoint')), verifier, previous?.origin);

  const state = new LogState();
  const frontier = new TreeFrontier();
  let rootAtPrevious: Buffer | undefined = previous && previous.size === 0 ? frontier.root() : undefined;
  /** Attestations by names not bound yet: a ledger upgraded from before registry leaves logs its registry after them. */
  const unbound = new Map<string, Held[]>();
  const votes = new Map<string, Array<{ builder: string; narHash: string; narSize: number; refs: string }>>();
  const contents = new Map<string, { key: string; leaves: number[]; differs: boolean }>();
  let attestations = 0;
  let early = 0;

  const keys = new Map<string, PublicKey>();
  const keyOf = (name: string) => keys.get(name) ?? keys.set(name, publicKeyFromRaw(name, state.byName(name)!.publicKey)).get(name)!;
  // 3. The signature under the bound key, then the vote.
  const count = ({ index, attestation: a }: Held) => {
    if (!verifyRaw(keyOf(a.builder), statementText(a), a.signature)) {
      throw new QuorumError('tampered', `entry ${index}: the signature by ${a.builder} does not match the statement (${a.outPath})`);
    }
    const refs = a.references.join(',');
    (votes.get(a.outPath) ?? votes.set(a.outPath, []).get(a.outPath)!).push({ builder: a.builder, narHash: a.narHash, narSize: a.narSize, refs });
    const id = `${a.builder} ${a.outPath}`;
    const ck = contentKey({ narHash: a.narHash, narSize: a.narSize, refs });
    const seen = contents.get(id);
    if (!seen) contents.set(id, { key: ck, leaves: [index], differs: false });
    else {
      seen.leaves.push(index);
      seen.differs ||= seen.key !== ck;
    }
  };

  // A page may hold fewer entries than asked for (the server bounds its bytes): the next starts after it.
  for (let start = 0; start < checkpoint.size; ) {
    const end = Math.min(checkpoint.size, start + PAGE);
    const page = (await get(`api/v1/log/entries?start=${start}&end=${end}`)) as EntriesPage;
    if (page.entries.length === 0 || page.entries.length > end - start) throw new QuorumError('tampered', `the server returned ${page.entries.length} entries for [${start}, ${end})`);
    for (const [offset, entry] of page.entries.entries()) {
      const index = start + offset;
      if (entry.index !== index) throw new QuorumError('tampered', `entry ${index}: the server labelled it ${entry.index}`);
      const bytes = Buffer.from(entry.leaf, 'base64');
      // 2. Decode and replay.
      let leaf;
      try {
        leaf = decodeLeaf(bytes);
      } catch (error) {
        throw new QuorumError('tampered', `entry ${index}: ${(error as Error).message}`);
      }
      if (leaf.kind === 'builder') {
        try {
          state.applyRegistry(index, leaf.entry);
        } catch (error) {
          if (!(error instanceof QuorumError)) throw error;
          problem(`entry ${index}: a registry leaf breaks the identity rule: ${error.message.replace(/^leaf \d+: /, '')}`);
        }
        const waiting = leaf.entry.action === 'add' ? unbound.get(leaf.entry.name) : undefined;
        if (waiting && state.byName(leaf.entry.name)?.addedLeaf === index) {
          unbound.delete(leaf.entry.name);
          early += waiting.length;
          waiting.forEach(count);
        }
      } else if (leaf.kind === 'policy') {
        try {
          state.applyPolicy(index, leaf.entry);
        } catch (error) {
          if (!(error instanceof QuorumError)) throw error;
          problem(`entry ${index}: ${error.message.replace(/^leaf \d+: /, '')}`);
        }
      } else {
        attestations++;
        const a = leaf.attestation;
        const bound = state.byName(a.builder);
        if (!bound) (unbound.get(a.builder) ?? unbound.set(a.builder, []).get(a.builder)!).push({ index, attestation: a });
        else {
          if (bound.revokedLeaf !== null) problem(`entry ${index}: ${a.builder} attested ${a.outPath} after the log revoked its key (leaf ${bound.revokedLeaf})`);
          count({ index, attestation: a });
        }
      }
      frontier.push(leafHash(bytes));
      if (previous && frontier.size === previous.size) rootAtPrevious = frontier.root();
    }
    start += page.entries.length;
    options.onProgress?.(start, checkpoint.size);
  }
  for (const [name, held] of unbound) {
    problem(`entries ${held.slice(0, 5).map((h) => h.index).join(', ')}${held.length > 5 ? ` and ${held.length - 5} more` : ''}: signed as ${name}, a name the log never registers`);
  }
  if (early > 0) notes.push(`${early} attestations precede their key's registry leaf: a ledger upgraded from before registry leaves (its registry was logged when it was upgraded)`);

  // 4. Root of what we replayed versus the signed root.
  if (!frontier.root().equals(checkpoint.rootHash)) {
    const culprit = await firstBadEntry(get, checkpoint);
    throw new QuorumError('tampered', `the entries do not hash to the checkpoint's root${culprit === undefined ? '' : `: entry ${culprit} differs from the one the checkpoint commits to`}`);
  }

  // 5. Append-only since the last run.
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

  // 6. What the server shows and serves, against what the log implies.
  await compareRegistry(get, state, problem);
  const decided = await compareDecisions(get, state, votes, problem);

  const equivocations = [...contents.entries()]
    .filter(([, c]) => c.differs)
    .map(([id, c]) => ({ builder: id.split(' ')[0]!, outPath: id.split(' ')[1]!, leaves: c.leaves }));
  const listed = problems.length > MAX_LISTED ? [...problems.slice(0, MAX_LISTED), `and ${problems.length - MAX_LISTED} more problems`] : problems;
  return {
    checkpoint,
    verifiedEntries: checkpoint.size,
    previous,
    ...(witnessed ? { cosignatures: witnessed.cosignatures } : {}),
    equivocations,
    problems: listed,
    notes,
    replayed: { builders: state.builders().length, policies: state.policies.size, attestations, decisions: decided },
    state: { origin: checkpoint.origin, verifierKey: keyText, size: checkpoint.size, rootHash: checkpoint.rootHash.toString('base64') },
  };
}

/** The builders and policies the server's API shows must be the ones the log states (people read them). */
async function compareRegistry(get: Get, state: LogState, problem: (text: string) => void): Promise<void> {
  const { builders } = (await get('api/v1/builders')) as { builders: Array<{ name: string; publicKey: string; active: boolean }> };
  const shown = new Map(builders.map((b) => [b.name, b]));
  for (const b of state.builders()) {
    const s = shown.get(b.name);
    shown.delete(b.name);
    const key = formatPublicKey(publicKeyFromRaw(b.name, b.publicKey));
    if (!s) problem(`builder ${b.name}: registered in the log (leaf ${b.addedLeaf}) but not shown by the server`);
    else if (s.publicKey !== key || s.active !== (b.revokedLeaf === null)) problem(`builder ${b.name}: the server shows ${s.active ? 'an active' : 'a revoked'} key ${s.publicKey}; the log says ${b.revokedLeaf === null ? 'active' : 'revoked'} ${key}`);
  }
  for (const name of shown.keys()) problem(`builder ${name}: shown by the server, but no registry leaf registers it`);

  const { policies } = (await get('api/v1/policies')) as { policies: Array<{ name: string; threshold: number; onConflict: string; builders: string[] | string }> };
  const listed = new Map(policies.map((p) => [p.name, p]));
  for (const p of state.policies.values()) {
    const s = listed.get(p.name);
    listed.delete(p.name);
    const members = p.builders === null ? null : [...p.builders].sort().join(',');
    const shownMembers = s && Array.isArray(s.builders) ? [...s.builders].sort().join(',') : null;
    if (!s) problem(`policy ${p.name}: stated in the log (leaf ${p.leaf}) but not shown by the server`);
    else if (s.threshold !== p.threshold || s.onConflict !== p.onConflict || shownMembers !== members) problem(`policy ${p.name}: the server shows another policy than its leaf ${p.leaf} states`);
  }
  for (const name of listed.keys()) problem(`policy ${name}: shown by the server, but no policy leaf states it`);
}

/**
 * Recomputes every decision from the replayed log, and checks each path the server gives as having
 * quorum (for every policy the server lists, the log's or not) against it. Returns how many paths the
 * log gives quorum under some policy.
 */
async function compareDecisions(get: Get, state: LogState, votes: Map<string, Array<{ builder: string; narHash: string; narSize: number; refs: string }>>, problem: (text: string) => void): Promise<number> {
  const keyOf = (name: string) => state.byName(name)!.keyId;
  let decided = 0;
  const { policies } = (await get('api/v1/policies')) as { policies: Array<{ name: string }> };
  const names = new Set([...state.policies.keys(), ...policies.map((p) => p.name)]);
  for (const name of names) {
    const policy = state.policies.get(name);
    const trusted = policy ? trustedKeys(policy, state) : new Set<string>();
    const quorum = new Map<string, string>();
    if (policy) {
      for (const [outPath, pathVotes] of votes) {
        const d = evaluate(policy, trusted, pathVotes.map((v): Vote => ({ key: keyOf(v.builder), narHash: v.narHash, narSize: v.narSize, refs: v.refs })));
        if (d.status === 'quorum') quorum.set(outPath, contentKey(d.content!));
      }
      decided += quorum.size;
    }
    for (let after = ''; ; ) {
      let page: { decisions: Array<{ outPath: string; narHash: string; narSize: number; references: string[] }>; next: string | null };
      try {
        page = (await get(`api/v1/decisions?policy=${encodeURIComponent(name)}&after=${encodeURIComponent(after)}&limit=1000`)) as typeof page;
      } catch (error) {
        if (error instanceof QuorumError && error.remoteCode === 'unknown-policy' && !policies.some((p) => p.name === name)) break;
        throw error;
      }
      for (const d of page.decisions) {
        const expected = quorum.get(d.outPath);
        const served = contentKey({ narHash: d.narHash, narSize: d.narSize, refs: d.references.join(',') });
        if (expected === undefined) problem(`${d.outPath}: served under policy ${name}, but the log gives it no quorum there`);
        else if (expected !== served) problem(`${d.outPath}: served under policy ${name} with ${d.narHash}, but the log's quorum is on other content`);
      }
      if (page.next === null) break;
      after = page.next;
    }
  }
  return decided;
}

/**
 * Finds the first entry whose served leaf is not the one under the signed root, by checking
 * inclusion proofs (the rare failure path: entries are fetched again rather than kept in memory).
 */
async function firstBadEntry(get: Get, checkpoint: Checkpoint): Promise<number | undefined> {
  for (let start = 0; start < checkpoint.size; ) {
    const end = Math.min(checkpoint.size, start + PAGE);
    const page = (await get(`api/v1/log/entries?start=${start}&end=${end}`)) as EntriesPage;
    if (page.entries.length === 0) return start;
    start += page.entries.length;
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
