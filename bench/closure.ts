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
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadConfig } from '../src/config.js';
import { createLogger } from '../src/log.js';
import { formatSecretKey, formatPublicKey, generateSecretKey } from '../src/nix/keys.js';
import { openService } from '../src/service.js';
import { CLI_PATH, cpuSeconds, exec, median, startNginx, startQuorumServer, type BenchServer } from './common.js';
import { addBuilder } from '../src/app/builders.js';

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

const nixEnv = { ...process.env, NIX_REMOTE: 'local', NIX_CONFIG: 'experimental-features = nix-command' };

/**
 * The .nix file: derivations n0 … n<count-1> in a DAG, and `top` referring to all of them. A fixed
 * pseudo-random sequence picks references and sizes, so the shape is the same on every run; the
 * salt makes the store paths new. Builders run with an empty PATH: tools by full path.
 */
function writeTree(file: string, salt: string): void {
  // Park-Miller: products stay below 2^53, so the sequence is exact in doubles.
  let seed = 12345;
  const rand = (n: number) => {
    seed = (seed * 48271) % 2147483647;
    return Math.floor((seed / 2147483647) * n);
  };
  const lines = [
    'let',
    `  salt = ${JSON.stringify(salt)};`,
    '  mk = name: script: derivation { inherit name salt; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" script ]; };',
  ];
  for (let i = 0; i < count; i++) {
    const refs = [...new Set(Array.from({ length: i === 0 ? 0 : rand(5) }, () => i - 1 - rand(Math.min(i, 40))))].map((j) => `\${n${j}}`);
    // seq 1 N writes about 5 bytes a line: files of 0-24 KiB.
    const seqLines = rand(5000);
    lines.push(
      `  n${i} = mk "bench-pkg-${i}-1.0" "/bin/mkdir -p $out/bin $out/share && /usr/bin/seq 1 ${seqLines} > $out/bin/tool-${i} && /bin/echo ${refs.join(' ')} $salt > $out/share/deps";`,
    );
  }
  lines.push(`  top = mk "bench-top" "/bin/echo ${Array.from({ length: count }, (_, i) => `\${n${i}}`).join(' ')} > $out";`, 'in top', '');
  writeFileSync(file, lines.join('\n'));
}

/** nix-build into a chroot store, as an independent builder does (sandboxed, no substituters). */
async function buildInto(store: string, file: string): Promise<string> {
  const { NIX_CONFIG: _, ...env } = nixEnv;
  const args = ['--store', store, '--option', 'sandbox', 'true', '--option', 'build-users-group', '', '--option', 'substituters', '', '--option', 'extra-sandbox-paths', '/bin /lib /lib64 /usr', '--max-jobs', '8', '--no-out-link', file];
  return (await exec('nix-build', args, env)).trim();
}

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

interface Sample {
  seconds: number;
  serverCpu: number;
}

/** One fresh client substituting `top` from `server`; checks the whole closure arrived. */
async function substitute(work: string, tag: string, server: BenchServer, publicKey: string, top: string, expected: number): Promise<Sample> {
  const client = mkdtempSync(join(work, `client-${tag}-`));
  const cacheHome = mkdtempSync(join(work, `xdg-${tag}-`));
  try {
    const args = [
      '-c', clientCpu, 'nix-store', '--store', client, '-r', top,
      '--option', 'substituters', server.url, '--option', 'trusted-public-keys', publicKey,
      '--option', 'narinfo-cache-negative-ttl', '0', '--option', 'narinfo-cache-positive-ttl', '0',
      '--option', 'build-users-group', '', '--max-jobs', '0',
    ];
    const cpuBefore = cpuSeconds(server.pid);
    const started = process.hrtime.bigint();
    await exec('taskset', args, { ...nixEnv, XDG_CACHE_HOME: cacheHome });
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    const serverCpu = cpuSeconds(server.pid) - cpuBefore;
    const got = (await exec('nix-store', ['--store', client, '-qR', top], nixEnv)).split('\n').filter(Boolean).length;
    if (got !== expected) throw new Error(`the client from ${server.url} holds ${got} paths of the closure, not ${expected}`);
    return { seconds, serverCpu };
  } finally {
    rmSync(client, { recursive: true, force: true });
    rmSync(cacheHome, { recursive: true, force: true });
  }
}

