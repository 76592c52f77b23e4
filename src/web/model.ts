import type { Follower, MirrorEvidence, MirrorStatus } from '../mirror/follower.js';
import { QuorumError } from '../errors.js';
import { contentKey, statementText } from '../ledger/statement.js';
import { attestationOf, attestationsByLeaf, attestationsOfHashPart, conflicts, hashPartRange, type AttestationRecord, type ConflictRecord } from '../ledger/queries.js';
import { formatPublicKey } from '../nix/keys.js';
import { STORE_DIR, type HashPart } from '../nix/storePath.js';
import type { Decision, DecisionStatus } from '../quorum/evaluate.js';
import { DEFAULT_POLICY, policyJson } from '../quorum/policies.js';
import type { Service } from '../service.js';
import { CosignatureStore } from '../witness/cosignatures.js';
import { parseCosignerVerifier } from '../witness/cosignature.js';
import { PATH_CLASSES, type IndexedPath, type PathClass, type WebIndex } from './webIndex.js';

/**
 * What each page shows, as plain JSON-able data: the HTML pages render it and /api/v1 serves it
 * unchanged, so the two can never disagree.
 */

export interface WebContext {
  service: Service;
  index: WebIndex;
  /** On a mirror: what it follows (the log page shows it). */
  follower?: Follower;
}

export const PAGE_SIZE = 50;
/** Search counts matches up to this many, so a common name costs a bounded scan. */
export const COUNT_CAP = 1000;
const RECENT = 10;
const NIX32 = '0123456789abcdfghijklmnpqrsvwxyz';
const HASH_PART_PREFIX = new RegExp(`^([${NIX32}]{32})(?:-(.*))?$`);
const MAX_QUERY = 200;

export interface CheckpointJson {
  size: number;
  rootHash: string;
  createdAt: string;
  note: string;
}

function checkpointJson(c: { size: number; rootHash: Buffer; createdAt: number; note: string }): CheckpointJson {
  return { size: c.size, rootHash: c.rootHash.toString('base64'), createdAt: new Date(c.createdAt).toISOString(), note: c.note };
}

/** How far the web index has read the log: pages say so when it is behind. */
export interface IndexProgress {
  indexed: number;
  logSize: number;
}

function progress(index: WebIndex): IndexProgress {
  return { indexed: index.indexed(), logSize: index.logSize() };
}

export interface PathSummaryJson {
  outPath: string;
  hashPart: string;
  name: string;
  builders: number;
  contents: number;
  class: PathClass;
  lastLeaf: number;
  /** Status under the default policy. */
  status: DecisionStatus;
}

function pathSummaries(ctx: WebContext, paths: IndexedPath[]): PathSummaryJson[] {
  const status = ctx.service.db.prepare('SELECT status FROM decisions WHERE policy = ? AND out_path = ?').pluck();
  return paths.map((p) => ({
    outPath: p.outPath,
    hashPart: p.outPath.slice(STORE_DIR.length + 1, STORE_DIR.length + 33),
    name: p.outPath.slice(STORE_DIR.length + 34),
    builders: p.builders,
    contents: p.contents,
    class: p.class,
    lastLeaf: p.lastLeaf,
    // Every indexed path is attested; without a decision row it is pending.
    status: (status.get(DEFAULT_POLICY, p.outPath) as DecisionStatus | undefined) ?? 'pending',
  }));
}

// ---- overview ----

export interface OverviewData {
  origin: string;
  treeSize: number;
  checkpoint: CheckpointJson | null;
  index: IndexProgress;
  paths: { total: number } & Record<PathClass, number>;
  policies: Array<ReturnType<typeof policyJson> & { advertised: number }>;
  recentAttestations: AttestationRecord[];
  recentConflicts: ConflictRecord[];
}

export function overviewData(ctx: WebContext): OverviewData {
  const { service, index } = ctx;
  const treeSize = service.log.size();
  const latest = service.checkpoints.latest();
  const counts = index.classCounts();
  const advertised = index.advertised();
  return {
    origin: service.origin,
    treeSize,
    checkpoint: latest ? checkpointJson(latest) : null,
    index: progress(index),
    paths: { total: PATH_CLASSES.reduce((n, c) => n + counts[c], 0), ...counts },
    policies: service.policies.list().map((p) => ({ ...policyJson(p, service.registry), advertised: advertised.get(p.name) ?? 0 })),
    recentAttestations: attestationsByLeaf(service.db, Math.max(0, treeSize - RECENT), treeSize).reverse(),
    recentConflicts: conflicts(service.db, { limit: 5 }),
  };
}

