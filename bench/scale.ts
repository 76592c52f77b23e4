/**
 * Benchmark: the ledger at scale. Bulk-loads a ledger to each of `--stages` attestations (default
 * 1M, then on to 10M in the same database) and at each stage measures the database bytes per
 * attestation and the p50/p99 latency of the lookups that must stay flat as the log grows:
 * the substituter's narinfo lookup (QuorumLookup.find), the API path lookup (attestationsOfHashPart)
 * and an inclusion proof with its verification (MerkleLog.inclusionProof + verifyInclusion), in
 * process and then over HTTP against `nix-quorum serve`. The server catches the web pages'
 * projection (src/web/webIndex.ts) up on start: that is timed, and its tables are sized separately.
 * The peer is the same measurement at the first stage (ratio = last stage / first stage), and over
 * HTTP `/nix-cache-info` (no database read) in the same run.
 *
 *   npm run build && node dist/bench/scale.js [--stages 1000000,10000000] [--lookups 20000] [--requests 2000] [--keep]
 *
 * Loading: bench/bulkLoad.ts writes the rows directly into the tables Ingestor.commit writes, with
 * random signatures (signing 10M attestations and verifying them through HTTP would take about an
 * hour of Ed25519 here), every path attested by the same 3 builder keys. During the load only, the
 * connection runs with PRAGMA synchronous=OFF (no fsync per batch; the load is not a durability
 * test) and a 1 GiB page cache; every measurement reopens the database with openDb's production
 * settings.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, statfsSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadConfig } from '../src/config.js';
import { dataPaths } from '../src/dataDir.js';
import { openDb, type Db } from '../src/db.js';
import { decodeLeaf, encodeLeaf } from '../src/ledger/leaf.js';
import { MerkleLog } from '../src/ledger/log.js';
import { leafHash, verifyInclusion } from '../src/ledger/merkle.js';
import { attestationOf, attestationsByLeaf, attestationsOfHashPart } from '../src/ledger/queries.js';
import { createLogger } from '../src/log.js';
import { generateSecretKey } from '../src/nix/keys.js';
import { nix32Encode } from '../src/nix/nix32.js';
import { hashPartOf, type HashPart, type StorePath } from '../src/nix/storePath.js';
import { DEFAULT_POLICY } from '../src/quorum/policies.js';
import { openService, type Service } from '../src/service.js';
import { QuorumLookup } from '../src/substituter/narinfo.js';
import { BulkLoader } from './bulkLoad.js';
import { CLI_PATH, freePort, percentile, waitForHealth } from './common.js';
import { addBuilder } from '../src/app/builders.js';

const { values } = parseArgs({
  options: {
    stages: { type: 'string', default: '1000000,10000000' },
    lookups: { type: 'string', default: '20000' },
    requests: { type: 'string', default: '2000' },
    keep: { type: 'boolean', default: false },
  },
});
const stages = values.stages.split(',').map(Number);
if (stages.some((s, i) => !Number.isSafeInteger(s) || s <= 0 || (i > 0 && s <= stages[i - 1]!))) throw new Error('--stages: increasing positive attestation counts, comma-separated');
const lookups = Number(values.lookups);
const requests = Number(values.requests);

const BUILDERS = 3;
/** Database bytes per attestation measured (1,360 with the web projection), with room for the WAL. */
const DISK_PER_ATTESTATION = 1600;

const dir = mkdtempSync(join(tmpdir(), 'nq-bench-scale-'));
const dbFile = dataPaths(dir).db;
let server: ChildProcess | undefined;
const cleanUp = () => {
  server?.kill('SIGTERM');
  if (!values.keep) rmSync(dir, { recursive: true, force: true });
};
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    cleanUp();
    process.exit(130);
  });
}

const free = statfsSync(dir).bavail * statfsSync(dir).bsize;
const needed = stages[stages.length - 1]! * DISK_PER_ATTESTATION;
if (free < needed) {
  cleanUp();
  throw new Error(`${dir}: ${(free / 2 ** 30).toFixed(1)} GiB free, the largest stage needs about ${(needed / 2 ** 30).toFixed(1)} GiB; use smaller --stages or point TMPDIR elsewhere`);
}

