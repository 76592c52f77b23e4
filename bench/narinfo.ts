/**
 * Benchmark: narinfo requests per second and p99 latency, ours against nginx serving the same
 * narinfo bytes as static files, in the same run, with wrk.
 *
 *   npx tsc -p . && node dist/bench/narinfo.js [--paths 20000] [--duration 10] [--connections 32] [--rounds 5]
 *
 * Fills a data directory through the real API: two registered builders attest --paths synthetic
 * store paths (small valid NARs, 0-8 references, a deriver, both builders' narinfo Sigs), the
 * first uploads every NAR. Every path then has quorum (default policy, threshold 2). Each narinfo
 * is fetched once from our server and written as `<hashpart>.narinfo` into nginx's root.
 *
 * Contenders, each pinned to the same single core (--server-cpu) with wrk on the other (--client-cpu):
 * - nginx: one process, static files (sendfile, access log off);
 * - ours, cached: `nix-quorum serve` as configured by default (rendered narinfos of advertised
 *   paths kept in memory, up to 100,000, dropped when their decision changes), restarted each round
 *   and warmed up with misses only, so its cache is empty when the timed hits start: every path is
 *   looked up and rendered by the timed requests themselves before it is served from memory;
 * - ours, uncached: the same data directory with `substituter.narinfoCacheEntries: 0`, so each
 *   request reads the quorum decision from SQLite (one indexed read) and renders the narinfo;
 * - ours, cached, after 100,000 misses: the cached server once clients have asked it about that
 *   many unknown paths, as a long-running server is: its misses, then its hits again (misses
 *   must not push the advertised paths out of the cache).
 * Requests: hits cycle through every advertised hash part; misses are fresh random hash parts
 * (never asked before, as for clients asking about paths nobody built). Same wrk settings for all:
 * -t1, --connections, --duration; a 3 s warm-up first. The table shows medians over --rounds:
 * requests per second and their ratio to nginx's (goal >= 0.5); the server's CPU use during the
 * run (100% = its core saturated); and requests per CPU-second of the server, a second view that
 * depends less on whether the server, the client or other load on the machine set the pace.
 */
import { randomBytes } from 'node:crypto';
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { attestationJson, signOutput, type AttestationJson } from '../src/builder/attest.js';
import { runPool } from '../src/builder/pool.js';
import { loadConfig } from '../src/config.js';
import { createLogger } from '../src/log.js';
import { uploadAuthHeader } from '../src/http/builderAuth.js';
import { narHashFromDigest, sha256, type NarHash } from '../src/nix/hash.js';
import { generateSecretKey, type SecretKey } from '../src/nix/keys.js';
import { encodeStrings, NAR_MAGIC } from '../src/nix/nar/index.js';
import { nix32Encode } from '../src/nix/nix32.js';
import { hashPartOf, type HashPart, type StorePath } from '../src/nix/storePath.js';
import { openService } from '../src/service.js';
import { cpuSeconds, exec, median, randomStorePath, startNginx, startQuorumServer, postAttestations, wrkNarinfos, NARINFO_WRK_SCRIPT as WRK_SCRIPT, type BenchServer, type WrkKind, type WrkResult } from './common.js';
import { addBuilder } from '../src/app/builders.js';

const { values } = parseArgs({
  options: {
    paths: { type: 'string', default: '20000' },
    duration: { type: 'string', default: '10' },
    connections: { type: 'string', default: '32' },
    rounds: { type: 'string', default: '5' },
    'server-cpu': { type: 'string', default: '1' },
    'client-cpu': { type: 'string', default: '0' },
  },
});
const pathCount = Number(values.paths);
const duration = Number(values.duration);
const connections = Number(values.connections);
const rounds = Number(values.rounds);
const serverCpu = values['server-cpu'];
const clientCpu = values['client-cpu'];
/** Unknown hash parts asked before the last misses and hits runs: as many as the default cache holds. */
const MISS_FLOOD = 100_000;

const work = mkdtempSync(join(tmpdir(), 'nq-bench-narinfo-'));
const dataDir = join(work, 'data');
const copyDir = join(work, 'data-copy');
const nginxRoot = join(work, 'nginx');
mkdirSync(nginxRoot);

const keys = [generateSecretKey('bench-builder-a'), generateSecretKey('bench-builder-b')];
{
  const service = openService(loadConfig({ env: {}, flags: { dataDir } }), createLogger('error'));
  for (const k of keys) addBuilder(service, k.publicKey);
  service.close();
}