// ---- search ----

export type SearchQuery =
  | { kind: 'empty' }
  | { kind: 'hash-part'; hashPart: HashPart }
  | { kind: 'name'; text: string }
  | { kind: 'invalid'; text: string; message: string };

/**
 * What a query asks for: a store path, a derivation path, a base name or a bare hash part all mean
 * "this hash part" (outputs and derivations share the hash part space); anything else is a
 * substring of path names.
 */
export function parseSearchQuery(q: string): SearchQuery {
  const text = q.trim();
  if (text === '') return { kind: 'empty' };
  if (text.length > MAX_QUERY) return { kind: 'invalid', text: text.slice(0, MAX_QUERY), message: `a query is at most ${MAX_QUERY} characters` };
  const isPath = text.startsWith(`${STORE_DIR}/`);
  const match = HASH_PART_PREFIX.exec(isPath ? text.slice(STORE_DIR.length + 1) : text);
  if (match) return { kind: 'hash-part', hashPart: match[1] as HashPart };
  if (isPath) return { kind: 'invalid', text, message: `a store path is ${STORE_DIR}/ then 32 characters of ${NIX32} then -name` };
  if (text.length < 3) return { kind: 'invalid', text, message: 'type at least 3 characters of a name, or a store path, derivation path or hash part' };
  // Nothing else can occur in a store path's name; and the index need never see a NUL or a lone surrogate.
  if (/[^A-Za-z0-9+\-._?=]/.test(text)) return { kind: 'invalid', text: text.replace(/[^\x20-\x7e]/g, '\ufffd'), message: 'store path names hold only A-Z a-z 0-9 + - . _ ? =' };
  return { kind: 'name', text };
}

export interface SearchData {
  q: string;
  query: SearchQuery;
  results: PathSummaryJson[];
  /** Matches counted, up to `countCap`. */
  matches: number;
  countCap: number;
  /** Pass as `before` for the next page; null on the last page. */
  next: number | null;
  index: IndexProgress;
}

export function searchData(ctx: WebContext, q: string, before?: number): SearchData {
  const query = parseSearchQuery(q);
  const base = { q, query, countCap: COUNT_CAP, index: progress(ctx.index) };
  if (query.kind === 'hash-part') {
    const [lo, hi] = hashPartRange(query.hashPart);
    const outPaths = ctx.service.db
      .prepare('SELECT out_path FROM attestations WHERE out_path >= @lo AND out_path < @hi UNION SELECT out_path FROM attestations WHERE drv_path >= @lo AND drv_path < @hi LIMIT @limit')
      .pluck()
      .all({ lo, hi, limit: PAGE_SIZE }) as string[];
    const results = pathSummaries(ctx, ctx.index.paths(outPaths));
    return { ...base, results, matches: results.length, next: null };
  }
  if (query.kind === 'name') {
    const found = ctx.index.searchNames(query.text, PAGE_SIZE + 1, before);
    const page = found.slice(0, PAGE_SIZE);
    return {
      ...base,
      results: pathSummaries(ctx, page),
      matches: ctx.index.countNames(query.text, COUNT_CAP + 1),
      next: found.length > PAGE_SIZE ? page[page.length - 1]!.id : null,
    };
  }
  return { ...base, results: [], matches: 0, next: null };
}

// ---- one hash part ----

export interface ContentGroup {
  /** A, B, C…: the largest group first. */
  label: string;
  narHash: string;
  narSize: number;
  references: string[];
  builders: string[];
  leaves: number[];
}

export interface PathDecision extends Omit<Decision, 'content'> {
  policy: ReturnType<typeof policyJson>;
  /** Served by the substituter: quorum and the NAR of the agreed content is held. */
  served: boolean;
}

export interface Equivocation {
  builder: string;
  /** Every statement the key signed for this path (two or more contents): the evidence. */
  statements: Array<{ leafIndex: number; group: string; statement: string }>;
}

export interface OutputData {
  outPath: string;
  attestations: Array<AttestationRecord & { group: string }>;
  groups: ContentGroup[];
  decisions: PathDecision[];
  equivocations: Equivocation[];
}

export interface PathData {
  hashPart: string;
  treeSize: number;
  /** The page's attestation rows come after this leaf; `next` is where the following page starts. */
  after: number | null;
  next: number | null;
  /** Usually one; several only if builders disagree on the name behind one hash part. */
  outputs: OutputData[];
}

