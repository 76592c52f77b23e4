/**
 * Benchmark: witnessing (c2sp.org/tlog-witness), two measurements in one run.
 *
 *   npm run build && node dist/bench/witness.js [--attestations 30000] [--clients 16] [--batch 100] [--logs 64] [--checkpoints 60]
 *
 * 1. Latency. `nix-quorum serve` (default checkpoint interval, 1 s) with three `nix-quorum witness`
 *    processes in ledger.witnesses, under the ingest benchmark's load: `--clients` clients POST
 *    pre-signed batches of `--batch` attestations as fast as they are answered. For every accepted
 *    attestation: the time from its 2xx to the first checkpoint that covers it having 2 of the 3
 *    cosignatures stored (and so served), from the ledger's cosignatures table (one clock: one
 *    machine); beside it, from the same run, the time to the first signed checkpoint covering it.
 *    Prints p50, p99, max. Goal: p99 < 2 s. Also ingest/s against a ledger without witnesses
 *    under the same load, same run.
 * 2. Throughput. One witness configured for `--logs` logs (each its own key); one client per log
 *    submits `--checkpoints` checkpoints of its log in turn, each extending the last with a
 *    consistency proof (about 30 hashes), all logs at once. add-checkpoint requests/s against the
 *    single-core Ed25519 sign rate of node:crypto over the same cosigned messages, same run; also
 *    per witness CPU-second, which does not depend on what the clients take from the two cores.
 *    Goal: >= 0.5. Every answer must be a 200.
 */
import { Agent, request } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { addBuilder } from '../src/app/builders.js';
import { loadConfig } from '../src/config.js';
import { openReader } from '../src/db.js';
import { attestAuthHeader } from '../src/http/builderAuth.js';
import { formatCheckpoint, formatNoteVerifierKey, generateNoteKey, signNote } from '../src/ledger/checkpoint.js';
import { MemoryNodeStore, appendLeaves, consistencyProof, leafHash, rootHash } from '../src/ledger/merkle.js';
import { statementText } from '../src/ledger/statement.js';
import { createLogger } from '../src/log.js';
import { generateSecretKey, signRaw, type SecretKey } from '../src/nix/keys.js';
import { openService } from '../src/service.js';
import { cosignedMessage } from '../src/witness/cosignature.js';
import { formatAddCheckpoint } from '../src/witness/request.js';
import { cpuSeconds, percentile, postAttestationBatches, randomNarHash, randomStorePath, startQuorumServer, startWitnessServer, type BenchServer } from './common.js';

const { values } = parseArgs({
  options: {
    attestations: { type: 'string', default: '30000' },
    clients: { type: 'string', default: '16' },
    batch: { type: 'string', default: '100' },
    logs: { type: 'string', default: '64' },
    checkpoints: { type: 'string', default: '60' },
  },
});
const total = Number(values.attestations);
const clients = Number(values.clients);
const batchSize = Number(values.batch);
const logCount = Number(values.logs);
const chain = Number(values.checkpoints);

const work = mkdtempSync(join(tmpdir(), 'nq-bench-witness-'));
const servers: BenchServer[] = [];
try {
  await latency();
  await throughput();
} finally {
  for (const s of servers) await s.stop();
  rmSync(work, { recursive: true, force: true });
}

/** A ledger data directory with four builder keys; returns its log vkey and the keys. */
function prepareLedger(dataDir: string, origin: string) {
  const keys = Array.from({ length: 4 }, (_, i) => generateSecretKey(`bench-builder-${i}`));
  const service = openService(loadConfig({ env: {}, flags: { dataDir, ledger: { origin } } }), createLogger('error'));
  for (const k of keys) addBuilder(service, k.publicKey);
  const vkey = service.noteVerifierText.trim();
  service.close();
  return { vkey, keys };
}

/** Pre-signed batches of distinct paths, each request signed by a builder, so the clients cost the server nothing but HTTP. */
function batches(keys: SecretKey[]): Array<{ body: Buffer<ArrayBuffer>; authorization: string }> {
  const bodies: Array<{ body: Buffer<ArrayBuffer>; authorization: string }> = [];
  for (let i = 0; i < total; i += batchSize) {
    const items = Array.from({ length: Math.min(batchSize, total - i) }, (_, j) => {
      const key = keys[(i + j) % keys.length]!;
      const outPath = randomStorePath(`p${i + j}`);
      const a = { drvPath: `${outPath}.drv`, outputName: 'out', outPath, narHash: randomNarHash(), narSize: 1000 + j, references: [] as string[] };
      return { ...a, builder: key.name, signature: signRaw(key, statementText(a as never)).toString('base64') };
    });
    const body = Buffer.from(JSON.stringify(items));
    bodies.push({ body, authorization: attestAuthHeader(keys[0]!, body) });
  }
  return bodies;
}