const work = mkdtempSync(join(tmpdir(), 'nq-bench-closure-'));
const servers: BenchServer[] = [];
try {
  const nixFile = join(work, 'tree.nix');
  writeTree(nixFile, `closure-bench-${Date.now()}`);
  let t = Date.now();
  const [top, top2] = await Promise.all([buildInto(join(work, 'b1'), nixFile), buildInto(join(work, 'b2'), nixFile)]);
  if (top !== top2) throw new Error(`the two builders built different top paths: ${top} and ${top2}`);
  const closure = (await exec('nix-store', ['--store', join(work, 'b1'), '-qR', top], nixEnv)).split('\n').filter(Boolean);
  console.log(`built                ${closure.length} paths (${count} + top) in each of two chroot stores in ${((Date.now() - t) / 1000).toFixed(1)} s`);

  // Our cache: two registered builders submit and upload the closure.
  const dataDir = join(work, 'data');
  const builders = ['bench-builder-a', 'bench-builder-b'].map((name, i) => {
    const key = generateSecretKey(name);
    const file = join(work, `builder-${i}.secret`);
    writeFileSync(file, formatSecretKey(key));
    return { key, file, store: join(work, `b${i + 1}`) };
  });
  {
    const service = openService(loadConfig({ env: {}, flags: { dataDir } }), createLogger('error'));
    for (const b of builders) addBuilder(service, b.key.publicKey);
    service.close();
  }
  const ours = await startQuorumServer({ dataDir, cpus: serverCpu });
  servers.push(ours);
  t = Date.now();
  for (const b of builders) {
    await exec(process.execPath, [CLI_PATH, 'submit', '--closure', '--upload', '--store', b.store, '--server', ours.url, '--key-file', b.file, top], nixEnv);
  }
  console.log(`submitted            both builders, --closure --upload, in ${((Date.now() - t) / 1000).toFixed(1)} s`);
  for (const p of closure) {
    const res = await fetch(`${ours.url}/${p.slice(11, 43)}.narinfo`);
    if (res.status !== 200) throw new Error(`${p} is not advertised after both builders submitted (${res.status}): ${await res.text()}`);
  }
  const ourKey = readFileSync(join(dataDir, 'cache-key.public'), 'utf8').trim();

  // The peer: nix copy of the same closure to a file:// cache, signed, served by nginx.
  const cacheDir = join(work, 'file-cache');
  const peerKey = generateSecretKey('bench-file-cache-1');
  const peerKeyFile = join(work, 'file-cache.secret');
  writeFileSync(peerKeyFile, formatSecretKey(peerKey));
  t = Date.now();
  await exec('nix', ['copy', '--store', join(work, 'b1'), '--to', `file://${cacheDir}?secret-key=${peerKeyFile}`, top], nixEnv);
  console.log(`nix copy             to file://, in ${((Date.now() - t) / 1000).toFixed(1)} s`);
  const nginx = await startNginx({ root: cacheDir, cpus: serverCpu });
  servers.push(nginx);

  const contenders: Array<{ name: string; server: BenchServer; key: string; samples: Sample[]; perPathMs: number[] }> = [
    { name: 'ours (nix-quorum serve, br)', server: ours, key: ourKey, samples: [], perPathMs: [] },
    { name: 'nginx (nix copy file://, xz)', server: nginx, key: formatPublicKey(peerKey.publicKey), samples: [], perPathMs: [] },
  ];
  for (const c of contenders) await substitute(work, 'warm', c.server, c.key, top, closure.length);
  for (let r = 0; r < runs; r++) {
    for (const c of r % 2 === 0 ? contenders : [...contenders].reverse()) {
      const s = await substitute(work, String(r), c.server, c.key, top, closure.length);
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
