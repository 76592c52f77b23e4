import type { Statement } from 'better-sqlite3';
import type { Db } from '../db.js';
import { QuorumError } from '../errors.js';
import type { AppendedBatch } from '../ledger/ingest.js';
import { contentKey } from '../ledger/statement.js';
import type { BuilderRegistry } from '../ledger/registry.js';
import { pathVotes, type PathVote, type VotesOf } from '../ledger/votes.js';
import type { Logger } from '../log.js';
import { STORE_DIR } from '../nix/storePath.js';

/**
 * The web pages' projection of the log (the "Web search" tables of schema.sql): one row per output
 * path with its reproducibility class, a trigram index over path names, class counts and per-builder
 * agreement counters. It is built from the attestations in log order and remembers how many leaves
 * it covers, so any process sharing the database can bring it up to date (a database from before
 * these tables existed is indexed on first start). While it is up to date, each ingest commit
 * extends it inside the commit's transaction, with the votes ingest read (indexCommit).
 */

export type PathClass = 'single' | 'reproduced' | 'unreproduced';
export const PATH_CLASSES: readonly PathClass[] = ['reproduced', 'unreproduced', 'single'];

export interface IndexedPath {
  id: number;
  outPath: string;
  builders: number;
  contents: number;
  class: PathClass;
  lastLeaf: number;
}

export interface BuilderStats {
  builderId: number;
  attestations: number;
  paths: number;
  shared: number;
  agreed: number;
  equivocated: number;
  lastLeaf: number;
}

/** Leaves indexed per transaction: bounds how long one step holds the event loop and the write lock (~25-50 ms). */
const CHUNK = 1000;
const QUIET_MS = 250;
const MAX_LAG_MS = 5000;
const CURSOR = 'web_indexed_leaves';
const ADVERTISED_COUNTED = 'web_advertised_counted';
/** `/nix/store/` + 32-character hash part + `-`: where the name starts. */
const NAME_OFFSET = STORE_DIR.length + 34;

interface PathRow {
  id: number;
  out_path: string;
  builders: number;
  contents: number;
  class: PathClass;
  last_leaf: number;
}

const fromPathRow = (r: PathRow): IndexedPath => ({ id: r.id, outPath: r.out_path, builders: r.builders, contents: r.contents, class: r.class, lastLeaf: r.last_leaf });

/** What the index keeps of one path, derived from its attestations. */
interface PathSummary {
  class: PathClass;
  builders: number;
  contents: number;
  /** Per builder id: [shared with another key, agreed with another key, equivocated]. */
  perBuilder: Map<number, [boolean, boolean, boolean]>;
}

/** A leaf as the index counts it. */
interface Leaf {
  leafIndex: number;
  builderId: number;
  outPath: string;
}

/** Reproducibility of one path from its votes (pure). */
function summarizeVotes(votes: ReadonlyArray<Pick<PathVote, 'builderId' | 'narHash' | 'narSize' | 'refs'>>): PathSummary | null {
  if (votes.length === 0) return null;
  const contentsOf = new Map<number, Set<string>>();
  const keysOf = new Map<string, Set<number>>();
  for (const v of votes) {
    const content = contentKey(v);
    (contentsOf.get(v.builderId) ?? contentsOf.set(v.builderId, new Set()).get(v.builderId)!).add(content);
    (keysOf.get(content) ?? keysOf.set(content, new Set()).get(content)!).add(v.builderId);
  }
  const perBuilder = new Map<number, [boolean, boolean, boolean]>();
  for (const [builder, contents] of contentsOf) {
    const shared = contentsOf.size > 1;
    const equivocated = contents.size > 1;
    const agreed = shared && !equivocated && keysOf.get([...contents][0]!)!.size > 1;
    perBuilder.set(builder, [shared, agreed, equivocated]);
  }
  const cls: PathClass = keysOf.size > 1 ? 'unreproduced' : contentsOf.size > 1 ? 'reproduced' : 'single';
  return { class: cls, builders: contentsOf.size, contents: keysOf.size, perBuilder };
}