/** The bench/ingest load; when each accepted leaf was acknowledged. */
async function ingest(url: string, bodies: ReturnType<typeof batches>): Promise<{ acks: Array<{ at: number; leaf: number }>; seconds: number }> {
  const acks: Array<{ at: number; leaf: number }> = [];
  const started = process.hrtime.bigint();
  await postAttestationBatches(url, bodies, clients, (results, at) => {
    for (const r of results) if (r.status === 'accepted') acks.push({ at, leaf: r.leafIndex });
  });
  return { acks, seconds: Number(process.hrtime.bigint() - started) / 1e9 };
}

/**
 * For each acknowledged leaf, ms from its 2xx to the earliest `at` of an event covering it (a
 * checkpoint of a size above its index), ascending.
 */
function coverage(acks: ReadonlyArray<{ at: number; leaf: number }>, events: ReadonlyArray<{ size: number; at: number }>): number[] {
  const sorted = [...events].sort((x, y) => x.size - y.size);
  // Suffix minimum: the earliest time of any event of at least this size.
  for (let i = sorted.length - 2; i >= 0; i--) sorted[i] = { size: sorted[i]!.size, at: Math.min(sorted[i]!.at, sorted[i + 1]!.at) };
  return acks
    .map(({ at, leaf }) => {
      let lo = 0;
      let hi = sorted.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (sorted[mid]!.size > leaf) hi = mid;
        else lo = mid + 1;
      }
      return sorted[lo]!.at - at;
    })
    .sort((x, y) => x - y);
}

async function latency(): Promise<void> {
  // Peer, same load: a ledger without witnesses.
  const bareDir = join(work, 'bare');
  const bare = prepareLedger(bareDir, 'bench.example/bare');
  const bareServer = await startQuorumServer({ dataDir: bareDir });
  servers.push(bareServer);
  const bareRun = await ingest(bareServer.url, batches(bare.keys));
  await bareServer.stop();

  const origin = 'bench.example/log';
  const dataDir = join(work, 'ledger');
  const { vkey, keys } = prepareLedger(dataDir, origin);
  const witnesses = [];
  for (const i of [1, 2, 3]) witnesses.push(await startWitnessServer({ dataDir: join(work, `w${i}`), logs: [{ origin, vkey }], name: `bench.example/w${i}` }));
  servers.push(...witnesses);
  const ledger = await startQuorumServer({ dataDir, config: { ledger: { origin, witnesses: witnesses.map((w) => ({ url: w.url, vkey: w.vkey })) } } });
  servers.push(ledger);
  const { acks, seconds } = await ingest(ledger.url, batches(keys));
  const size = Math.max(...acks.map((a) => a.leaf)) + 1;
  for (const deadline = Date.now() + 60_000; ; ) {
    const res = await fetch(`${ledger.url}/api/v1/log/checkpoint?cosigned=2`);
    if (res.ok && Number((await res.text()).split('\n')[1]) >= size) break;
    if (Date.now() > deadline) throw new Error('the last attestations were not cosigned by 2 witnesses within 60 s');
    await new Promise((r) => setTimeout(r, 100));
  }

  // When each checkpoint was signed, and when it had its second cosignature (one clock: one machine).
  const db = openReader(join(dataDir, 'ledger.sqlite'));
  const signed = db.prepare('SELECT tree_size AS size, created_at AS at FROM checkpoints').all() as Array<{ size: number; at: number }>;
  const witnessed = db.prepare('SELECT tree_size AS size, created_at AS at FROM cosignatures ORDER BY tree_size, created_at').all() as Array<{ size: number; at: number }>;
  db.close();
  // Rows come by size, then time: the second row of a size is its second cosignature.
  const second = witnessed.filter((r, i) => i > 0 && witnessed[i - 1]!.size === r.size && (i < 2 || witnessed[i - 2]!.size !== r.size));
  const toSigned = coverage(acks, signed);
  const toWitnessed = coverage(acks, second);
  const row = (xs: number[]) => `p50 ${percentile(xs, 50)} ms, p99 ${percentile(xs, 99)} ms, max ${xs.at(-1)} ms`;
  const rate = acks.length / seconds;
  const bareRate = bareRun.acks.length / bareRun.seconds;
  console.log(`ingest               ${acks.length} attestations, ${clients} clients, batches of ${batchSize}: ${rate.toFixed(0)}/s with 3 witnesses, ${bareRate.toFixed(0)}/s without (same run): ${(rate / bareRate).toFixed(2)}`);
  console.log(`checkpoints          ${signed.length} signed, ${second.length} cosigned by 2 or more witnesses`);
  console.log(`2xx -> signed        ${row(toSigned)} (the peer: the checkpoint interval, 1 s)`);
  console.log(`2xx -> 2 of 3 cosig. ${row(toWitnessed)} (goal p99 < 2000 ms)`);
  for (const s of [ledger, ...witnesses]) await s.stop();
  servers.length = 0;
}

