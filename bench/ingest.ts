/**
 * Benchmark: durable attestation ingest over HTTP versus the raw single-core Ed25519 verify rate of
 * Node's crypto, measured in the same run, and fsyncs per attestation counted by strace.
 *
 *   npm run build && node dist/bench/ingest.js [--attestations 60000] [--clients 16] [--batch 100]
 *
 * The server runs as a child under `strace -f -c --seccomp-bpf -e trace=fsync,fdatasync` (only those
 * calls are stopped, so the overhead is small). Clients POST pre-signed batches concurrently (every
 * path attested by three of four builder keys); every 2xx means committed and the WAL fsync'd.
 * Prints attestations/s, verifies/s, their ratio (goal >= 0.8), CPU seconds and fsyncs per
 * attestation (goal <= 0.01).
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { attestAuthHeader } from '../src/http/builderAuth.js';
import { statementText } from '../src/ledger/statement.js';
import { createLogger } from '../src/log.js';
import { generateSecretKey, signRaw, verifyRaw } from '../src/nix/keys.js';
import { loadConfig } from '../src/config.js';
import { openService } from '../src/service.js';
import { CLI_PATH, cpuSeconds, freePort, postAttestationBatches, randomNarHash, randomStorePath, waitForHealth } from './common.js';
import { addBuilder } from '../src/app/builders.js';

const { values } = parseArgs({
  options: {
    attestations: { type: 'string', default: '60000' },
    clients: { type: 'string', default: '16' },
    batch: { type: 'string', default: '100' },
  },
});
const total = Number(values.attestations);
const clients = Number(values.clients);
const batchSize = Number(values.batch);

const dir = mkdtempSync(join(tmpdir(), 'nq-bench-ingest-'));
const keys = Array.from({ length: 4 }, (_, i) => generateSecretKey(`bench-builder-${i}`));
{
  const service = openService(loadConfig({ env: {}, flags: { dataDir: dir } }), createLogger('error'));
  for (const k of keys) addBuilder(service, k.publicKey);
  service.close();
}

// Pre-sign everything so the clients cost the server nothing but HTTP. Each path is attested by
// ATTESTERS different keys with the same content, as builders that reproduce each other do, in three
// waves over the run: the first attestations leave paths pending, the second reach the default
// policy's quorum and write decisions, the third update them.
const ATTESTERS = 3;
const paths = Array.from({ length: Math.ceil(total / ATTESTERS) }, (_, j) => {
  const outPath = randomStorePath(`p${j}`);
  return { drvPath: `${outPath}.drv`, outputName: 'out', outPath, narHash: randomNarHash(), narSize: 1000 + j, references: [] as string[] };
});
const items = Array.from({ length: total }, (_, i) => {
  const wave = Math.floor(i / paths.length);
  const j = i % paths.length;
  const key = keys[(j + wave) % keys.length]!;
  const a = paths[j]!;
  return { ...a, builder: key.name, signature: signRaw(key, statementText(a as never)).toString('base64') };
});
// Each request signed by a builder (any of them), before the clock starts.
const bodies: Array<{ body: Buffer<ArrayBuffer>; authorization: string }> = [];
for (let i = 0; i < total; i += batchSize) {
  const body = Buffer.from(JSON.stringify(items.slice(i, i + batchSize)));
  bodies.push({ body, authorization: attestAuthHeader(keys[0]!, body) });
}

// Peer: single-core Node Ed25519 verifies over the same statements, same run.
const verifyCount = Math.min(total, 20000);
const pub = keys[0]!.publicKey;
const msgs = items.slice(0, verifyCount).map((it) => Buffer.from(statementText(it as never)));
const sigs = items.slice(0, verifyCount).map((it) => Buffer.from(it.signature, 'base64'));
let t = process.hrtime.bigint();
let ok = 0;
for (let i = 0; i < verifyCount; i++) if (verifyRaw(pub, msgs[i]!, sigs[i]!)) ok++;
const verifySeconds = Number(process.hrtime.bigint() - t) / 1e9;
const verifyRate = verifyCount / verifySeconds;
if (ok === 0) throw new Error('verify peer verified nothing');

const port = await freePort();
const straceOut = join(dir, 'strace.txt');
const haveStrace = spawnSync('strace', ['-V']).status === 0;
const serverArgs = [...(process.env.BENCH_PROFILE ? ['--cpu-prof', '--cpu-prof-dir', process.env.BENCH_PROFILE] : []), CLI_PATH, 'serve', '--data', dir, '--listen', `127.0.0.1:${port}`];
const child = haveStrace
  ? spawn('strace', ['-f', '-c', '--seccomp-bpf', '-e', 'trace=fsync,fdatasync', '-o', straceOut, process.execPath, ...serverArgs], { stdio: ['ignore', 'ignore', 'inherit'] })
  : spawn(process.execPath, serverArgs, { stdio: ['ignore', 'ignore', 'inherit'] });
const url = `http://127.0.0.1:${port}`;
await waitForHealth(url);

// Under strace the server is strace's child.
const serverPid = haveStrace ? Number(spawnSync('pgrep', ['-P', String(child.pid)], { encoding: 'utf8' }).stdout.trim().split('\n')[0]) : child.pid!;
const serverCpuBefore = cpuSeconds(serverPid);
const clientCpuBefore = process.cpuUsage();

let acknowledged = 0;
t = process.hrtime.bigint();
await postAttestationBatches(url, bodies, clients, (results) => (acknowledged += results.filter((r) => r.status === 'accepted').length));
const ingestSeconds = Number(process.hrtime.bigint() - t) / 1e9;
const serverCpu = cpuSeconds(serverPid) - serverCpuBefore;
const clientCpuUsage = process.cpuUsage(clientCpuBefore);
const clientCpu = (clientCpuUsage.user + clientCpuUsage.system) / 1e6;
const metrics = await (await fetch(`${url}/metrics`)).text();
const commits = Number(/^nixquorum_ingest_commits_total (\d+)/m.exec(metrics)?.[1] ?? NaN);
// Stop the server itself, so strace sees it exit and writes its summary.
const exited = new Promise((r) => child.once('exit', r));
process.kill(serverPid, 'SIGTERM');
await exited;

let fsyncs = NaN;
if (haveStrace) {
  const summary = readFileSync(straceOut, 'utf8');
  fsyncs = 0;
  for (const m of summary.matchAll(/^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(fsync|fdatasync)\s*$/gm)) fsyncs += Number(m[1]);
}
const rate = acknowledged / ingestSeconds;
console.log(`attestations         ${acknowledged} in ${ingestSeconds.toFixed(2)} s (${clients} clients, batches of ${batchSize})`);
console.log(`durable ingest       ${rate.toFixed(0)} attestations/s`);
console.log(`raw Ed25519 verify   ${verifyRate.toFixed(0)} verifies/s (single core, node:crypto, same run)`);
console.log(`ratio                ${(rate / verifyRate).toFixed(2)} (goal >= 0.8)`);
console.log(`CPU seconds          server ${serverCpu.toFixed(2)} (${((serverCpu / acknowledged) * 1e6).toFixed(0)} µs per attestation; verifying alone would be ${((1 / verifyRate) * 1e6).toFixed(0)}), clients ${clientCpu.toFixed(2)}, on ${availableParallelism()} cores`);
console.log(`group commits        ${commits} (${(acknowledged / commits).toFixed(0)} attestations per commit)`);
console.log(`fsyncs               ${haveStrace ? `${fsyncs} = ${(fsyncs / acknowledged).toFixed(4)} per attestation (goal <= 0.01)` : 'strace not installed: not counted'}`);
rmSync(dir, { recursive: true, force: true });
