/**
 * Benchmark: `nix-quorum client` between Nix and the server, against Nix straight from the server,
 * in the same run.
 *
 *   npx tsc -p . && node dist/bench/client.js [--count 299] [--runs 5] [--server-cpu 1] [--client-cpu 0] [--seconds 10]
 *
 * The closure: bench/tree.ts, --count derivations and a top one (300 paths by default), built by two
 * builders who both submit and upload it, so every path has quorum (2 of 2). The client pins both
 * builder keys (threshold 2) and the server's log key, no witnesses.
 *
 * 1. `nix-store -r` of the top path into a fresh chroot store (own XDG_CACHE_HOME, no narinfo disk
 *    cache), from the server directly, and through a client started fresh for each sample (its
 *    cache empty: every path is fetched with its proofs and verified; Nix is sent to the server for
 *    every NAR).
 *    The server runs on --server-cpu; Nix and the client on --client-cpu, as on a user's machine.
 *    One untimed warm-up each, then --runs samples each, alternating which goes first. Goal: the
 *    client's median at most 1.3 times the direct one.
 * 2. narinfo hits per second with wrk (bench/common.ts), 16 connections for --seconds, cycling
 *    through the closure's narinfos: the server, and a client whose cache holds them all (wrk on
 *    the other core than the one measured).
 * 3. The client's memory: resident set (VmRSS) after the wrk run and its peak (VmHWM), from /proc.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { formatPublicKey } from '../src/nix/keys.js';
import { CLI_PATH, NARINFO_WRK_SCRIPT, benchServer, freePort, median, spawnPinned, waitForHealth, wrkNarinfos, type BenchServer } from './common.js';
import { buildTree, serveTree, substituteTop, type Sample } from './tree.js';

const { values } = parseArgs({
  options: {
    count: { type: 'string', default: '299' },
    runs: { type: 'string', default: '5' },
    'server-cpu': { type: 'string', default: '1' },
    'client-cpu': { type: 'string', default: '0' },
    seconds: { type: 'string', default: '10' },
  },
});
const runs = Number(values.runs);
const serverCpu = values['server-cpu'];
const clientCpu = values['client-cpu'];

/** `nix-quorum client` as a child process on `clientCpu`, with a fresh state directory (under `--cpu-prof` with BENCH_PROFILE=<dir>, as the server); its public key. */
async function startClientProcess(work: string, config: object): Promise<BenchServer & { publicKey: string }> {
  const state = mkdtempSync(join(work, 'client-state-'));
  const port = await freePort();
  const file = join(state, 'client.json');
  writeFileSync(file, JSON.stringify({ ...config, listen: `127.0.0.1:${port}`, state, logLevel: 'warn' }));
  const profile = process.env.BENCH_PROFILE ? ['--cpu-prof', '--cpu-prof-dir', process.env.BENCH_PROFILE] : [];
  const child = spawnPinned(clientCpu, process.execPath, [...profile, CLI_PATH, 'client', '--config', file], { stdio: ['ignore', 'ignore', 'inherit'] });
  const server = benchServer(child, port, () => rmSync(state, { recursive: true, force: true }));
  await waitForHealth(server.url);
  return { ...server, publicKey: readFileSync(join(state, 'client-key.public'), 'utf8').trim() };
}

function memoryMiB(pid: number): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(status)![1]) / 1024;
  return { rss: kib('VmRSS'), peak: kib('VmHWM') };
}