export class WebIndex {
  private running: Promise<void> | undefined;
  private idleTimer: NodeJS.Timeout | undefined;
  private pendingSince: number | undefined;
  private readonly votesOf: VotesOf;
  private readonly stmts: {
    cursor: Statement<[], { value: string }>;
    setCursor: Statement<[string]>;
    logEnd: Statement<[], { n: number | null }>;
    leaves: Statement<[number, number], Leaf>;
    operatorLeaves: Statement<[number, number], number>;
    pathByOut: Statement<[string], PathRow>;
    insertPath: Statement<[string, number, number, string, number]>;
    updatePath: Statement<[number, number, string, number, string]>;
    insertName: Statement<[number | bigint, string]>;
    bumpClass: Statement<[string, number]>;
    bumpBuilder: Statement<[number, number, number, number, number, number, number]>;
  };

  constructor(
    private readonly db: Db,
    registry: BuilderRegistry,
    private readonly logger: Logger,
  ) {
    this.votesOf = pathVotes(db, registry);
    this.stmts = {
      cursor: db.prepare(`SELECT value FROM meta WHERE key = '${CURSOR}'`),
      setCursor: db.prepare(`INSERT INTO meta (key, value) VALUES ('${CURSOR}', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value`),
      logEnd: db.prepare('SELECT MAX(leaf_index) + 1 AS n FROM attestations'),
      leaves: db.prepare(
        'SELECT leaf_index AS leafIndex, builder_id AS builderId, out_path AS outPath FROM attestations WHERE leaf_index >= ? AND leaf_index < ? ORDER BY leaf_index',
      ),
      operatorLeaves: db.prepare<[number, number], number>('SELECT COUNT(*) FROM operator_leaves WHERE leaf_index >= ? AND leaf_index < ?').pluck(),
      pathByOut: db.prepare('SELECT * FROM web_paths WHERE out_path = ?'),
      insertPath: db.prepare('INSERT INTO web_paths (out_path, builders, contents, class, last_leaf) VALUES (?, ?, ?, ?, ?)'),
      updatePath: db.prepare('UPDATE web_paths SET builders = ?, contents = ?, class = ?, last_leaf = ? WHERE out_path = ?'),
      insertName: db.prepare('INSERT INTO web_names (rowid, name) VALUES (?, ?)'),
      bumpClass: db.prepare('INSERT INTO web_class_counts (class, paths) VALUES (?, ?) ON CONFLICT (class) DO UPDATE SET paths = paths + excluded.paths'),
      bumpBuilder: db.prepare(
        `INSERT INTO web_builder_stats (builder_id, attestations, paths, shared, agreed, equivocated, last_leaf) VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (builder_id) DO UPDATE SET attestations = attestations + excluded.attestations, paths = paths + excluded.paths,
           shared = shared + excluded.shared, agreed = agreed + excluded.agreed, equivocated = equivocated + excluded.equivocated,
           last_leaf = MAX(last_leaf, excluded.last_leaf)`,
      ),
    };
    this.countAdvertisedOnce();
  }

  /**
   * Triggers keep web_advertised current from the moment schema.sql created them; a database with
   * decisions from before that is counted once, in full.
   */
  private countAdvertisedOnce(): void {
    this.db
      .transaction(() => {
        if (this.db.prepare(`SELECT 1 FROM meta WHERE key = '${ADVERTISED_COUNTED}'`).get()) return;
        this.db.prepare('DELETE FROM web_advertised').run();
        this.db
          .prepare(`INSERT INTO web_advertised (policy, paths) SELECT d.policy, COUNT(*) FROM decisions d JOIN nars n ON n.nar_hash = d.nar_hash WHERE d.status = 'quorum' GROUP BY d.policy`)
          .run();
        this.db.prepare(`INSERT INTO meta (key, value) VALUES ('${ADVERTISED_COUNTED}', '1')`).run();
      })
      .immediate();
  }

  /** Paths each policy advertises (decision 'quorum' and the NAR held), by policy name. */
  advertised(): Map<string, number> {
    return new Map((this.db.prepare('SELECT policy, paths FROM web_advertised').all() as Array<{ policy: string; paths: number }>).map((r) => [r.policy, r.paths]));
  }

  /** Leaves covered so far. */
  indexed(): number {
    const row = this.stmts.cursor.get();
    return row ? Number(row.value) : 0;
  }

  /** Leaves in the log (the attestations table is the log's leaf store). */
  logSize(): number {
    return this.stmts.logEnd.get()?.n ?? 0;
  }