interface Latency {
  p50: number;
  p99: number;
  /** The lowest p99 of the interleaved rounds (see timeProbes); equal to p99 for a single series. */
  quietP99: number;
  n: number;
}

function latency(ms: number[]): Latency {
  ms.sort((a, b) => a - b);
  const p99 = percentile(ms, 99);
  return { p50: percentile(ms, 50), p99, quietP99: p99, n: ms.length };
}

/** One kind of call to time: its samples and the call (sync, or async for HTTP). Method syntax keeps Probe<X> a Probe<unknown>. */
interface Probe<T> {
  samples: readonly T[];
  call(sample: T): void | Promise<void>;
}
const probe = <T>(samples: readonly T[], call: (sample: T) => void | Promise<void>): Probe<T> => ({ samples, call });

const ROUNDS = 5;

/**
 * Times each probe's call once per sample (milliseconds), in ROUNDS rounds that take turns between
 * the probes, after `warmUp` untimed calls each (JIT, prepared statements). On this shared machine a
 * neighbour's burst of work lands in some rounds only: the lowest per-round p99 (`quietP99`) is what
 * compares across stages; p99 over all samples is reported next to it.
 */
async function timeProbes(probes: Record<string, Probe<unknown>>, warmUp: number): Promise<Record<string, Latency>> {
  const all = new Map<string, number[]>();
  const quiet = new Map<string, number>();
  for (const [name, p] of Object.entries(probes)) {
    for (const s of p.samples.slice(0, warmUp)) await p.call(s);
    all.set(name, []);
    quiet.set(name, Infinity);
  }
  for (let round = 0; round < ROUNDS; round++) {
    for (const [name, p] of Object.entries(probes)) {
      const timed = p.samples.slice(warmUp);
      const per = Math.floor(timed.length / ROUNDS);
      const ms: number[] = [];
      for (const s of timed.slice(round * per, (round + 1) * per)) {
        const t = process.hrtime.bigint();
        const pending = p.call(s);
        if (pending) await pending;
        ms.push(Number(process.hrtime.bigint() - t) / 1e6);
      }
      all.get(name)!.push(...ms);
      quiet.set(name, Math.min(quiet.get(name)!, latency(ms).p99));
    }
  }
  return Object.fromEntries([...all].map(([name, ms]) => [name, { ...latency(ms), quietP99: quiet.get(name)! }]));
}

/**
 * Bytes a process has read from storage so far (Linux /proc/<pid>/io read_bytes): reads served by
 * the page cache do not count, so a delta of 0 means the lookups never waited for the disk.
 */
function storageReadBytes(pid: number | 'self'): number {
  const m = /^read_bytes: (\d+)$/m.exec(readFileSync(`/proc/${pid}/io`, 'utf8'));
  if (!m) throw new Error(`/proc/${pid}/io has no read_bytes line`);
  return Number(m[1]);
}

const randomIndex = (size: number) => Math.floor(Math.random() * size);
/** The leaves before the first attestation: the default policy's and the builders' registry leaves. */
let firstLeaf = 0;
/** A random attestation's leaf index, of `size` attestations. */
const randomAttestationLeaf = (size: number) => firstLeaf + randomIndex(size);
const randomHashPart = () => nix32Encode(randomBytes(20)) as HashPart;

/** Size and depth of each table's and index's b-tree (dbstat), grouped as core ledger vs web projection. */
interface Storage {
  fileBytes: number;
  btrees: Array<{ name: string; table: string; bytes: number; payload: number; depth: number }>;
  coreBytes: number;
  webBytes: number;
}

