/**
 * Benchmark: a mirror catching up. A primary ledger is bulk-loaded with `--attestations` really
 * signed attestations (bench/bulkLoad.ts, three builder keys); then `nix-quorum serve --follow`
 * starts from an empty data directory and is timed until it has verified and applied the primary's
 * whole log: every checkpoint signature, every leaf's signature under the key the log binds its
 * name to, the recomputed root, and the decisions rebuilt with the primary's code.
 *
 * Peer: the single-core Ed25519 verify rate of node:crypto over the loaded statements, in the same
 * run (before and after the catch-up; their median). Goal: verified leaves/s >= 0.8x that rate.
 * Also: the mirror's database bytes per attestation, and the CPU seconds of mirror and primary.
 *
 *   npm run build && node dist/bench/mirror.js [--attestations 1000000] [--keep] [--primary DIR]
 *
 * --primary DIR keeps the loaded primary there and, when DIR already holds one, uses it as it is
 * (loading 1M attestations takes minutes; a run that compares builds of the mirror need not repeat it).
 */
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync, statfsSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { addBuilder } from '../src/app/builders.js';
import { loadConfig } from '../src/config.js';
import { dataPaths } from '../src/dataDir.js';
import { attestationOf, attestationsByLeaf } from '../src/ledger/queries.js';
import { statementText } from '../src/ledger/statement.js';
import { createLogger } from '../src/log.js';
import { generateSecretKey, verifyRaw } from '../src/nix/keys.js';
import { openService } from '../src/service.js';
import { BulkLoader } from './bulkLoad.js';
import { cpuSeconds, median, startQuorumServer, type BenchServer } from './common.js';

const { values } = parseArgs({
  options: {
    attestations: { type: 'string', default: '1000000' },
    keep: { type: 'boolean', default: false },
    primary: { type: 'string' },
  },
});
const total = Number(values.attestations);
if (!Number.isSafeInteger(total) || total < 1000) throw new Error('--attestations: an integer of at least 1000');
/** Database bytes per attestation of the primary (bench/scale: about 1,250) and its mirror, with room for WALs. */
const DISK_PER_ATTESTATION = 4000;

const dir = mkdtempSync(join(tmpdir(), 'nq-bench-mirror-'));
const servers: BenchServer[] = [];
const cleanUp = async () => {
  await Promise.all(servers.map((s) => s.stop()));
  if (!values.keep) rmSync(dir, { recursive: true, force: true });
};
const primaryDir = values.primary ?? join(dir, 'primary');
const mirrorDir = join(dir, 'mirror');
const dbBytes = (data: string) => ['', '-wal'].reduce((sum, suffix) => sum + (statSync(`${dataPaths(data).db}${suffix}`, { throwIfNoEntry: false })?.size ?? 0), 0);
const reused = existsSync(dataPaths(primaryDir).db);

const free = statfsSync(dir).bavail * statfsSync(dir).bsize;
if (free < total * DISK_PER_ATTESTATION * (reused ? 0.5 : 1)) {
  await cleanUp();
  throw new Error(`${dir}: ${(free / 2 ** 30).toFixed(1)} GiB free, about ${((total * DISK_PER_ATTESTATION) / 2 ** 30).toFixed(1)} GiB needed; use fewer --attestations or point TMPDIR elsewhere`);
}

/** Single-core verifies/s of node:crypto over `count` statements of the loaded log. */
function verifyRate(count: number): number {
  const service = openService(loadConfig({ env: {}, flags: { dataDir: primaryDir, logLevel: 'error' } }), createLogger('error'));
  const rows = attestationsByLeaf(service.db, service.log.size() - count, service.log.size()).map(attestationOf);
  const keys = new Map(service.registry.list().map((b) => [b.name, b.publicKey]));
  service.close();
  const jobs = rows.map((a) => ({ key: keys.get(a.builder)!, message: Buffer.from(statementText(a)), signature: a.signature }));
  const t = process.hrtime.bigint();
  let ok = 0;
  for (const j of jobs) if (verifyRaw(j.key, j.message, j.signature)) ok++;
  const seconds = Number(process.hrtime.bigint() - t) / 1e9;
  if (ok !== jobs.length) throw new Error(`${jobs.length - ok} loaded signatures do not verify`);
  return jobs.length / seconds;
}

