/**
 * Benchmark: a real `nix-store -r` of a closure of 300+ store paths into a fresh chroot store, from
 * our substituter against nginx serving a `nix copy --to file://` cache of the same paths, in the
 * same run.
 *
 *   npx tsc -p . && node dist/bench/closure.js [--count 320] [--runs 9] [--server-cpu 1] [--client-cpu 0]
 *
 * The closure: --count small derivations in a DAG (each refers to 0-4 random ones among the 40
 * before it; files of 0-24 KiB), and a top derivation referring to all of them, like a system
 * closure. Two builders build it into their own chroot stores and each runs
 * `nix-quorum submit --closure --upload` with its own key, so every path has quorum (2 of 2) and
 * its NAR stored (brotli, the default). The peer cache is `nix copy` of the first builder's closure
 * to `file://DIR?secret-key=…` (xz, Nix's default), served by nginx.
 *
 * Each sample substitutes the top path (Nix walks the references) into a new chroot store with its
 * own XDG_CACHE_HOME (no narinfo disk cache), trusting only that cache's key, with local builds
 * off (--max-jobs 0), pinned to --client-cpu; both servers are pinned to --server-cpu. One untimed
 * warm-up each, then --runs samples each, alternating which goes first. Every sample must end with
 * the whole closure valid in the client store. Prints median wall time per cache, the servers' CPU
 * seconds per run, and the ratio of our median to nginx's (goal <= 1.2); then, as a diagnostic,
 * the mean time per path to GET its narinfo and its NAR one request at a time (median of 3 passes).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { formatSecretKey, formatPublicKey, generateSecretKey } from '../src/nix/keys.js';
import { exec, median, startNginx, type BenchServer } from './common.js';
import { buildTree, nixEnv, serveTree, substituteTop, type Sample } from './tree.js';

const { values } = parseArgs({
  options: {
    count: { type: 'string', default: '320' },
    runs: { type: 'string', default: '9' },
    'server-cpu': { type: 'string', default: '1' },
    'client-cpu': { type: 'string', default: '0' },
  },
});
const count = Number(values.count);
const runs = Number(values.runs);
const serverCpu = values['server-cpu'];
const clientCpu = values['client-cpu'];

/**
 * Mean milliseconds per path to GET its narinfo and then its NAR, one request at a time (keep-alive):
 * the server's share of a client's wait, without Nix's own work.
 */
async function sequentialFetch(server: BenchServer, closure: readonly string[]): Promise<number> {
  const started = process.hrtime.bigint();
  for (const p of closure) {
    const res = await fetch(`${server.url}/${p.slice(11, 43)}.narinfo`);
    const url = /^URL: (.+)$/m.exec(await res.text())?.[1];
    if (res.status !== 200 || !url) throw new Error(`${server.url} has no narinfo for ${p}`);
    const nar = await fetch(new URL(url, `${server.url}/`));
    await nar.arrayBuffer();
    if (nar.status !== 200) throw new Error(`${server.url} answered ${nar.status} for ${url}`);
  }
  return Number(process.hrtime.bigint() - started) / 1e6 / closure.length;
}

const work = mkdtempSync(join(tmpdir(), 'nq-bench-closure-'));
const servers: BenchServer[] = [];
try {
  const tree = await buildTree(work, `closure-bench-${Date.now()}`, count);
  const { top, closure } = tree;
  const served = await serveTree(work, tree, serverCpu);
  const ours = served.server;
  servers.push(ours);
  const ourKey = served.cacheKey;

  // The peer: nix copy of the same closure to a file:// cache, signed, served by nginx.
  const cacheDir = join(work, 'file-cache');
  const peerKey = generateSecretKey('bench-file-cache-1');
  const peerKeyFile = join(work, 'file-cache.secret');
  writeFileSync(peerKeyFile, formatSecretKey(peerKey));
  const t = Date.now();
  await exec('nix', ['copy', '--store', join(work, 'b1'), '--to', `file://${cacheDir}?secret-key=${peerKeyFile}`, top], nixEnv);
  console.log(`nix copy             to file://, in ${((Date.now() - t) / 1000).toFixed(1)} s`);
  const nginx = await startNginx({ root: cacheDir, cpus: serverCpu });
  servers.push(nginx);

  const contenders: Array<{ name: string; server: BenchServer; key: string; samples: Sample[]; perPathMs: number[] }> = [
    { name: 'ours (nix-quorum serve, br)', server: ours, key: ourKey, samples: [], perPathMs: [] },
    { name: 'nginx (nix copy file://, xz)', server: nginx, key: formatPublicKey(peerKey.publicKey), samples: [], perPathMs: [] },
  ];
  for (const c of contenders) await substituteTop({ work, tag: 'warm', url: c.server.url, publicKey: c.key, top, expected: closure.length, clientCpu, pids: [c.server.pid] });
  for (let r = 0; r < runs; r++) {
    for (const c of r % 2 === 0 ? contenders : [...contenders].reverse()) {
      const s = await substituteTop({ work, tag: String(r), url: c.server.url, publicKey: c.key, top, expected: closure.length, clientCpu, pids: [c.server.pid] });
      c.samples.push(s);
      process.stderr.write(`run ${r + 1} ${c.name}: ${s.seconds.toFixed(2)} s, server CPU ${s.serverCpu.toFixed(2)} s\n`);
    }
  }

  for (let r = 0; r < 3; r++) for (const c of contenders) c.perPathMs.push(await sequentialFetch(c.server, closure));

  console.log(`clients              nix-store -r of the top path into a fresh chroot store on CPU ${clientCpu}; servers on CPU ${serverCpu}; ${runs} runs each`);
  console.log('');
  console.log('| cache | paths | median s | min s | max s | server CPU s (median) | time vs nginx | sequential narinfo + NAR, ms per path |');
  console.log('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  const peer = median(contenders[1]!.samples.map((s) => s.seconds));
  for (const c of contenders) {
    const secs = c.samples.map((s) => s.seconds);
    const m = median(secs);
    console.log(`| ${c.name} | ${closure.length} | ${m.toFixed(2)} | ${Math.min(...secs).toFixed(2)} | ${Math.max(...secs).toFixed(2)} | ${median(c.samples.map((s) => s.serverCpu)).toFixed(2)} | ${(m / peer).toFixed(2)} | ${median(c.perPathMs).toFixed(2)} |`);
  }
} finally {
  for (const s of servers) await s.stop();
  rmSync(work, { recursive: true, force: true });
}