async function throughput(): Promise<void> {
  const STEP = 997;
  const logs = Array.from({ length: logCount }, (_, i) => generateNoteKey(`bench.example/log${i}`));
  const witness = await startWitnessServer({ dataDir: join(work, 'wt'), logs: logs.map((k) => ({ origin: k.name, vkey: formatNoteVerifierKey(k.verifier) })) });
  servers.push(witness);

  // One tree shared by all logs (their notes, and so their signatures, differ by origin).
  const store = new MemoryNodeStore();
  store.add(appendLeaves(0, Array.from({ length: STEP * chain }, (_, i) => leafHash(Buffer.from(`leaf ${i}`))), store));
  const roots = Array.from({ length: chain + 1 }, (_, j) => rootHash(STEP * j, store));
  const proofs = Array.from({ length: chain }, (_, j) => consistencyProof(STEP * j, STEP * (j + 1), store));
  const requests = logs.map((key) => proofs.map((proof, j) => formatAddCheckpoint(STEP * j, proof, signNote(formatCheckpoint({ origin: key.name, size: STEP * (j + 1), rootHash: roots[j + 1]! }), key))));

  // Peer: single-core Ed25519 signs over messages of the cosigned size, same run.
  const signer = generateSecretKey('bench-sign');
  const messages = requests[0]!.map((r) => cosignedMessage(r.slice(r.indexOf('\n\n') + 2, r.lastIndexOf('\n\n') + 1), 1_700_000_000));
  const signs = 20_000;
  let t = process.hrtime.bigint();
  for (let i = 0; i < signs; i++) signRaw(signer, messages[i % messages.length]!);
  const signRate = signs / (Number(process.hrtime.bigint() - t) / 1e9);

  const agent = new Agent({ keepAlive: true, maxSockets: logCount });
  const url = new URL('/add-checkpoint', witness.url);
  const post = (body: string) =>
    new Promise<void>((resolve, reject) => {
      const req = request(url, { method: 'POST', agent, headers: { 'content-length': Buffer.byteLength(body) } }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`witness answered ${res.statusCode}: ${Buffer.concat(chunks).toString()}`))));
      });
      req.on('error', reject);
      req.end(body);
    });
  const cpuBefore = cpuSeconds(witness.pid);
  const clientBefore = process.cpuUsage();
  t = process.hrtime.bigint();
  await Promise.all(requests.map(async (mine) => {
    for (const body of mine) await post(body);
  }));
  const seconds = Number(process.hrtime.bigint() - t) / 1e9;
  const witnessCpu = cpuSeconds(witness.pid) - cpuBefore;
  const clientUsage = process.cpuUsage(clientBefore);
  agent.destroy();
  const metrics = await (await fetch(`${witness.url}/metrics`)).text();
  const commits = Number(/^nixquorum_witness_commits_total (\d+)/m.exec(metrics)?.[1] ?? NaN);
  const n = logCount * chain;
  const rate = n / seconds;
  const perCpu = n / witnessCpu;
  console.log(`add-checkpoint       ${n} requests (${logCount} logs x ${chain} checkpoints, ~${proofs[Math.floor(chain / 2)]!.length} proof hashes) in ${seconds.toFixed(2)} s = ${rate.toFixed(0)}/s, all 200`);
  console.log(`raw Ed25519 sign     ${signRate.toFixed(0)} signs/s (single core, node:crypto, same run)`);
  console.log(`ratio                ${(rate / signRate).toFixed(2)} (goal >= 0.5); per witness CPU-second ${perCpu.toFixed(0)} = ${(perCpu / signRate).toFixed(2)}`);
  console.log(`CPU seconds          witness ${witnessCpu.toFixed(2)} (${((witnessCpu / n) * 1e6).toFixed(0)} µs per request; one sign ${(1e6 / signRate).toFixed(0)}), client ${((clientUsage.user + clientUsage.system) / 1e6).toFixed(2)}, on ${availableParallelism()} cores`);
  console.log(`commits              ${commits} (${(n / commits).toFixed(1)} requests per transaction and WAL fsync)`);
}