/** A one-file NAR whose content is unique to path i, as `nix-store --dump` of that file writes it. */
function smallNar(i: number): Buffer {
  return encodeStrings(NAR_MAGIC, '(', 'type', 'regular', 'contents', `bench narinfo path ${i} ${Math.random()}\n`, ')');
}

interface Synthetic {
  outPath: StorePath;
  hashPart: HashPart;
  nar: Buffer;
  narHash: NarHash;
  /** One per builder, as each would submit it. */
  attestations: AttestationJson[];
}

function synthesize(): Synthetic[] {
  const made: Synthetic[] = [];
  for (let i = 0; i < pathCount; i++) {
    const name = `python3.12-package-${i}-1.2.3`;
    const outPath = randomStorePath(name) as StorePath;
    const nar = smallNar(i);
    const narHash = narHashFromDigest(sha256(nar));
    const refCount = Math.min(made.length, Math.floor(Math.random() * 9));
    const references = [...new Set(Array.from({ length: refCount }, () => made[Math.floor(Math.random() * made.length)]!.outPath))];
    const output = { drvPath: `${randomStorePath(name)}.drv` as StorePath, outputName: 'out', outPath, narHash, narSize: nar.length, references };
    made.push({ outPath, hashPart: hashPartOf(outPath), nar, narHash, attestations: keys.map((k) => attestationJson(signOutput(output, k))) });
  }
  return made;
}

async function fill(url: string, paths: Synthetic[], uploader: SecretKey): Promise<void> {
  await runPool(paths.length, 16, async (i) => {
    const { nar, narHash } = paths[i]!;
    const res = await fetch(`${url}/api/v1/nars/${narHash}`, { method: 'PUT', body: new Uint8Array(nar), headers: { authorization: uploadAuthHeader(uploader, narHash, nar.length) } });
    if (res.status !== 201) throw new Error(`NAR upload answered ${res.status}: ${await res.text()}`);
  });
  const all = paths.flatMap((p) => p.attestations);
  for (let i = 0; i < all.length; i += 1000) {
    const res = await postAttestations(url, keys[0]!, all.slice(i, i + 1000));
    const { results } = (await res.json()) as { results: Array<{ status: string; reason?: string }> };
    const refused = results.find((r) => r.status !== 'accepted');
    if (!res.ok || refused) throw new Error(`attestations answered ${res.status}: ${JSON.stringify(refused)}`);
  }
}

/** GETs `<hashPart>.narinfo` for each hash part, 16 at a time; each must answer `status`. Returns the bodies. */
async function fetchEach(url: string, hashParts: readonly string[], status: 200 | 404): Promise<string[]> {
  const bodies: string[] = [];
  await runPool(hashParts.length, 16, async (i) => {
    const res = await fetch(`${url}/${hashParts[i]}.narinfo`);
    bodies[i] = await res.text();
    if (res.status !== status) throw new Error(`${hashParts[i]}.narinfo answered ${res.status}, not ${status}: ${bodies[i]}`);
  });
  return bodies;
}

async function wrk(server: BenchServer, kind: WrkKind, seconds: number, scriptFile: string, listFile: string): Promise<WrkResult> {
  return wrkNarinfos({ server, kind, seconds, scriptFile, listFile, connections, clientCpu });
}