  /**
   * Indexes every leaf up to the current log size, one transaction per chunk, yielding to the event
   * loop between chunks. Concurrent callers share one run.
   */
  catchUp(): Promise<void> {
    // .finally runs after the assignment even when run() finishes without awaiting anything.
    this.running ??= this.run().finally(() => (this.running = undefined));
    return this.running;
  }

  private async run(): Promise<void> {
    while (this.db.open && this.step()) await new Promise((resolve) => setImmediate(resolve));
  }

  /** Catches up with nobody waiting; a failure is logged and the next call retries. */
  catchUpLater(): void {
    this.catchUp().catch((err: unknown) => this.logger.error('web index update failed', { err }));
  }

  /**
   * Called inside each ingest commit's transaction: indexes its leaves there when the index covered
   * the log up to them, with the votes ingest already read; otherwise catch-up will. A failure rolls
   * back only the index's writes (a savepoint) and is logged: the web pages never fail an ingest.
   */
  indexCommit(batch: AppendedBatch): void {
    if (batch.appended.length === 0) return;
    // Registry and policy leaves since the cursor hold nothing to index: the index is still up to date.
    const indexed = this.indexed();
    if (indexed !== batch.from && (indexed > batch.from || this.stmts.operatorLeaves.get(indexed, batch.from) !== batch.from - indexed)) return;
    try {
      this.db.transaction(() => {
        this.indexLeaves(
          batch.from,
          batch.appended.map(({ outPath, vote }) => ({ leafIndex: vote.leafIndex, builderId: vote.builderId, outPath })),
          batch.votesOf,
        );
        this.stmts.setCursor.run(String(batch.from + batch.appended.length));
      })();
    } catch (err) {
      this.logger.error('web index update failed; it catches up later', { err });
    }
  }

  /**
   * Called after each commit: catches up once ingest has been quiet for QUIET_MS, so a burst of
   * submissions is not slowed by indexing, but no later than MAX_LAG_MS after the first commit it
   * has not indexed yet. Pages catch up on demand anyway.
   */
  committed(): void {
    const now = Date.now();
    this.pendingSince ??= now;
    clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(
      () => {
        this.pendingSince = undefined;
        this.catchUpLater();
      },
      Math.max(0, Math.min(QUIET_MS, this.pendingSince + MAX_LAG_MS - now)),
    );
    this.idleTimer.unref();
  }

  /** Indexes the next chunk; false when there was nothing to do. */
  private step(): boolean {
    // IMMEDIATE: another process indexing the same database waits, then sees the moved cursor.
    return this.db
      .transaction(() => {
        const from = this.indexed();
        const to = Math.min(this.logSize(), from + CHUNK);
        if (to <= from) return false;
        this.indexRange(from, to);
        this.stmts.setCursor.run(String(to));
        return true;
      })
      .immediate();
  }

  private indexRange(from: number, to: number): void {
    const leaves = this.stmts.leaves.all(from, to);
    // Registry and policy leaves are the other leaves of the range; nothing else may be missing.
    if (leaves.length + this.stmts.operatorLeaves.get(from, to)! !== to - from) throw new QuorumError('web-index', `leaves ${from} to ${to - 1} are not all in the database: the log has holes`);
    this.indexLeaves(from, leaves, (outPath) => this.votesOf(outPath).filter((v) => v.leafIndex < to));
  }