const groupLabel = (i: number): string => (i < 26 ? String.fromCharCode(65 + i) : `${groupLabel(Math.floor(i / 26) - 1)}${String.fromCharCode(65 + (i % 26))}`);

/** Attestation rows per page of the path page (groups, decisions and evidence are over all of them). */
export const PATH_PAGE_ROWS = 200;

function outputData(ctx: WebContext, outPath: string, records: AttestationRecord[], shown: (r: AttestationRecord) => boolean): OutputData {
  // Agreement groups: attestations of the same (narHash, narSize, references), most keys first.
  const keyOf = (r: AttestationRecord) => contentKey({ narHash: r.narHash, narSize: r.narSize, refs: r.references.join(',') });
  const byContent = new Map<string, AttestationRecord[]>();
  for (const r of records) {
    const key = keyOf(r);
    (byContent.get(key) ?? byContent.set(key, []).get(key)!).push(r);
  }
  const keysOf = (rs: AttestationRecord[]) => new Set(rs.map((r) => r.builder)).size;
  const ranked = [...byContent.values()].sort((a, b) => keysOf(b) - keysOf(a) || a[0]!.leafIndex - b[0]!.leafIndex);
  const labelOf = new Map<string, string>();
  const groups = ranked.map((rs, i): ContentGroup => {
    const label = groupLabel(i);
    labelOf.set(keyOf(rs[0]!), label);
    return { label, narHash: rs[0]!.narHash, narSize: rs[0]!.narSize, references: rs[0]!.references, builders: [...new Set(rs.map((r) => r.builder))].sort(), leaves: rs.map((r) => r.leafIndex) };
  });
  const group = (r: AttestationRecord) => labelOf.get(keyOf(r))!;

  const byBuilder = new Map<string, AttestationRecord[]>();
  for (const r of records) (byBuilder.get(r.builder) ?? byBuilder.set(r.builder, []).get(r.builder)!).push(r);
  const equivocations = [...byBuilder]
    .filter(([, rs]) => new Set(rs.map(keyOf)).size > 1)
    .map(([builder, rs]) => ({ builder, statements: rs.map((r) => ({ leafIndex: r.leafIndex, group: group(r), statement: statementText(attestationOf(r)) })) }));

  const held = ctx.service.db.prepare('SELECT 1 FROM nars WHERE nar_hash = ?').pluck();
  const decisions = ctx.service.decisions.evaluatePath(outPath).map(({ policy, decision: { content, ...d } }) => ({
    ...d,
    policy: policyJson(policy, ctx.service.registry),
    served: content !== null && held.get(content.narHash) !== undefined,
  }));
  return { outPath, attestations: records.filter(shown).map((r) => ({ ...r, group: group(r) })), groups, decisions, equivocations };
}

/**
 * Everything about one hash part, or null when no builder attested it; the attestation rows a page
 * at a time after leaf `after`. All of a path's attestations are read for its groups: one key can
 * log only a few statements per path (ledger.maxStatementsPerPath), so they stay few.
 */
export function pathData(ctx: WebContext, hashPart: HashPart, after?: number): PathData | null {
  const records = attestationsOfHashPart(ctx.service.db, hashPart);
  if (records.length === 0) return null;
  const rows = records.filter((r) => after === undefined || r.leafIndex > after);
  const last = rows[Math.min(rows.length, PATH_PAGE_ROWS) - 1]?.leafIndex ?? Infinity;
  const shown = (r: AttestationRecord) => (after === undefined || r.leafIndex > after) && r.leafIndex <= last;
  const outPaths = [...new Set(records.map((r) => r.outPath))];
  return {
    hashPart,
    treeSize: ctx.service.log.size(),
    after: after ?? null,
    next: rows.length > PATH_PAGE_ROWS ? last : null,
    outputs: outPaths.map((p) => outputData(ctx, p, records.filter((r) => r.outPath === p), shown)),
  };
}

// ---- builders ----

export interface BuilderData {
  name: string;
  publicKey: string;
  active: boolean;
  addedAt: string;
  revokedAt: string | null;
  attestations: number;
  paths: number;
  /** Paths another key attested too. */
  shared: number;
  /** Of those, paths where another key signed the same content. */
  agreed: number;
  /** agreed / shared, or null when nothing is shared. */
  agreementRate: number | null;
  /** Paths this key signed two or more contents for. */
  equivocated: number;
  lastSeen: string | null;
  lastLeaf: number | null;
}