const servers: BenchServer[] = [];
try {
  const paths = synthesize();
  const hashParts = paths.map((p) => p.hashPart);
  const fillStarted = Date.now();
  let cached = await startQuorumServer({ dataDir, cpus: serverCpu });
  servers.push(cached);
  await fill(cached.url, paths, keys[0]!);
  // nginx serves exactly the bytes we serve.
  const bodies = await fetchEach(cached.url, hashParts, 200);
  paths.forEach((p, i) => writeFileSync(join(nginxRoot, `${p.hashPart}.narinfo`), bodies[i]!));
  console.log(`filled               ${pathCount} paths with quorum and NARs in ${((Date.now() - fillStarted) / 1000).toFixed(1)} s`);

  // One server holds a data directory: the uncached one serves an identical copy (same keys, same bytes).
  await cached.stop();
  servers.splice(servers.indexOf(cached), 1);
  cpSync(dataDir, copyDir, { recursive: true });
  const uncached = await startQuorumServer({ dataDir: copyDir, cpus: serverCpu, config: { substituter: { narinfoCacheEntries: 0 } } });
  servers.push(uncached);
  const nginx = await startNginx({ root: nginxRoot, cpus: serverCpu });
  servers.push(nginx);
  // The same bytes from all three (our narinfo signatures are deterministic Ed25519).
  for (const server of [uncached, nginx]) {
    const theirs = await fetchEach(server.url, hashParts.slice(0, 100), 200);
    if (theirs.some((b, i) => b !== bodies[i])) throw new Error(`${server.url} serves other narinfo bytes than ${cached.url}`);
  }

  const scriptFile = join(work, 'narinfo.lua');
  writeFileSync(scriptFile, WRK_SCRIPT);
  const listFile = join(work, 'hits.txt');
  writeFileSync(listFile, hashParts.map((h) => `/${h}.narinfo\n`).join(''));

  const NGINX = 'nginx (static files)';
  const CACHED = 'ours, cached (empty when timing starts)';
  const UNCACHED = 'ours, uncached (narinfoCacheEntries 0)';
  const FLOODED = `ours, cached, after ${MISS_FLOOD} misses`;
  const results = new Map<string, WrkResult[]>();
  const measure = async (kind: WrkKind, name: string, server: BenchServer, round: number) => {
    const r = await wrk(server, kind, duration, scriptFile, listFile);
    results.set(`${kind}\0${name}`, [...(results.get(`${kind}\0${name}`) ?? []), r]);
    process.stderr.write(`round ${round + 1} ${kind} ${name}: ${r.rps.toFixed(0)} req/s, p99 ${r.p99ms.toFixed(2)} ms, cpu ${(r.cpu * 100).toFixed(0)}%\n`);
  };
  // Warm-up (JIT, page cache, SQLite cache), untimed.
  for (const kind of ['hits', 'misses'] as const) for (const server of [nginx, uncached]) await wrk(server, kind, 3, scriptFile, listFile);
  for (let round = 0; round < rounds; round++) {
    // A fresh cached server each round, whatever the previous round's flood left behind; warmed up
    // (JIT) with misses only, which cache nothing, so nothing is rendered before the clock starts.
    await cached.stop();
    servers.splice(servers.indexOf(cached), 1);
    cached = await startQuorumServer({ dataDir, cpus: serverCpu });
    servers.push(cached);
    await wrk(cached, 'misses', 3, scriptFile, listFile);
    for (const [name, server] of [[NGINX, nginx], [CACHED, cached], [UNCACHED, uncached]] as const) await measure('hits', name, server, round);
    for (const [name, server] of [[NGINX, nginx], [UNCACHED, uncached]] as const) await measure('misses', name, server, round);
    // The cached server as it runs for a while, after clients asked about many paths nobody built.
    await fetchEach(cached.url, Array.from({ length: MISS_FLOOD }, () => nix32Encode(randomBytes(20))), 404);
    await measure('misses', FLOODED, cached, round);
    await measure('hits', FLOODED, cached, round);
  }

  console.log(`wrk                  -t1 -c${connections} -d${duration}s on CPU ${clientCpu}; servers on CPU ${serverCpu}; ${rounds} rounds, medians`);
  console.log('');
  console.log('| requests | server | req/s | p50 ms | p99 ms | server CPU | req/s vs nginx | req per server CPU-second | per CPU-second vs nginx |');
  console.log('| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  const rows: Array<[WrkKind, string]> = [
    ['hits', NGINX],
    ['hits', CACHED],
    ['hits', UNCACHED],
    ['hits', FLOODED],
    ['misses', NGINX],
    ['misses', UNCACHED],
    ['misses', FLOODED],
  ];
  for (const [kind, name] of rows) {
    const of = (n: string) => results.get(`${kind}\0${n}`)!;
    const rps = (n: string) => median(of(n).map((r) => r.rps));
    const perCpu = (n: string) => median(of(n).map((r) => r.rps / r.cpu));
    const rs = of(name);
    const cells = [
      kind === 'hits' ? 'hit (200)' : 'miss (404)',
      name,
      rps(name).toFixed(0),
      median(rs.map((r) => r.p50ms)).toFixed(2),
      median(rs.map((r) => r.p99ms)).toFixed(2),
      `${(median(rs.map((r) => r.cpu)) * 100).toFixed(0)}%`,
      (rps(name) / rps(NGINX)).toFixed(2),
      perCpu(name).toFixed(0),
      (perCpu(name) / perCpu(NGINX)).toFixed(2),
    ];
    console.log(`| ${cells.join(' | ')} |`);
  }
} finally {
  for (const s of servers) await s.stop();
  rmSync(work, { recursive: true, force: true });
}