try {
  if (reused) console.log(`primary reused from ${primaryDir}`);
  else {
    const service = openService(loadConfig({ env: {}, flags: { dataDir: primaryDir, logLevel: 'error' } }), createLogger('error'));
    // During the load only: no fsync per batch (the load is not a durability test).
    service.db.pragma('synchronous = OFF');
    const loaded = Array.from({ length: 3 }, (_, i) => {
      const secretKey = generateSecretKey(`builder-${i}.example.org-1`);
      return { builder: addBuilder(service, secretKey.publicKey).builder, secretKey };
    });
    const t = performance.now();
    await new BulkLoader(service, loaded).loadTo(total);
    console.log(`primary loaded: ${total} signed attestations in ${((performance.now() - t) / 1000).toFixed(0)} s, log size ${service.log.size()}`);
    service.close();
  }
  const before = verifyRate(Math.min(total, 20_000));

  const primary = await startQuorumServer({ dataDir: primaryDir });
  servers.push(primary);
  const logKey = (await (await fetch(`${primary.url}/api/v1/log/key`)).text()).trim();
  const size = Number((await (await fetch(`${primary.url}/api/v1/log/checkpoint`)).text()).split('\n')[1]);
  // A primary that has been running: its start-up work (the check of every decision, the web
  // pages' catch-up) done before the mirror starts.
  for (let last = -1, now = cpuSeconds(primary.pid); now - last > 0.3; last = now, now = cpuSeconds(primary.pid)) await new Promise((r) => setTimeout(r, 1000));
  const primaryCpu = cpuSeconds(primary.pid);

  const t = performance.now();
  const mirror = await startQuorumServer({ dataDir: mirrorDir, config: { follow: { url: primary.url, logKey, pollMs: 200 } } });
  servers.push(mirror);
  let status: { verifiedSize: number; appliedSize: number; degraded: string | null } = { verifiedSize: 0, appliedSize: 0, degraded: null };
  let load = 0;
  while (status.verifiedSize < size) {
    await new Promise((r) => setTimeout(r, 200));
    // A mirror busy applying can drop an idle keep-alive connection as it is reused: ask again.
    status = ((await fetch(`${mirror.url}/api/v1/mirror`).then((r) => r.json(), () => null)) as typeof status | null) ?? status;
    if (status.degraded) throw new Error(`the mirror stopped: ${status.degraded}`);
    load = Math.max(load, loadavg()[0]!);
    process.stderr.write(`\rmirror applied ${status.appliedSize} of ${size} leaves`);
  }
  const seconds = (performance.now() - t) / 1000;
  process.stderr.write('\n');
  const mirrorCpu = cpuSeconds(mirror.pid);
  const mirrorMainCpu = cpuSeconds(mirror.pid, mirror.pid);
  // Where the mirror's CPU went, by thread (the main thread first, then V8's GC helpers, the WAL checkpointer, the signature pool).
  const threads = readdirSync(`/proc/${mirror.pid}/task`).map((t) => cpuSeconds(mirror.pid, Number(t))).filter((cpu) => cpu >= 0.1);
  const servedByPrimary = cpuSeconds(primary.pid) - primaryCpu;
  // The same decisions on both sides (a first page of them: the property test checks all of them).
  const decisions = await Promise.all([primary, mirror].map(async (s) => JSON.stringify(await (await fetch(`${s.url}/api/v1/decisions?limit=10000`)).json())));
  if (decisions[0] !== decisions[1]) throw new Error('the mirror decided otherwise than the primary');
  await Promise.all(servers.splice(0).map((s) => s.stop()));
  const after = verifyRate(Math.min(total, 20_000));

  const verifyPeer = median([before, after]);
  const rate = size / seconds;
  console.log(`mirror catch-up      ${size} leaves in ${seconds.toFixed(1)} s from an empty data directory (server start included)`);
  console.log(`verified leaves/s    ${rate.toFixed(0)}`);
  console.log(`raw Ed25519 verify   ${verifyPeer.toFixed(0)} verifies/s (single core, node:crypto, same run: ${before.toFixed(0)} before, ${after.toFixed(0)} after)`);
  console.log(`ratio                ${(rate / verifyPeer).toFixed(2)} (goal >= 0.8)`);
  console.log(`CPU seconds          mirror ${mirrorCpu.toFixed(1)} (${((mirrorCpu / size) * 1e6).toFixed(0)} µs per leaf; main thread ${((mirrorMainCpu / size) * 1e6).toFixed(0)} µs; by thread ${threads.map((c) => c.toFixed(1)).join(' ')} s), primary serving it ${servedByPrimary.toFixed(1)}, on ${availableParallelism()} cores; peak load average ${load.toFixed(1)}`);
  console.log(`mirror database      ${(dbBytes(mirrorDir) / 2 ** 20).toFixed(0)} MiB = ${(dbBytes(mirrorDir) / size).toFixed(0)} B/attestation (primary ${(dbBytes(primaryDir) / size).toFixed(0)})`);
} finally {
  await cleanUp();
}