export function buildersData(ctx: WebContext): { builders: BuilderData[]; index: IndexProgress } {
  const stats = ctx.index.builderStats();
  const createdAt = ctx.service.db.prepare('SELECT created_at FROM attestations WHERE leaf_index = ?').pluck();
  const builders = ctx.service.registry.list().map((b): BuilderData => {
    const s = stats.get(b.id);
    return {
      name: b.name,
      publicKey: formatPublicKey(b.publicKey),
      active: b.revokedAt === null,
      addedAt: new Date(b.addedAt).toISOString(),
      revokedAt: b.revokedAt === null ? null : new Date(b.revokedAt).toISOString(),
      attestations: s?.attestations ?? 0,
      paths: s?.paths ?? 0,
      shared: s?.shared ?? 0,
      agreed: s?.agreed ?? 0,
      agreementRate: s && s.shared > 0 ? s.agreed / s.shared : null,
      equivocated: s?.equivocated ?? 0,
      lastSeen: s ? new Date(createdAt.get(s.lastLeaf) as number).toISOString() : null,
      lastLeaf: s?.lastLeaf ?? null,
    };
  });
  return { builders, index: progress(ctx.index) };
}

// ---- conflicts ----

export interface ConflictsData {
  /** Keys that signed two contents for one path, newest first. */
  equivocations: ConflictRecord[];
  /** Paths with two or more attested contents, most recently attested first. */
  unreproduced: PathSummaryJson[];
  unreproducedTotal: number;
  /** Pass as `before` for the next page of unreproduced paths. */
  next: number | null;
  index: IndexProgress;
}

export function conflictsData(ctx: WebContext, before?: number): ConflictsData {
  const found = ctx.index.ofClass('unreproduced', PAGE_SIZE + 1, before);
  const page = found.slice(0, PAGE_SIZE);
  return {
    equivocations: before === undefined ? conflicts(ctx.service.db, { limit: 100 }) : [],
    unreproduced: pathSummaries(ctx, page),
    unreproducedTotal: ctx.index.classCounts().unreproduced,
    next: found.length > PAGE_SIZE ? page[page.length - 1]!.lastLeaf : null,
    index: progress(ctx.index),
  };
}

// ---- log ----

export interface LogData {
  origin: string;
  verifierKey: string;
  treeSize: number;
  /** The witnesses this ledger submits to (ledger.witnesses) and the largest size each cosigned. */
  witnesses: Array<{ name: string; vkey: string; url: string; cosignedSize: number | null }>;
  /** Newest first, each with the witnesses' cosignature lines (appended to the note, the checkpoint as served). */
  checkpoints: Array<CheckpointJson & { cosignatures: Array<{ witness: string; vkey: string; timestamp: number; line: string }> }>;
  /** On a mirror: how far it verified the primary, and the evidence of any inconsistency. */
  mirror: (MirrorStatus & { evidence: MirrorEvidence[] }) | null;
}

export function logData(ctx: WebContext, limit = 20): LogData {
  const { service } = ctx;
  const store = new CosignatureStore(service.db);
  const recent = service.checkpoints.recent(limit);
  const cosigned = store.ofSizes(recent.map((c) => c.size));
  const names = new Map(service.config.ledger.witnesses.map((w) => [w.vkey, parseCosignerVerifier(w.vkey).name]));
  const nameOf = (vkey: string) => names.get(vkey) ?? vkey.slice(0, vkey.indexOf('+'));
  return {
    origin: service.origin,
    verifierKey: service.noteVerifierText.trim(),
    treeSize: service.log.size(),
    witnesses: service.config.ledger.witnesses.map((w) => ({ name: nameOf(w.vkey), vkey: w.vkey, url: w.url, cosignedSize: store.latestSize(w.vkey) ?? null })),
    checkpoints: recent.map((c) => ({
      ...checkpointJson(c),
      cosignatures: (cosigned.get(c.size) ?? []).map((s) => ({ witness: nameOf(s.witness), vkey: s.witness, timestamp: s.timestamp, line: s.line })),
    })),
    mirror: ctx.follower ? { ...ctx.follower.current(), evidence: ctx.follower.evidence(5) } : null,
  };
}

/** A `before` cursor from the query string: a non-negative integer, or absent. */
export function parseCursor(value: unknown, field = 'before'): number | undefined {
  if (value === undefined || value === '') return undefined;
  if (typeof value !== 'string' || !/^(0|[1-9][0-9]{0,15})$/.test(value)) throw new QuorumError('bad-query', `${field} must be a non-negative integer from a "next" link`, { field });
  return Number(value);
}