function storage(db: Db): Storage {
  db.pragma('wal_checkpoint(TRUNCATE)');
  const fileBytes = statSync(dbFile).size + (statSync(`${dbFile}-wal`, { throwIfNoEntry: false })?.size ?? 0);
  // depth: pages from root to leaf, i.e. the page reads of one key lookup ("/" is the root, "/000/" its first child).
  const btrees = db
    .prepare(
      `SELECT g.name, COALESCE(s.tbl_name, g.name) AS 'table', g.bytes, g.payload, g.depth FROM (
         SELECT name, SUM(pgsize) AS bytes, SUM(payload) AS payload,
           MAX(CASE WHEN pagetype = 'overflow' THEN 0 ELSE length(path) - length(replace(path, '/', '')) END) AS depth
         FROM dbstat GROUP BY name) AS g
       LEFT JOIN sqlite_schema AS s ON s.name = g.name ORDER BY g.bytes DESC`,
    )
    .all() as Storage['btrees'];
  const isWeb = (b: Storage['btrees'][number]) => b.table.startsWith('web_');
  const sum = (bs: Storage['btrees']) => bs.reduce((n, b) => n + b.bytes, 0);
  return { fileBytes, btrees, coreBytes: sum(btrees.filter((b) => !isWeb(b))), webBytes: sum(btrees.filter(isWeb)) };
}

interface StageResult {
  size: number;
  paths: number;
  stageRate: number;
  /** Attestations loaded per second of this process's CPU time: less sensitive to neighbours than stageRate. */
  cpuRate: number;
  loadAverage: number;
  /** openService, and the background check of every decision against the log that follows (src/quorum/decisions.ts reconcile). */
  openSeconds: number;
  checkSeconds: number;
  /** Bytes read from storage (not page cache) during the in-process lookups, and by the server during its requests. */
  diskReads: { inProcess: number; http: number };
  loaded: Storage;
  inProcess: Record<string, Latency>;
  webCatchUp: { seconds: number; leaves: number; duringNarinfo: Latency };
  http: Record<string, Latency>;
  served: Storage;
}

/** In-process lookups over a fresh connection with openDb's production settings. */
async function measureInProcess(size: number): Promise<{ latencies: Record<string, Latency>; diskReads: number }> {
  // Samples are drawn through another connection, so the measuring one starts with an empty page cache.
  const sampler = openDb(dbFile);
  const outPathAt = sampler.prepare('SELECT out_path FROM attestations WHERE leaf_index = ?').pluck();
  const hashParts = Array.from({ length: lookups }, () => hashPartOf(outPathAt.get(randomAttestationLeaf(size)) as StorePath));
  sampler.close();
  const db = openDb(dbFile);
  try {
    const lookup = new QuorumLookup(db);
    const log = new MerkleLog(db);
    const checkpoint = db.prepare('SELECT root_hash FROM checkpoints WHERE tree_size = ?').pluck().get(firstLeaf + size) as Buffer | undefined;
    if (!checkpoint) throw new Error(`no checkpoint of size ${firstLeaf + size}`);
    // Each leaf hash is recomputed from its stored row (untimed), so a passing proof also shows the
    // rows re-encode to the leaves the tree was built from.
    const leaves = Array.from({ length: lookups }, () => {
      const index = randomAttestationLeaf(size);
      return { index, hash: leafHash(encodeLeaf(attestationOf(attestationsByLeaf(db, index, index + 1)[0]!))) };
    });
    const readBefore = storageReadBytes('self');
    const results = await timeProbes(
      {
        'narinfo lookup (QuorumLookup.find), hit': probe(hashParts, (h) => {
          if (!lookup.find(DEFAULT_POLICY, h)?.nar) throw new Error(`${h}: no quorum decision with a NAR`);
        }),
        'narinfo lookup, miss (unknown hash part)': probe(Array.from({ length: lookups }, randomHashPart), (h) => {
          if (lookup.find(DEFAULT_POLICY, h)) throw new Error(`${h}: a random hash part was found`);
        }),
        'API path lookup (attestationsOfHashPart)': probe(hashParts, (h) => {
          if (attestationsOfHashPart(db, h).length < 2) throw new Error(`${h}: fewer than 2 attestations`);
        }),
        'inclusion proof + verify (MerkleLog)': probe(leaves, ({ index, hash }) => verifyInclusion(hash, index, firstLeaf + size, log.inclusionProof(index, firstLeaf + size), checkpoint)),
      },
      Math.min(500, Math.floor(lookups / 10)),
    );
    const diskReads = storageReadBytes('self') - readBefore;
    // The synthetic rows must be leaves the production parser accepts.
    for (const { index } of leaves.slice(0, 1000)) decodeLeaf(encodeLeaf(attestationOf(attestationsByLeaf(db, index, index + 1)[0]!)));
    return { latencies: results, diskReads };
  } finally {
    db.close();
  }
}