  /**
   * Indexes `leaves`, the leaves from `from` on in log order; `votesOf` gives every attestation of
   * their paths up to the last of them. A path with no vote before `from` has no row yet.
   */
  private indexLeaves(from: number, leaves: readonly Leaf[], votesOf: VotesOf): void {
    const builders = new Map<number, [number, number, number, number, number, number]>();
    const builder = (id: number) => builders.get(id) ?? builders.set(id, [0, 0, 0, 0, 0, -1]).get(id)!;
    const lastLeafOf = new Map<string, number>();
    for (const leaf of leaves) {
      const b = builder(leaf.builderId);
      b[0] += 1;
      b[5] = leaf.leafIndex;
      lastLeafOf.set(leaf.outPath, leaf.leafIndex);
    }
    const classDelta = new Map<string, number>();
    for (const [outPath, lastLeaf] of lastLeafOf) {
      const votes = votesOf(outPath);
      const before = summarizeVotes(votes.filter((v) => v.leafIndex < from));
      const after = summarizeVotes(votes)!;
      if (before) this.stmts.updatePath.run(after.builders, after.contents, after.class, lastLeaf, outPath);
      else {
        const { lastInsertRowid } = this.stmts.insertPath.run(outPath, after.builders, after.contents, after.class, lastLeaf);
        this.stmts.insertName.run(lastInsertRowid, outPath.slice(NAME_OFFSET));
      }
      if (before?.class !== after.class) {
        if (before) classDelta.set(before.class, (classDelta.get(before.class) ?? 0) - 1);
        classDelta.set(after.class, (classDelta.get(after.class) ?? 0) + 1);
      }
      for (const [id, [shared, agreed, equivocated]] of after.perBuilder) {
        const old = before?.perBuilder.get(id);
        const b = builder(id);
        if (!old) b[1] += 1;
        b[2] += Number(shared) - Number(old?.[0] ?? false);
        b[3] += Number(agreed) - Number(old?.[1] ?? false);
        b[4] += Number(equivocated) - Number(old?.[2] ?? false);
      }
    }
    for (const [cls, delta] of classDelta) if (delta !== 0) this.stmts.bumpClass.run(cls, delta);
    for (const [id, [attestations, paths, shared, agreed, equivocated, lastLeaf]] of builders) {
      this.stmts.bumpBuilder.run(id, attestations, paths, shared, agreed, equivocated, lastLeaf);
    }
  }

  classCounts(): Record<PathClass, number> {
    const counts: Record<PathClass, number> = { single: 0, reproduced: 0, unreproduced: 0 };
    for (const r of this.db.prepare('SELECT class, paths FROM web_class_counts').all() as Array<{ class: PathClass; paths: number }>) counts[r.class] = r.paths;
    return counts;
  }

  builderStats(): Map<number, BuilderStats> {
    const rows = this.db.prepare('SELECT * FROM web_builder_stats').all() as Array<{
      builder_id: number;
      attestations: number;
      paths: number;
      shared: number;
      agreed: number;
      equivocated: number;
      last_leaf: number;
    }>;
    return new Map(
      rows.map((r) => [r.builder_id, { builderId: r.builder_id, attestations: r.attestations, paths: r.paths, shared: r.shared, agreed: r.agreed, equivocated: r.equivocated, lastLeaf: r.last_leaf }]),
    );
  }

  /**
   * Paths whose name contains `text` (case-insensitive, at least 3 characters: the trigram
   * index cannot answer less), newest first, `limit` of them with ids below `before`.
   */
  searchNames(text: string, limit: number, before?: number): IndexedPath[] {
    const rows = this.db
      .prepare(
        `SELECT p.* FROM web_names n JOIN web_paths p ON p.id = n.rowid
         WHERE web_names MATCH ? ${before === undefined ? '' : 'AND n.rowid < ?'} ORDER BY n.rowid DESC LIMIT ?`,
      )
      .all(...[ftsPhrase(text), ...(before === undefined ? [] : [before]), limit]) as PathRow[];
    return rows.map(fromPathRow);
  }

  /** How many paths match, counting no further than `cap`. */
  countNames(text: string, cap: number): number {
    return (this.db.prepare('SELECT COUNT(*) AS n FROM (SELECT rowid FROM web_names WHERE web_names MATCH ? LIMIT ?)').get(ftsPhrase(text), cap) as { n: number }).n;
  }

  paths(outPaths: readonly string[]): IndexedPath[] {
    return outPaths.map((p) => this.stmts.pathByOut.get(p)).filter((r): r is PathRow => r !== undefined).map(fromPathRow);
  }

  /** Paths of one class, most recently attested first, `limit` of them attested before leaf `before`. */
  ofClass(cls: PathClass, limit: number, before?: number): IndexedPath[] {
    return (
      this.db
        .prepare(`SELECT * FROM web_paths WHERE class = ? ${before === undefined ? '' : 'AND last_leaf < ?'} ORDER BY last_leaf DESC LIMIT ?`)
        .all(...[cls, ...(before === undefined ? [] : [before]), limit]) as PathRow[]
    ).map(fromPathRow);
  }
}

/** A trigram MATCH for a literal substring: one FTS5 string, quotes doubled. */
function ftsPhrase(text: string): string {
  return `"${text.replaceAll('"', '""')}"`;
}