const work = mkdtempSync(join(tmpdir(), 'nq-bench-client-'));
const stops: Array<() => Promise<void>> = [];
try {
  const tree = await buildTree(work, `client-bench-${Date.now()}`, Number(values.count));
  const served = await serveTree(work, tree, serverCpu);
  stops.push(() => served.server.stop());
  const { server } = served;
  const config = {
    ledgers: [server.url],
    logKey: readFileSync(join(served.dataDir, 'log-key.vkey'), 'utf8').trim(),
    builders: served.builders.map(formatPublicKey),
    threshold: 2,
  };
  const expected = tree.closure.length;

  const direct = async (tag: string) => substituteTop({ work, tag, url: server.url, publicKey: served.cacheKey, top: tree.top, expected, clientCpu, pids: [server.pid] });
  const viaClient = async (tag: string) => {
    const client = await startClientProcess(work, config);
    try {
      return await substituteTop({ work, tag, url: client.url, publicKey: client.publicKey, top: tree.top, expected, clientCpu, pids: [server.pid, client.pid] });
    } finally {
      await client.stop();
    }
  };
  const contenders: Array<{ name: string; run: (tag: string) => Promise<Sample>; samples: Sample[] }> = [
    { name: 'direct (Nix from nix-quorum serve)', run: direct, samples: [] },
    { name: 'through nix-quorum client (cold cache)', run: viaClient, samples: [] },
  ];
  for (const c of contenders) await c.run('warm');
  for (let r = 0; r < runs; r++) {
    for (const c of r % 2 === 0 ? contenders : [...contenders].reverse()) {
      const s = await c.run(String(r));
      c.samples.push(s);
      process.stderr.write(`run ${r + 1} ${c.name}: ${s.seconds.toFixed(2)} s, server (+ client) CPU ${s.serverCpu.toFixed(2)} s\n`);
    }
  }

  // narinfo hits: the server, and one client whose cache holds the whole closure.
  const client = await startClientProcess(work, config);
  stops.push(() => client.stop());
  const paths = tree.closure.map((p) => `/${p.slice(11, 43)}.narinfo`);
  for (const p of paths) {
    const res = await fetch(`${client.url}${p}`);
    if (res.status !== 200) throw new Error(`the client does not serve ${p}: ${res.status} ${await res.text()}`);
  }
  const scriptFile = join(work, 'narinfo.lua');
  const listFile = join(work, 'paths.txt');
  writeFileSync(scriptFile, NARINFO_WRK_SCRIPT);
  writeFileSync(listFile, `${paths.join('\n')}\n`);
  // wrk on the other core than the one measured: each target has a core to itself (the server idles while the client is measured).
  const wrk = (target: BenchServer, cpu: string) => wrkNarinfos({ server: target, kind: 'hits', seconds: Number(values.seconds), scriptFile, listFile, connections: 16, clientCpu: cpu });
  const serverHits = await wrk(server, clientCpu);
  const clientHits = await wrk(client, serverCpu);
  const memory = memoryMiB(client.pid);

  console.log(`Nix clients          nix-store -r of the top path (${expected} paths) into a fresh chroot store on CPU ${clientCpu}; server on CPU ${serverCpu}; nix-quorum client on CPU ${clientCpu}; ${runs} runs each`);
  console.log('');
  console.log('| substitution | paths | median s | min s | max s | server (+ client) CPU s, median | time vs direct |');
  console.log('| --- | ---: | ---: | ---: | ---: | ---: | ---: |');
  const base = median(contenders[0]!.samples.map((s) => s.seconds));
  for (const c of contenders) {
    const secs = c.samples.map((s) => s.seconds);
    const m = median(secs);
    console.log(`| ${c.name} | ${expected} | ${m.toFixed(2)} | ${Math.min(...secs).toFixed(2)} | ${Math.max(...secs).toFixed(2)} | ${median(c.samples.map((s) => s.serverCpu)).toFixed(2)} | ${(m / base).toFixed(2)} |`);
  }
  console.log('');
  console.log('| narinfo hits (wrk, 16 connections) | req/s | p50 ms | p99 ms | CPU (cores) | vs server |');
  console.log('| --- | ---: | ---: | ---: | ---: | ---: |');
  for (const [name, r] of [['nix-quorum serve', serverHits], ['nix-quorum client (cached, verified)', clientHits]] as const) {
    console.log(`| ${name} | ${Math.round(r.rps)} | ${r.p50ms.toFixed(2)} | ${r.p99ms.toFixed(2)} | ${r.cpu.toFixed(2)} | ${(r.rps / serverHits.rps).toFixed(2)} |`);
  }
  console.log('');
  console.log(`client memory        RSS ${memory.rss.toFixed(1)} MiB after the wrk run, peak ${memory.peak.toFixed(1)} MiB (${expected} verified narinfos cached)`);
} finally {
  for (const stop of stops.reverse()) await stop();
  rmSync(work, { recursive: true, force: true });
}
