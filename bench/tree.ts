import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { addBuilder } from '../src/app/builders.js';
import { loadConfig } from '../src/config.js';
import { createLogger } from '../src/log.js';
import { formatSecretKey, generateSecretKey, type PublicKey } from '../src/nix/keys.js';
import { openService } from '../src/service.js';
import { CLI_PATH, cpuSeconds, exec, startQuorumServer, type BenchServer } from './common.js';

/** A closure of small derivations built by two builders and served with quorum: what bench/closure.ts and bench/client.ts substitute. */

export const nixEnv = { ...process.env, NIX_REMOTE: 'local', NIX_CONFIG: 'experimental-features = nix-command' };

/**
 * The .nix file: derivations n0 … n<count-1> in a DAG, and `top` referring to all of them. A fixed
 * pseudo-random sequence picks references and sizes, so the shape is the same on every run; the
 * salt makes the store paths new. Builders run with an empty PATH: tools by full path.
 */
export function writeTree(file: string, salt: string, count: number): void {
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
export async function buildInto(store: string, file: string): Promise<string> {
  const { NIX_CONFIG: _, ...env } = nixEnv;
  const args = ['--store', store, '--option', 'sandbox', 'true', '--option', 'build-users-group', '', '--option', 'substituters', '', '--option', 'extra-sandbox-paths', '/bin /lib /lib64 /usr', '--max-jobs', '8', '--no-out-link', file];
  return (await exec('nix-build', args, env)).trim();
}

export interface BuiltTree {
  top: string;
  closure: string[];
  /** The two builders' chroot stores. */
  stores: [string, string];
}

/** Writes a tree of `count` derivations and builds it in two chroot stores under `work`. */
export async function buildTree(work: string, salt: string, count: number): Promise<BuiltTree> {
  const nixFile = join(work, 'tree.nix');
  writeTree(nixFile, salt, count);
  const stores: [string, string] = [join(work, 'b1'), join(work, 'b2')];
  const t = Date.now();
  const [top, top2] = await Promise.all(stores.map((s) => buildInto(s, nixFile)));
  if (top !== top2) throw new Error(`the two builders built different top paths: ${top} and ${top2}`);
  const closure = (await exec('nix-store', ['--store', stores[0], '-qR', top!], nixEnv)).split('\n').filter(Boolean);
  console.log(`built                ${closure.length} paths (${count} + top) in each of two chroot stores in ${((Date.now() - t) / 1000).toFixed(1)} s`);
  return { top: top!, closure, stores };
}

export interface ServedTree {
  server: BenchServer;
  dataDir: string;
  /** The server's cache key (Nix public key). */
  cacheKey: string;
  builders: PublicKey[];
}

/** Our cache of the tree: two registered builders submit and upload its closure, so every path has quorum (2 of 2) and its NAR stored. */
export async function serveTree(work: string, tree: BuiltTree, cpus: string): Promise<ServedTree> {
  const dataDir = join(work, 'data');
  const builders = ['bench-builder-a', 'bench-builder-b'].map((name, i) => {
    const key = generateSecretKey(name);
    const file = join(work, `builder-${i}.secret`);
    writeFileSync(file, formatSecretKey(key));
    return { key, file, store: tree.stores[i]! };
  });
  const service = openService(loadConfig({ env: {}, flags: { dataDir } }), createLogger('error'));
  for (const b of builders) addBuilder(service, b.key.publicKey);
  service.close();
  const server = await startQuorumServer({ dataDir, cpus });
  const t = Date.now();
  for (const b of builders) await exec(process.execPath, [CLI_PATH, 'submit', '--closure', '--upload', '--store', b.store, '--server', server.url, '--key-file', b.file, tree.top], nixEnv);
  console.log(`submitted            both builders, --closure --upload, in ${((Date.now() - t) / 1000).toFixed(1)} s`);
  for (const p of tree.closure) {
    const res = await fetch(`${server.url}/${p.slice(11, 43)}.narinfo`);
    if (res.status !== 200) throw new Error(`${p} is not advertised after both builders submitted (${res.status}): ${await res.text()}`);
  }
  return { server, dataDir, cacheKey: readFileSync(join(dataDir, 'cache-key.public'), 'utf8').trim(), builders: builders.map((b) => b.key.publicKey) };
}

export interface Sample {
  seconds: number;
  /** CPU seconds the processes in `pids` used during the sample. */
  serverCpu: number;
}

/** One fresh Nix client substituting `top` from `url` on `clientCpu`; checks the whole closure arrived. */
export async function substituteTop(o: { work: string; tag: string; url: string; publicKey: string; top: string; expected: number; clientCpu: string; pids: number[] }): Promise<Sample> {
  const client = mkdtempSync(join(o.work, `client-${o.tag}-`));
  const cacheHome = mkdtempSync(join(o.work, `xdg-${o.tag}-`));
  try {
    const args = [
      '-c', o.clientCpu, 'nix-store', '--store', client, '-r', o.top,
      '--option', 'substituters', o.url, '--option', 'trusted-public-keys', o.publicKey,
      '--option', 'narinfo-cache-negative-ttl', '0', '--option', 'narinfo-cache-positive-ttl', '0',
      '--option', 'build-users-group', '', '--max-jobs', '0',
    ];
    const cpu = () => o.pids.reduce((sum, pid) => sum + cpuSeconds(pid), 0);
    const cpuBefore = cpu();
    const started = process.hrtime.bigint();
    await exec('taskset', args, { ...nixEnv, XDG_CACHE_HOME: cacheHome });
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    const serverCpu = cpu() - cpuBefore;
    const got = (await exec('nix-store', ['--store', client, '-qR', o.top], nixEnv)).split('\n').filter(Boolean).length;
    if (got !== o.expected) throw new Error(`the client from ${o.url} holds ${got} paths of the closure, not ${o.expected}`);
    return { seconds, serverCpu };
  } finally {
    rmSync(client, { recursive: true, force: true });
    rmSync(cacheHome, { recursive: true, force: true });
  }
}
