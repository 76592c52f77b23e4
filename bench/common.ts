import { execFileSync, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { attestAuthHeader } from '../src/http/builderAuth.js';
import { narHashFromDigest } from '../src/nix/hash.js';
import type { SecretKey } from '../src/nix/keys.js';
import { nix32Encode } from '../src/nix/nix32.js';
import { PROJECT_ROOT } from '../src/paths.js';

/** Shared by the benchmarks: the built CLI, free ports, servers and the nginx peer as child processes, random Nix values. */
export const CLI_PATH = join(PROJECT_ROOT, 'dist', 'src', 'cli', 'main.js');

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

export async function waitForHealth(url: string, tries = 400): Promise<void> {
  for (let i = 0; i < tries; i++) {
    try {
      if ((await fetch(`${url}/healthz`)).ok) return;
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${url} did not come up`);
}

export function randomStorePath(name: string): string {
  return `/nix/store/${nix32Encode(randomBytes(20))}-${name}`;
}

export function randomNarHash(): string {
  return narHashFromDigest(randomBytes(32));
}

/** A server a benchmark started as a child process: where it listens and its pid (for /proc figures). */
export interface BenchServer {
  url: string;
  port: number;
  pid: number;
  /** SIGTERM, then waits for the exit. Safe to call twice. */
  stop(): Promise<void>;
}

/**
 * Spawns `command`, pinned to `cpus` (a taskset list such as "1") when given. taskset execs the
 * command, so the child's pid is the server's own; its threads (libuv pool, GC) inherit the pinning.
 */
export function spawnPinned(cpus: string | undefined, command: string, args: string[], options: SpawnOptions): ChildProcess {
  return cpus === undefined ? spawn(command, args, options) : spawn('taskset', ['-c', cpus, command, ...args], options);
}

export function benchServer(child: ChildProcess, port: number, cleanup: () => void = () => undefined): BenchServer {
  const exited = once(child, 'exit');
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    pid: child.pid!,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
      cleanup();
    },
  };
}

/**
 * `nix-quorum serve` over `dataDir` as a child process, with `config` (JSON config file contents) if
 * given. With BENCH_PROFILE=<dir> in the environment it runs under `--cpu-prof` and writes its
 * profile there when stopped.
 */
export async function startQuorumServer(options: { dataDir: string; config?: object; cpus?: string }): Promise<BenchServer> {
  const port = await freePort();
  const profile = process.env.BENCH_PROFILE ? ['--cpu-prof', '--cpu-prof-dir', process.env.BENCH_PROFILE] : [];
  const args = [...profile, CLI_PATH, 'serve', '--data', options.dataDir, '--listen', `127.0.0.1:${port}`];
  const configDir = options.config ? mkdtempSync(join(tmpdir(), 'nq-bench-config-')) : undefined;
  if (configDir) {
    writeFileSync(join(configDir, 'config.json'), JSON.stringify(options.config));
    args.push('--config', join(configDir, 'config.json'));
  }
  const child = spawnPinned(options.cpus, process.execPath, args, { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, NIX_QUORUM_LOG_LEVEL: 'warn' } });
  const server = benchServer(child, port, () => configDir && rmSync(configDir, { recursive: true, force: true }));
  try {
    await waitForHealth(server.url);
  } catch (error) {
    await server.stop();
    throw error;
  }
  return server;
}

/**
 * The ingest load: `clients` clients POST the signed JSON `bodies` (arrays of attestations) to the
 * ledger at `url`, each the next as soon as its last is answered; `answered` hears each batch's
 * per-item results and when they arrived. Any non-2xx fails the run.
 */
export async function postAttestationBatches(
  url: string,
  bodies: ReadonlyArray<{ body: Buffer<ArrayBuffer>; authorization: string }>,
  clients: number,
  answered: (results: Array<{ status: string; leafIndex: number }>, at: number) => void,
): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (next < bodies.length) {
        const { body, authorization } = bodies[next++]!;
        const res = await fetch(`${url}/api/v1/attestations`, { method: 'POST', headers: { 'content-type': 'application/json', authorization }, body });
        if (!res.ok) throw new Error(`server answered ${res.status}: ${await res.text()}`);
        const at = Date.now();
        answered(((await res.json()) as { results: Array<{ status: string; leafIndex: number }> }).results, at);
      }
    }),
  );
}

/** `nix-quorum witness` arguments after the CLI path: one `--log ORIGIN=VKEY` per witnessed log. */
export function witnessArgs(dataDir: string, port: number, logs: ReadonlyArray<{ origin: string; vkey: string }>, name?: string): string[] {
  return ['witness', '--data', dataDir, '--listen', `127.0.0.1:${port}`, ...(name ? ['--name', name] : []), ...logs.flatMap((l) => ['--log', `${l.origin}=${l.vkey}`])];
}

/** `nix-quorum witness` over `dataDir` as a child process, with its vkey (DATA/witness-key.vkey). */
export async function startWitnessServer(options: { dataDir: string; logs: ReadonlyArray<{ origin: string; vkey: string }>; name?: string; cpus?: string }): Promise<BenchServer & { vkey: string }> {
  const port = await freePort();
  const child = spawnPinned(options.cpus, process.execPath, [CLI_PATH, ...witnessArgs(options.dataDir, port, options.logs, options.name)], {
    stdio: ['ignore', 'ignore', 'inherit'],
    env: { ...process.env, NIX_QUORUM_LOG_LEVEL: 'error' },
  });
  const server = benchServer(child, port);
  try {
    await waitForHealth(server.url);
  } catch (error) {
    await server.stop();
    throw error;
  }
  return { ...server, vkey: readFileSync(join(options.dataDir, 'witness-key.vkey'), 'utf8').trim() };
}

/**
 * Debian's nginx as the static peer (benchmarks and tests): one process (one worker), foreground,
 * on 127.0.0.1, serving `root`, with the settings of a tuned static cache (sendfile, access log
 * off, keep-alive without a request cap, as Node's server has none). `serverConfig` is pasted into
 * the server block, e.g. `location / { return 500; }` for a failing peer.
 */
export async function startNginx(options: NginxOptions): Promise<BenchServer> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startNginxOn(await freePort(), options);
    } catch (error) {
      // Another process may take the port between our probe and nginx's bind.
      if (attempt >= 5 || !String(error).includes('Address already in use')) throw error;
    }
  }
}

export interface NginxOptions {
  root?: string;
  serverConfig?: string;
  /** Instead of the static server: a whole `server { … }` site for the port nginx listens on (e.g. a reverse proxy). */
  site?: (port: number) => string;
  cpus?: string;
}

/**
 * examples/nginx-nix-quorum.conf, the README's reverse proxy, as it is, with only what names this
 * machine replaced (each replacement must match exactly once, so the example cannot drift from what
 * the tests and benchmarks run): it listens on 127.0.0.1:`port`, with TLS when `tls` is given and
 * plain HTTP otherwise, and proxies to 127.0.0.1:`upstream`. The port-80 redirect is left out.
 */
export function exampleProxySite(o: { port: number; upstream: number; tls?: { cert: string; key: string; serverName: string } }): string {
  let site = readFileSync(join(PROJECT_ROOT, 'examples', 'nginx-nix-quorum.conf'), 'utf8');
  const replace = (from: string, to: string) => {
    const count = site.split(from).length - 1;
    if (count !== 1) throw new Error(`examples/nginx-nix-quorum.conf holds ${JSON.stringify(from)} ${count} times, not once`);
    site = site.replace(from, to);
  };
  replace('    listen [::]:443 ssl http2;\n', '');
  replace('server 127.0.0.1:8080;', `server 127.0.0.1:${o.upstream};`);
  const certificate = '/etc/letsencrypt/live/quorum.example.org/fullchain.pem';
  const key = '/etc/letsencrypt/live/quorum.example.org/privkey.pem';
  if (o.tls) {
    replace('    listen 443 ssl http2;\n', `    listen 127.0.0.1:${o.port} ssl http2;\n`);
    replace(certificate, o.tls.cert);
    replace(key, o.tls.key);
    replace('server_name quorum.example.org;\n\n    ssl_certificate', `server_name ${o.tls.serverName};\n\n    ssl_certificate`);
  } else {
    replace('    listen 443 ssl http2;\n', `    listen 127.0.0.1:${o.port};\n`);
    replace(`    ssl_certificate     ${certificate};\n`, '');
    replace(`    ssl_certificate_key ${key};\n`, '');
  }
  const redirect = site.indexOf('\nserver {\n    listen 80;');
  if (redirect < 0) throw new Error('examples/nginx-nix-quorum.conf has no port-80 server to leave out');
  return site.slice(0, redirect);
}

async function startNginxOn(port: number, options: NginxOptions): Promise<BenchServer> {
  const prefix = mkdtempSync(join(tmpdir(), 'nq-nginx-'));
  const errorLog = join(prefix, 'error.log');
  const temp = (name: string) => `${name}_temp_path ${join(prefix, name)};`;
  writeFileSync(
    join(prefix, 'nginx.conf'),
    `daemon off;
master_process off;
worker_processes 1;
${process.getuid?.() === 0 ? 'user root root;' : ''}
pid ${join(prefix, 'nginx.pid')};
error_log ${errorLog} warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  ${['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map(temp).join('\n  ')}
  default_type application/octet-stream;
  types { text/x-nix-narinfo narinfo; }
  ${
    options.site
      ? options.site(port)
      : `server {
    listen 127.0.0.1:${port};
    root ${options.root};
    ${options.serverConfig ?? ''}
  }`
  }
}
`,
  );
  // -e: the startup error log, before the config is read (else it is /var/log/nginx/error.log).
  const child = spawnPinned(options.cpus, '/usr/sbin/nginx', ['-p', prefix, '-c', join(prefix, 'nginx.conf'), '-e', errorLog], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const server = benchServer(child, port, () => rmSync(prefix, { recursive: true, force: true }));
  for (let i = 0; ; i++) {
    if (child.exitCode !== null || child.signalCode !== null || i === 200) {
      const log = readFileSync(errorLog, { encoding: 'utf8', flag: 'a+' });
      await server.stop();
      throw new Error(`nginx did not start on port ${port}: ${stderr}${log}`);
    }
    if (await listening(port)) return server;
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

const CLOCK_TICKS = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());

/** CPU seconds (user + system, all threads) a live process has used so far, from /proc/<pid>/stat. */
export function cpuSeconds(pid: number, thread?: number): number {
  // A process's stat counts all its threads; a task's stat (thread = pid: the main thread) only that one.
  const stat = readFileSync(thread === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${thread}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces, so split after its closing paren): utime is 14th, stime 15th overall.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
}

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** The value at percentile `p` (0-100) of ascending `sorted` (nearest rank). */
export function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

const PACKAGE_STEMS = `python3 perl gcc glibc openssl zlib bash coreutils hello curl git llvm clang rustc cargo go nodejs ruby
  sqlite postgresql nginx systemd util-linux linux-headers binutils gnumake cmake meson ninja pkg-config libxml2 libffi libpng
  freetype fontconfig harfbuzz cairo pango gtk3 qtbase ffmpeg gstreamer pipewire alsa-lib mesa wayland libX11 dbus glib icu boost
  protobuf openblas numpy scipy pandas requests urllib3 setuptools pytest sphinx jinja2 pyyaml emacs vim tmux ripgrep jq gdb firefox`.split(/\s+/);
const PACKAGE_PREFIXES = ['', '', '', 'python3.11-', 'python3.12-', 'perl5.38-', 'haskell-', 'node-'];
const pickOne = <T>(xs: readonly T[]): T => xs[Math.floor(Math.random() * xs.length)]!;

/**
 * A Nixpkgs-like package name with version, e.g. `python3.12-numpy-1.26.4` or `libqzkfrwa-3.0.7`
 * (7-35 characters, mostly 12-25): common stems shared by many paths, and rare random ones.
 */
export function randomPackageName(): string {
  const stem = Math.random() < 0.3 ? `lib${Array.from({ length: 7 }, () => pickOne([...'abcdefghijklmnopqrstuvwxyz'])).join('')}` : pickOne(PACKAGE_STEMS);
  return `${pickOne(PACKAGE_PREFIXES)}${stem}-${Math.floor(Math.random() * 12)}.${Math.floor(Math.random() * 30)}.${Math.floor(Math.random() * 10)}`;
}

/**
 * Runs a command to completion and resolves with its stdout; rejects with its stderr on a non-zero
 * exit. Asynchronous on purpose: while spawnSync blocks the event loop, idle keep-alive sockets of
 * this process's fetch() are not reaped, and the next fetch picks one the server has since closed.
 */
export function exec(command: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d) => (stdout += d));
    child.stderr!.on('data', (d) => (stderr += d));
    child.once('error', reject);
    child.once('close', (code, signal) => (code === 0 ? resolve(stdout) : reject(new Error(`${command} ${args.join(' ')} failed (${code ?? signal}): ${stderr}${stdout}`))));
  });
}

/** POST /api/v1/attestations as a builder does: the JSON of `payload`, the request signed by `key`. */
export function postAttestations(url: string, key: SecretKey, payload: unknown): Promise<Response> {
  const body = Buffer.from(typeof payload === 'string' ? payload : JSON.stringify(payload));
  return fetch(`${url}/api/v1/attestations`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: attestAuthHeader(key, body) }, body });
}

// wrk's Lua: hits cycle through a list of request paths, misses draw a fresh random hash part per
// request; done() prints the summary as one JSON line.
export const NARINFO_WRK_SCRIPT = `
local paths, n, mode = {}, 0, "list"
local alphabet = "0123456789abcdfghijklmnpqrsvwxyz"
function init(args)
  mode = args[1]
  if mode == "list" then for line in io.lines(args[2]) do paths[#paths + 1] = line end end
  math.randomseed(os.time())
end
function request()
  if mode == "list" then
    n = n % #paths + 1
    return wrk.format(nil, paths[n])
  end
  local t = {}
  for k = 1, 32 do local r = math.random(32); t[k] = alphabet:sub(r, r) end
  return wrk.format(nil, "/" .. table.concat(t) .. ".narinfo")
end
function done(summary, latency, requests)
  io.write(string.format('{"requests":%d,"us":%d,"nonOk":%d,"socketErrors":%d,"p50":%d,"p99":%d}\\n',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
`;

export interface WrkResult {
  rps: number;
  p50ms: number;
  p99ms: number;
  /** Share of one core the server used during the run. */
  cpu: number;
}

export type WrkKind = 'hits' | 'misses';

/** wrk (NARINFO_WRK_SCRIPT) on `clientCpu` against a server: hits cycle through `listFile`, misses are random hash parts; each must answer 200, or 404. */
export async function wrkNarinfos(o: { server: BenchServer; kind: WrkKind; seconds: number; scriptFile: string; listFile: string; connections: number; clientCpu: string }): Promise<WrkResult> {
  const { server, kind, seconds, scriptFile, listFile, connections, clientCpu } = o;
  const before = cpuSeconds(server.pid);
  const args = ['-c', clientCpu, 'wrk', '-t1', `-c${connections}`, `-d${seconds}s`, '--timeout', '5s', '-s', scriptFile, server.url, '--', ...(kind === 'hits' ? ['list', listFile] : ['random'])];
  const stdout = await exec('taskset', args);
  const used = cpuSeconds(server.pid) - before;
  const line = stdout.split('\n').find((l) => l.startsWith('{'));
  if (!line) throw new Error(`wrk printed no summary: ${stdout}`);
  const s = JSON.parse(line) as { requests: number; us: number; nonOk: number; socketErrors: number; p50: number; p99: number };
  // Every hit must be a 200 and every miss a 404, or we would be timing the error path.
  const expectedNonOk = kind === 'hits' ? 0 : s.requests;
  if (s.nonOk !== expectedNonOk || s.socketErrors !== 0) throw new Error(`${server.url} ${kind}: ${s.nonOk} non-2xx of ${s.requests}, ${s.socketErrors} socket errors`);
  return { rps: s.requests / (s.us / 1e6), p50ms: s.p50 / 1000, p99ms: s.p99 / 1000, cpu: used / (s.us / 1e6) };
}

