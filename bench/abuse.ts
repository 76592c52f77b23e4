/**
 * Benchmark: narinfo throughput of honest clients while hostile clients send oversize, malformed
 * and unauthenticated requests, as a ratio to the same server in the same run without them.
 *
 *   npx tsc -p . && node dist/bench/abuse.js [--paths 5000] [--duration 10] [--connections 32] [--rounds 3] [--hostile 8]
 *
 * A data directory is filled through the real API (two builders, --paths paths with quorum and
 * NARs). `nix-quorum serve` runs pinned to --server-cpu; wrk (32 connections, hits cycling through
 * every path) and the hostile clients share --client-cpu, as clients do. Each round measures wrk
 * alone, then wrk while --hostile hostile connections (a child process) send --rate requests per
 * second between them (each on a new connection), in turn:
 *   - unauthenticated attestation submissions declaring 64 MiB bodies (refused after the header);
 *   - submissions with a forged builder signature: gzip bodies (415), declared 64 MiB (413), and
 *     2 MiB bodies the server must read and hash before it refuses them (403);
 *   - NAR uploads of 100 MiB without a valid signature (refused after the header);
 *   - malformed narinfo names and API paths (400), unknown paths (404).
 * Goal: honest requests/s with the hostile clients >= 0.7 of without (medians over --rounds). The
 * peer: nginx serving the same narinfo bytes as static files, alone and under the same hostile load
 * (which it answers 404/405): on this VM a new loopback connection costs hundreds of µs of kernel
 * time whoever accepts it, and the peer shows that share.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { addBuilder } from '../src/app/builders.js';
import { attestationJson, signOutput } from '../src/builder/attest.js';
import { loadConfig } from '../src/config.js';
import { uploadAuthHeader } from '../src/http/builderAuth.js';
import { createLogger } from '../src/log.js';
import { narHashFromDigest, sha256 } from '../src/nix/hash.js';
import { generateSecretKey } from '../src/nix/keys.js';
import { encodeStrings, NAR_MAGIC } from '../src/nix/nar/format.js';
import { openService } from '../src/service.js';
import { median, NARINFO_WRK_SCRIPT, postAttestations, randomStorePath, startNginx, startQuorumServer, wrkNarinfos, type BenchServer, type WrkResult } from './common.js';
import { rawRequest, type RawAnswer } from './hostile.js';

const { values } = parseArgs({
  options: {
    paths: { type: 'string', default: '5000' },
    duration: { type: 'string', default: '10' },
    connections: { type: 'string', default: '32' },
    rounds: { type: 'string', default: '3' },
    hostile: { type: 'string', default: '8' },
    rate: { type: 'string', default: '1000' },
    'server-cpu': { type: 'string', default: '1' },
    'client-cpu': { type: 'string', default: '0' },
    // Where the hostile clients run (default: with wrk, on --client-cpu).
    'hostile-cpu': { type: 'string' },
    attack: { type: 'string' },
    // Which of the hostile requests to send (indices into the list in attack()), e.g. 0,3; default all.
    kinds: { type: 'string' },
  },
});

const MiB = 1024 * 1024;

/** The hostile requests, in turn, forever (run as `--attack URL` in a child process). */
async function attack(url: string, connections: number, rate: number, only: number[] | undefined): Promise<void> {
  const forged = () => `NixQuorum-Attest builder=bench-a,ts=${Math.floor(Date.now() / 1000)},sig=${Buffer.alloc(64, 9).toString('base64')}`;
  const kinds: Array<() => Promise<RawAnswer>> = [
    () => rawRequest(url, { method: 'POST', path: '/api/v1/attestations', headers: { 'content-length': String(64 * MiB) }, bodyBytes: MiB }),
    () => rawRequest(url, { method: 'POST', path: '/api/v1/attestations', headers: { authorization: forged(), 'content-encoding': 'gzip', 'content-length': String(MiB) }, bodyBytes: MiB }),
    () => rawRequest(url, { method: 'POST', path: '/api/v1/attestations', headers: { authorization: forged(), 'content-length': String(64 * MiB) }, bodyBytes: MiB }),
    () => rawRequest(url, { method: 'POST', path: '/api/v1/attestations', headers: { authorization: forged(), 'content-length': String(2 * MiB), connection: 'close' }, bodyBytes: 2 * MiB }),
    () => rawRequest(url, { method: 'PUT', path: `/api/v1/nars/sha256:${'0'.repeat(52)}`, headers: { authorization: 'NixQuorum-Upload builder=x,ts=1,sig=' + 'A'.repeat(86) + '==', 'content-length': String(100 * MiB) }, bodyBytes: MiB }),
    () => rawRequest(url, { method: 'GET', path: '/not-a-hash.narinfo', headers: { connection: 'close' }, bodyBytes: 0 }),
    () => rawRequest(url, { method: 'GET', path: `/api/v1/paths/${'%ff'.repeat(100)}`, headers: { connection: 'close' }, bodyBytes: 0 }),
    () => rawRequest(url, { method: 'GET', path: `/api/v1/log/entries?start=x&end=${'9'.repeat(40)}`, headers: { connection: 'close' }, bodyBytes: 0 }),
  ];
  const chosen = only ? kinds.filter((_, i) => only.includes(i)) : kinds;
  const statuses = new Map<number, number>();
  process.on('SIGTERM', () => {
    process.stdout.write(`${JSON.stringify(Object.fromEntries(statuses))}\n`);
    process.exit(0);
  });
  await Promise.all(
    Array.from({ length: connections }, async (_, c) => {
      // Each connection sends at rate / connections requests per second (or as fast as answered).
      const interval = (1000 * connections) / rate;
      for (let i = c, next = performance.now(); ; i++, next += interval) {
        const a = await chosen[i % chosen.length]!();
        statuses.set(a.status, (statuses.get(a.status) ?? 0) + 1);
        const wait = next + interval - performance.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      }
    }),
  );
}

