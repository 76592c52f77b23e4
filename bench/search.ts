/**
 * Benchmark: latency of the web ledger's search and path pages on a ledger of a million attestations,
 * against the server's cheapest express route (`/healthz`) in the same run, plus the naive peer the
 * trigram index replaces (a LIKE scan of the attestations, run directly in SQLite).
 *
 *   npm run build && node dist/bench/search.js [--attestations 1000000] [--requests 500] [--data DIR]
 *
 * The ledger is bulk-loaded with SQL in the real schema: attestations (random signature bytes; the
 * server never re-verifies stored rows), the Merkle tree through MerkleLog.append, quorum decisions
 * through DecisionMaterializer, NAR rows for most agreed contents and conflict rows for the
 * equivocations. Then `nix-quorum serve` runs as a child process, indexes the ledger for the web
 * pages on start (timed), and answers `--requests` sequential requests of each kind.
 * `--data DIR` loads into DIR once and reuses it on later runs.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import Database from 'better-sqlite3';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadConfig } from '../src/config.js';
import type { Attestation } from '../src/ledger/statement.js';
import { encodeLeaf } from '../src/ledger/leaf.js';
import { createLogger } from '../src/log.js';
import { generateSecretKey } from '../src/nix/keys.js';
import { dataPaths } from '../src/dataDir.js';
import { openService } from '../src/service.js';
import { CLI_PATH, freePort, randomNarHash, randomStorePath, waitForHealth } from './common.js';
import { addBuilder } from '../src/app/builders.js';

const { values } = parseArgs({
  options: {
    attestations: { type: 'string', default: '1000000' },
    requests: { type: 'string', default: '500' },
    data: { type: 'string' },
  },
});
const target = Number(values.attestations);
const requests = Number(values.requests);
const dir = values.data ?? mkdtempSync(join(tmpdir(), 'nq-bench-search-'));

// Names: common package stems (many matches per query) and rare random ones (a handful each).
const STEMS = `python3 perl gcc glibc openssl zlib bash coreutils hello curl git llvm clang rustc cargo go nodejs ruby php
  sqlite postgresql mysql nginx apache-httpd systemd util-linux linux-headers binutils gnumake cmake meson ninja pkg-config
  libxml2 libxslt libffi libpng libjpeg libtiff libwebp freetype fontconfig harfbuzz cairo pango gtk3 gtk4 qtbase qtsvg
  ffmpeg gstreamer pipewire pulseaudio alsa-lib mesa vulkan-loader wayland libdrm xorg-server libX11 libXext dbus glib
  gobject-introspection icu boost eigen protobuf grpc abseil-cpp gtest openblas lapack numpy scipy pandas matplotlib
  requests urllib3 certifi setuptools wheel pip poetry black mypy pytest sphinx docutils jinja2 markupsafe pyyaml
  emacs vim neovim tmux zsh fish ripgrep fd bat jq yq htop strace gdb valgrind lldb firefox chromium thunderbird`.split(/\s+/);
const PREFIXES = ['', '', '', 'python3.11-', 'python3.12-', 'perl5.38-', 'haskell-', 'node-'];
const SUFFIXES = ['', '', '', '', '-dev', '-lib', '-doc', '-man', '-bin'];
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(Math.random() * xs.length)]!;
const LETTERS = 'abcdefghijklmnopqrstuvwxyz';
const rareStem = () => `lib${Array.from({ length: 7 }, () => pick([...LETTERS])).join('')}`;

function packageName(): string {
  let stem: string;
  if (Math.random() < 0.3) stem = rareStem();
  else stem = pick(STEMS);
  return `${pick(PREFIXES)}${stem}-${Math.floor(Math.random() * 12)}.${Math.floor(Math.random() * 30)}.${Math.floor(Math.random() * 10)}${pick(SUFFIXES)}`;
}

/** Writes `target` attestations by SQL in the real schema. */
function load(): void {
  const service = openService(loadConfig({ env: {}, flags: { dataDir: dir, logLevel: 'error' } }), createLogger('error'));
  const builders = Array.from({ length: 8 }, (_, i) => addBuilder(service, generateSecretKey(`bench-builder-${i}`).publicKey).builder);
  const { db } = service;
  const insert = db.prepare(
    `INSERT INTO attestations (leaf_index, builder_id, drv_path, output_name, out_path, nar_hash, nar_size, refs, signature, narinfo_signature, created_at)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)`,
  );
  const insertConflict = db.prepare('INSERT OR IGNORE INTO conflicts (builder_id, out_path, first_leaf, second_leaf, detected_at) VALUES (?, ?, ?, ?, ?)');
  const insertNar = db.prepare(`INSERT OR IGNORE INTO nars (nar_hash, nar_size, blob_key, compression, file_hash, file_size, uploaded_by, created_at) VALUES (?, ?, ?, 'br', ?, ?, NULL, ?)`);
  const recent: string[] = [];
  let leaf = 0;
  const started = Date.now();
  const BATCH = 50_000;
  while (leaf < target) {
    db.transaction(() => {
      const batchStart = leaf;
      const leaves: Buffer[] = [];
      const touched = new Set<string>();
      const firstLeafOf = new Map<string, number>();
      while (leaf < target && leaf - batchStart < BATCH) {
        const outPath = randomStorePath(packageName());
        const drvPath = `${randomStorePath(outPath.slice(44))}.drv`;
        // Per path, the content each key signs: 60% three keys agree, 20% two, 10% one key alone,
        // 10% two agree and a third dissents; in a fifth of those the "third" is the first key again
        // (an equivocation, recorded as a conflict).
        const r = Math.random();
        const shape = r < 0.6 ? [0, 0, 0] : r < 0.8 ? [0, 0] : r < 0.9 ? [0] : [0, 0, 1];
        const equivocation = r >= 0.98;
        const contents = [0, 1].map(() => ({ narHash: randomNarHash(), narSize: 1000 + Math.floor(Math.random() * 1e8) }));
        const refCount = Math.floor(Math.random() * 9);
        const refs = refCount === 0 ? [] : recent.slice(-refCount).sort();
        const keys = [...builders].sort(() => Math.random() - 0.5).slice(0, shape.length);
        if (equivocation) keys[2] = keys[0]!;
        shape.forEach((c, i) => {
          if (leaf >= target) return;
          const builder = keys[i]!;
          const { narHash, narSize } = contents[c]!;
          const signature = randomBytes(64);
          const now = started + leaf;
          insert.run(leaf, builder.id, drvPath, 'out', outPath, narHash, narSize, refs.join(','), signature, now);
          const a = { drvPath, outputName: 'out', outPath, narHash, narSize, references: refs, builder: builder.name, signature, narinfoSignature: null } as unknown as Attestation;
          leaves.push(encodeLeaf(a));
          if (equivocation && i === 2) insertConflict.run(builder.id, outPath, firstLeafOf.get(outPath)!, leaf, now);
          if (i === 0) firstLeafOf.set(outPath, leaf);
          leaf++;
        });
        if (Math.random() < 0.85) insertNar.run(contents[0]!.narHash, contents[0]!.narSize, `nar/${randomBytes(8).toString('hex')}.nar.br`, randomNarHash(), contents[0]!.narSize, Date.now());
        touched.add(outPath);
        recent.push(outPath);
        if (recent.length > 50) recent.shift();
      }
      service.log.append(batchStart, leaves);
      service.decisions.recompute(touched);
    })();
    process.stderr.write(`\rloaded ${leaf} attestations (${((Date.now() - started) / 1000).toFixed(0)} s)`);
  }
  process.stderr.write('\n');
  service.checkpoints.publish();
  service.close();
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

interface Timing {
  p50: number;
  p99: number;
  n: number;
}

/** Sequential requests (one client), milliseconds from request to the last body byte. */
async function time(url: string, paths: readonly string[], check: (path: string, body: string) => void = () => undefined): Promise<Timing> {
  const ms: number[] = [];
  for (const path of paths) {
    const t = process.hrtime.bigint();
    const res = await fetch(`${url}${path}`);
    const body = await res.text();
    ms.push(Number(process.hrtime.bigint() - t) / 1e6);
    if (!res.ok) throw new Error(`${path} answered ${res.status}: ${body.slice(0, 200)}`);
    check(path, body);
  }
  ms.sort((a, b) => a - b);
  return { p50: percentile(ms, 50), p99: percentile(ms, 99), n: ms.length };
}

const loadStarted = Date.now();
const loaded = !(values.data && existsSync(dataPaths(dir).db));
if (loaded) load();
console.log(loaded ? `bulk load            ${target} attestations in ${((Date.now() - loadStarted) / 1000).toFixed(1)} s` : `reusing the ledger in ${dir}`);

// Queries drawn from the ledger itself: random leaves, their paths, derivations and name fragments.
const db = new Database(dataPaths(dir).db, { readonly: true });
const size = (db.prepare('SELECT MAX(leaf_index) + 1 FROM attestations').pluck().get() as number) ?? 0;
const pickLeaf = db.prepare('SELECT out_path, drv_path FROM attestations WHERE leaf_index = ?');
const WARM_UP = 50;
const drawn = Array.from({ length: requests + WARM_UP }, () => pickLeaf.get(Math.floor(Math.random() * size)) as { out_path: string; drv_path: string });
const [warmUp, samples] = [drawn.slice(0, WARM_UP), drawn.slice(WARM_UP)];
const nameOf = (p: string) => p.slice(44);
/** A fragment of a real name: a whole stem ("python3", "libqzkfrwa": many or few matches) or a slice of the full name. */
function fragment(name: string): string {
  const stems = name.split(/-(?=\d)|-(?=dev|lib|doc|man|bin)/)[0]!.split('-');
  const stem = stems[stems.length - 1]!;
  if (Math.random() < 0.5 && stem.length >= 3) return stem;
  const start = Math.floor(Math.random() * Math.max(1, name.length - 5));
  return name.slice(start, start + 5 + Math.floor(Math.random() * 6));
}
const naive = db.prepare("SELECT DISTINCT out_path FROM attestations WHERE out_path LIKE '%' || ? || '%' LIMIT 51");
const naiveMs: number[] = [];
for (const s of samples.slice(0, 20)) {
  const t = process.hrtime.bigint();
  naive.all(fragment(nameOf(s.out_path)));
  naiveMs.push(Number(process.hrtime.bigint() - t) / 1e6);
}
naiveMs.sort((a, b) => a - b);
// A fragment nothing contains reads the whole table.
const t0 = process.hrtime.bigint();
naive.all('qqqqqqqq');
const naiveMissMs = Number(process.hrtime.bigint() - t0) / 1e6;
const dbBytes = statSync(dataPaths(dir).db).size;
db.close();

const port = await freePort();
const started = Date.now();
const child = spawn(process.execPath, [CLI_PATH, 'serve', '--data', dir, '--listen', `127.0.0.1:${port}`], { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, NIX_QUORUM_LOG_LEVEL: 'warn' } });
const url = `http://127.0.0.1:${port}`;
try {
  await waitForHealth(url, 6000);
  // The server indexes the ledger for the web pages on start; measure once it has read every leaf.
  for (;;) {
    const { index } = (await (await fetch(`${url}/api/v1/stats`)).json()) as { index: { indexed: number; logSize: number } };
    if (index.indexed >= index.logSize) break;
    await new Promise((r) => setTimeout(r, 500));
  }
  const indexSeconds = (Date.now() - started) / 1000;

  const enc = encodeURIComponent;
  const nonEmpty = (path: string, body: string) => {
    if (!body.includes('href="/paths/')) throw new Error(`${path} found nothing`);
  };
  const hasRows = (path: string, body: string) => {
    if (!body.includes('data-leaf=')) throw new Error(`${path} shows no attestation`);
  };
  const names = samples.map((s) => `/search?q=${enc(fragment(nameOf(s.out_path)))}`);
  const secondPages: string[] = [];
  for (const path of names.slice(0, Math.min(100, requests))) {
    const next = /rel="next" href="([^"]+)"/.exec(await (await fetch(`${url}${path}`)).text());
    if (next) secondPages.push(next[1]!.replaceAll('&amp;', '&'));
  }
  // Warm up (JIT, SQLite page cache) on queries that are not measured.
  await time(url, warmUp.flatMap((s) => ['/healthz', `/search?q=${enc(fragment(nameOf(s.out_path)))}`, `/search?q=${s.out_path.slice(11, 43)}`, `/paths/${s.out_path.slice(11, 43)}`]));
  const rows: Array<[string, Timing]> = [
    ['/healthz (peer: the cheapest express route)', await time(url, samples.map(() => '/healthz'))],
    ['search: name fragment (HTML)', await time(url, names, nonEmpty)],
    ['search: name fragment (JSON /api/v1/search)', await time(url, samples.map((s) => `/api/v1/search?q=${enc(fragment(nameOf(s.out_path)))}`))],
    ['search: a later page of a name search', await time(url, secondPages, nonEmpty)],
    ['search: store path', await time(url, samples.map((s) => `/search?q=${enc(s.out_path)}`), nonEmpty)],
    ['search: hash part', await time(url, samples.map((s) => `/search?q=${s.out_path.slice(11, 43)}`), nonEmpty)],
    ['search: derivation path', await time(url, samples.map((s) => `/search?q=${enc(s.drv_path)}`), nonEmpty)],
    ['search: no match', await time(url, samples.map(() => `/search?q=${randomBytes(6).toString('hex').replace(/\d/g, 'q')}`))],
    ['path page (HTML)', await time(url, samples.map((s) => `/paths/${s.out_path.slice(11, 43)}`), hasRows)],
    ['overview /', await time(url, samples.slice(0, 50).map(() => '/'))],
    ['builders /builders', await time(url, samples.slice(0, 50).map(() => '/builders'))],
    ['conflicts /conflicts', await time(url, samples.slice(0, 50).map(() => '/conflicts'))],
  ];
  const peer = rows[0]![1].p50;
  console.log(`ledger               ${size} attestations, ${(dbBytes / 2 ** 30).toFixed(2)} GiB database`);
  console.log(`web index on start   ${indexSeconds.toFixed(1)} s until every leaf was indexed (server start included)`);
  console.log(`naive LIKE scan      p50 ${percentile(naiveMs, 50).toFixed(1)} ms, max ${naiveMs[naiveMs.length - 1]!.toFixed(1)} ms over ${naiveMs.length} name fragments; ${naiveMissMs.toFixed(0)} ms for no match (SQLite directly, no HTTP)`);
  console.log('');
  console.log('| request | n | p50 ms | p99 ms | p50 / healthz p50 |');
  console.log('| --- | ---: | ---: | ---: | ---: |');
  for (const [what, t] of rows) console.log(`| ${what} | ${t.n} | ${t.p50.toFixed(2)} | ${t.p99.toFixed(2)} | ${(t.p50 / peer).toFixed(1)} |`);
} finally {
  child.kill('SIGTERM');
  await new Promise((r) => child.once('exit', r));
  if (!values.data) rmSync(dir, { recursive: true, force: true });
}