/** Starts `nix-quorum serve`, times its web-index catch-up, then times requests; stops it. */
async function measureHttp(size: number): Promise<Pick<StageResult, 'webCatchUp' | 'http'> & { diskReads: number }> {
  const sampler = openDb(dbFile);
  const outPathAt = sampler.prepare('SELECT out_path FROM attestations WHERE leaf_index = ?').pluck();
  const draw = (n: number) => Array.from({ length: n }, () => outPathAt.get(randomAttestationLeaf(size)) as StorePath);
  // Separate samples for the catch-up phase: the server caches rendered narinfos.
  const duringPaths = draw(5000);
  const outPaths = draw(requests + 200);
  const indexedBefore = Number(sampler.prepare("SELECT value FROM meta WHERE key = 'web_indexed_leaves'").pluck().get() ?? 0);
  sampler.close();

  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const started = process.hrtime.bigint();
  server = spawn(process.execPath, [CLI_PATH, 'serve', '--data', dir, '--listen', `127.0.0.1:${port}`], {
    stdio: ['ignore', 'ignore', 'inherit'],
    env: { ...process.env, NIX_QUORUM_LOG_LEVEL: 'warn' },
  });
  const exited = new Promise((resolve) => server!.once('exit', resolve));
  try {
    // The server checks every decision against the log before it listens (src/service.ts): minutes at 10M.
    await waitForHealth(url, 60_000);
    const narinfoOk = (path: string, status: number, body: string) => {
      if (status !== 200 || !body.startsWith('StorePath: /nix/store/')) throw new Error(`${path} answered ${status}: ${body.slice(0, 200)}`);
    };
    // Nix clients keep asking while the web projection catches up: time narinfo requests meanwhile.
    const during: number[] = [];
    for (let i = 0; ; i++) {
      const t = process.hrtime.bigint();
      const res = await fetch(`${url}/${hashPartOf(duringPaths[i % duringPaths.length]!)}.narinfo`);
      narinfoOk('narinfo during catch-up', res.status, await res.text());
      during.push(Number(process.hrtime.bigint() - t) / 1e6);
      if (i % 50 !== 49) continue;
      const { index } = (await (await fetch(`${url}/api/v1/stats`)).json()) as { index: { indexed: number; logSize: number } };
      if (index.indexed >= index.logSize) break;
    }
    const webCatchUp = { seconds: Number(process.hrtime.bigint() - started) / 1e9, leaves: size - indexedBefore, duringNarinfo: latency(during) };

    const get = (check: (path: string, status: number, body: string) => void) => async (path: string) => {
      const res = await fetch(`${url}${path}`);
      check(path, res.status, await res.text());
    };
    const ok = get((path, status, body) => {
      if (status !== 200) throw new Error(`${path} answered ${status}: ${body.slice(0, 200)}`);
    });
    const readBefore = storageReadBytes(server.pid!);
    const http = await timeProbes(
      {
        'GET /nix-cache-info (peer: no database read)': probe(outPaths.map(() => '/nix-cache-info'), ok),
        'GET /<hashpart>.narinfo, hit': probe(outPaths.map((p) => `/${hashPartOf(p)}.narinfo`), get(narinfoOk)),
        'GET /<hashpart>.narinfo, miss (404)': probe(
          outPaths.map(() => `/${randomHashPart()}.narinfo`),
          get((path, status) => {
            if (status !== 404) throw new Error(`${path} answered ${status}, expected 404`);
          }),
        ),
        'GET /api/v1/paths/<hashpart>': probe(outPaths.map((p) => `/api/v1/paths/${hashPartOf(p)}`), ok),
        'GET /api/v1/log/proof/inclusion': probe(outPaths.map(() => `/api/v1/log/proof/inclusion?index=${randomIndex(firstLeaf + size)}&size=${firstLeaf + size}`), ok),
      },
      200,
    );
    return { webCatchUp, http, diskReads: storageReadBytes(server.pid!) - readBefore };
  } finally {
    server.kill('SIGTERM');
    await exited;
    server = undefined;
  }
}