async function main(): Promise<void> {
  const pathCount = Number(values.paths);
  const duration = Number(values.duration);
  const connections = Number(values.connections);
  const rounds = Number(values.rounds);
  const hostile = Number(values.hostile);
  const work = mkdtempSync(join(tmpdir(), 'nq-bench-abuse-'));
  const dataDir = join(work, 'data');
  const keys = [generateSecretKey('bench-a'), generateSecretKey('bench-b')];
  {
    const service = openService(loadConfig({ env: {}, flags: { dataDir } }), createLogger('error'));
    for (const k of keys) addBuilder(service, k.publicKey);
    service.close();
  }
  const server = await startQuorumServer({ dataDir, cpus: values['server-cpu'] });
  try {
    const hashParts: string[] = [];
    for (let start = 0; start < pathCount; start += 500) {
      const batch = [];
      for (let i = start; i < Math.min(pathCount, start + 500); i++) {
        const nar = encodeStrings(NAR_MAGIC, '(', 'type', 'regular', 'contents', `abuse bench path ${i} ${Math.random()}\n`, ')');
        const narHash = narHashFromDigest(sha256(nar));
        const res = await fetch(`${server.url}/api/v1/nars/${narHash}`, { method: 'PUT', body: new Uint8Array(nar), headers: { authorization: uploadAuthHeader(keys[0]!, narHash, nar.length) } });
        if (res.status !== 201) throw new Error(`upload answered ${res.status}`);
        const outPath = randomStorePath(`abuse-${i}`);
        hashParts.push(outPath.slice(11, 43));
        for (const k of keys) batch.push({ key: k, outPath, narHash, narSize: nar.length });
      }
      const body = batch.map(({ key, outPath, narHash, narSize }) => attestationJson(signOutput({ drvPath: `${outPath}.drv`, outputName: 'out', outPath, narHash, narSize, references: [] } as never, key)));
      const res = await postAttestations(server.url, keys[0]!, body);
      if (!res.ok) throw new Error(`attestations answered ${res.status}: ${await res.text()}`);
    }
    // nginx serves the same narinfo bytes as static files: the peer, under the same hostile load.
    const nginxRoot = join(work, 'nginx');
    mkdirSync(nginxRoot);
    for (const h of hashParts) writeFileSync(join(nginxRoot, `${h}.narinfo`), await (await fetch(`${server.url}/${h}.narinfo`)).text());
    const nginx = await startNginx({ root: nginxRoot, cpus: values['server-cpu'] });
    const scriptFile = join(work, 'narinfo.lua');
    writeFileSync(scriptFile, NARINFO_WRK_SCRIPT);
    const listFile = join(work, 'hits.txt');
    writeFileSync(listFile, hashParts.map((h) => `/${h}.narinfo\n`).join(''));
    const measure = (target: BenchServer, seconds: number) => wrkNarinfos({ server: target, kind: 'hits', seconds, scriptFile, listFile, connections, clientCpu: values['client-cpu'] });
    const results = new Map<string, { alone: WrkResult[]; attacked: WrkResult[] }>([['ours', { alone: [], attacked: [] }], ['nginx', { alone: [], attacked: [] }]]);
    const answered = new Map<string, number>();
    try {
      for (const target of [server, nginx]) await measure(target, 3);
      for (let round = 0; round < rounds; round++) {
        for (const [name, target] of [['ours', server], ['nginx', nginx]] as const) {
          const r = results.get(name)!;
          r.alone.push(await measure(target, duration));
          const attacker = spawn('taskset', ['-c', values['hostile-cpu'] ?? values['client-cpu'], process.execPath, process.argv[1]!, '--attack', target.url, '--hostile', String(hostile), '--rate', values.rate, ...(values.kinds ? ['--kinds', values.kinds] : [])], { stdio: ['ignore', 'pipe', 'inherit'] });
          let out = '';
          attacker.stdout!.on('data', (d) => (out += d));
          await new Promise((resolve) => setTimeout(resolve, 1000));
          r.attacked.push(await measure(target, duration));
          const exited = new Promise((resolve) => attacker.once('exit', resolve));
          attacker.kill('SIGTERM');
          await exited;
          if (name === 'ours') for (const [status, n] of Object.entries(JSON.parse(out || '{}') as Record<string, number>)) answered.set(status, (answered.get(status) ?? 0) + n);
          process.stderr.write(`round ${round + 1} ${name}: alone ${r.alone.at(-1)!.rps.toFixed(0)} req/s, with hostile clients ${r.attacked.at(-1)!.rps.toFixed(0)} req/s; hostile answers ${out.trim()}\n`);
        }
      }
    } finally {
      await nginx.stop();
    }
    const rps = (rs: WrkResult[]) => median(rs.map((r) => r.rps));
    const p99 = (rs: WrkResult[]) => median(rs.map((r) => r.p99ms));
    console.log(`wrk -t1 -c${connections} -d${duration}s hits over ${pathCount} paths; server on CPU ${values['server-cpu']}; wrk and ${hostile} hostile connections, ${values.rate} hostile requests/s each on a new connection, on CPU ${values['hostile-cpu'] ?? values['client-cpu']}; ${rounds} rounds, medians`);
    console.log('| server | honest req/s alone | p99 ms | with hostile clients | p99 ms | ratio |');
    console.log('| --- | ---: | ---: | ---: | ---: | ---: |');
    for (const [name, r] of results) console.log(`| ${name} | ${rps(r.alone).toFixed(0)} | ${p99(r.alone).toFixed(2)} | ${rps(r.attacked).toFixed(0)} | ${p99(r.attacked).toFixed(2)} | ${(rps(r.attacked) / rps(r.alone)).toFixed(2)} |`);
    const ours = results.get('ours')!;
    console.log(`ratio ${(rps(ours.attacked) / rps(ours.alone)).toFixed(2)} (goal >= 0.7)`);
    console.log(`hostile requests to ours answered, by status (all rounds): ${JSON.stringify(Object.fromEntries(answered))}`);
  } finally {
    await server.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

if (values.attack) await attack(values.attack, Number(values.hostile), Number(values.rate), values.kinds?.split(',').map(Number));
else await main();