const fmtMs = (l: Latency) => `${l.p50.toFixed(3)} / ${l.p99.toFixed(3)} / ${l.quietP99.toFixed(3)}`;
const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(0)} MiB`;

/**
 * Opens the ledger as serve does. Timed: opening it (the registry and policies rebuilt from the log),
 * and the background check of every decision against the log that follows (awaited here).
 */
async function openLedger(): Promise<{ service: Service; startup: { openMs: number; ms: number; paths: number; corrected: number } }> {
  const t = performance.now();
  const service = openService(loadConfig({ env: {}, flags: { dataDir: dir, logLevel: 'error' } }), createLogger('error'));
  const openMs = performance.now() - t;
  const checked = await service.decisionsChecked;
  // During the load only (see the file comment).
  service.db.pragma('synchronous = OFF');
  service.db.pragma(`cache_size = ${-(2 ** 20)}`);
  return { service, startup: { openMs, ...checked } };
}

try {
  let { service } = await openLedger();
  const builders = Array.from({ length: BUILDERS }, (_, i) => addBuilder(service, generateSecretKey(`builder-${i}.example.org-1`).publicKey).builder);
  firstLeaf = service.log.size();
  const loader = new BulkLoader(service, builders.map((builder) => ({ builder, secretKey: null })));
  const results: StageResult[] = [];
  for (const target of stages) {
    const t = process.hrtime.bigint();
    const cpu = process.cpuUsage();
    await loader.loadTo(target);
    const { user, system } = process.cpuUsage(cpu);
    const stageSeconds = Number(process.hrtime.bigint() - t) / 1e9;
    const stageRate = (target - (results.at(-1)?.size ?? 0)) / stageSeconds;
    const cpuRate = (target - (results.at(-1)?.size ?? 0)) / ((user + system) / 1e6);
    const loaded = storage(service.db);
    const paths = service.db.prepare('SELECT COUNT(*) FROM decisions').pluck().get() as number;
    console.log(`\n== ${target} attestations (${paths} paths): loaded in ${stageSeconds.toFixed(0)} s, ${Math.round(stageRate)} attestations/s, ${Math.round(cpuRate)} per CPU-second`);
    console.log(`load time by part (cumulative s): ${Object.entries(loader.seconds).map(([k, v]) => `${k} ${v.toFixed(0)}`).join(', ')}`);
    // The server holds the data directory while it runs: the loader lets go of it to measure.
    service.close();
    const opened = await openLedger();
    opened.service.close();
    const { startup } = opened;
    console.log(`start: ledger open in ${(startup.openMs / 1000).toFixed(2)} s; then every decision checked against the log in the background: ${(startup.ms / 1000).toFixed(1)} s for ${startup.paths} paths (${Math.round((1000 * target) / Math.max(1, startup.ms))} attestations/s), ${startup.corrected} corrected`);
    const loadAverage = loadavg()[0]!;
    const { latencies: inProcess, diskReads: inProcessReads } = await measureInProcess(target);
    const { webCatchUp, http, diskReads: httpReads } = await measureHttp(target);
    ({ service } = await openLedger());
    loader.use(service);
    const served = storage(service.db);
    const result: StageResult = { size: target, paths, stageRate, cpuRate, loadAverage, openSeconds: startup.openMs / 1000, checkSeconds: startup.ms / 1000, diskReads: { inProcess: inProcessReads, http: httpReads }, loaded, inProcess, webCatchUp, http, served };
    results.push(result);
    console.log(`database ${mib(loaded.fileBytes)} after load = ${(loaded.fileBytes / target).toFixed(0)} B/attestation; after web catch-up ${mib(served.fileBytes)}`);
    console.log(`web catch-up: ${webCatchUp.leaves} leaves in ${webCatchUp.seconds.toFixed(1)} s (server start included)`);
    console.log('| b-tree | table | MiB | B/attestation | payload % | depth |');
    console.log('| --- | --- | ---: | ---: | ---: | ---: |');
    for (const b of served.btrees.filter((x) => x.bytes > 2 ** 20)) {
      console.log(`| ${b.name} | ${b.table} | ${(b.bytes / 2 ** 20).toFixed(0)} | ${(b.bytes / target).toFixed(1)} | ${((100 * b.payload) / b.bytes).toFixed(0)} | ${b.depth} |`);
    }
    for (const [what, l] of [...Object.entries(inProcess), ...Object.entries(http)]) console.log(`${what}: p50 / p99 / quiet p99 ${fmtMs(l)} ms (n=${l.n})`);
    console.log(`narinfo during web catch-up: p50 / p99 ${webCatchUp.duringNarinfo.p50.toFixed(1)} / ${webCatchUp.duringNarinfo.p99.toFixed(1)} ms (n=${webCatchUp.duringNarinfo.n})`);
  }
  service.close();

  const first = results[0]!;
  const last = results.at(-1)!;
  const label = (n: number) => (n % 1e6 === 0 ? `${n / 1e6}M` : String(n));
  const times = (f: (r: StageResult) => number) => `${(f(last) / f(first)).toFixed(2)}×`;
  const row = (what: string, f: (r: StageResult) => string, ratio = '') => console.log(`| ${what} | ${results.map(f).join(' | ')} | ${ratio} |`);
  console.log(`\n| | ${results.map((r) => `${label(r.size)} attestations`).join(' | ')} | ${label(last.size)} / ${label(first.size)} |`);
  console.log(`| --- | ${results.map(() => '---:').join(' | ')} | ---: |`);
  row('paths (decisions rows)', (r) => String(r.paths));
  row('load rate of the stage, attestations/s', (r) => String(Math.round(r.stageRate)));
  row('load rate of the stage, attestations per CPU-second of the loader', (r) => String(Math.round(r.cpuRate)));
  row('load average (1 min) while measuring', (r) => r.loadAverage.toFixed(1));
  row('**ledger open at start** (registry and policies rebuilt from the log), s', (r) => r.openSeconds.toFixed(2), times((r) => r.openSeconds));
  row('**background check of every decision against the log**, s', (r) => r.checkSeconds.toFixed(1), times((r) => r.checkSeconds));
  row('storage reads during lookups: in process / server', (r) => `${mib(r.diskReads.inProcess)} / ${mib(r.diskReads.http)}`);
  row('database after load (file + WAL)', (r) => mib(r.loaded.fileBytes));
  row('**bytes per attestation** (ledger tables)', (r) => (r.loaded.coreBytes / r.size).toFixed(0), times((r) => r.loaded.coreBytes / r.size));
  row('web projection (web_* tables), bytes per attestation', (r) => (r.served.webBytes / r.size).toFixed(0), times((r) => r.served.webBytes / r.size));
  row('database with web projection', (r) => mib(r.served.fileBytes));
  // The b-trees the measured lookups descend: their depth is the page reads per lookup.
  const LOOKUP_BTREES = ['decisions', 'nars', 'attestations_path', 'attestations', 'merkle_nodes'];
  const depthOf = (r: StageResult, name: string) => r.loaded.btrees.find((b) => b.name === name)?.depth ?? 0;
  row(`b-tree depth: ${LOOKUP_BTREES.join(', ')}`, (r) => LOOKUP_BTREES.map((n) => depthOf(r, n)).join(' / '));
  row('web catch-up on server start', (r) => `${r.webCatchUp.leaves} leaves in ${r.webCatchUp.seconds.toFixed(0)} s`);
  row(
    'narinfo during web catch-up, p50 / p99 ms',
    (r) => `${r.webCatchUp.duringNarinfo.p50.toFixed(1)} / ${r.webCatchUp.duringNarinfo.p99.toFixed(1)}`,
  );
  const latencyRow = (what: string, of: (r: StageResult) => Latency) =>
    row(`${what}, p50 / p99 / quiet p99 ms`, (r) => fmtMs(of(r)), `p50 ${times((r) => of(r).p50)}, quiet p99 ${times((r) => of(r).quietP99)}`);
  for (const what of Object.keys(first.inProcess)) latencyRow(what, (r) => r.inProcess[what]!);
  for (const what of Object.keys(first.http)) latencyRow(what, (r) => r.http[what]!);
  console.log(`\nquiet p99: the lowest p99 of ${ROUNDS} interleaved rounds. ${values.keep ? `Kept ${dir}` : `Removed ${dir}`}.`);
} finally {
  cleanUp();
}
