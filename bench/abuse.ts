/**
 * Benchmark: narinfo throughput of honest clients while hostile clients send oversize, malformed
 * and unauthenticated requests, as a ratio to the same server in the same run without them.
 *
 *   npx tsc -p . && node dist/bench/abuse.js [--paths 5000] [--duration 10] [--connections 32] [--rounds 3] [--hostile 8]
 *
 * A data directory is filled through the real API (two builders, --paths paths with quorum and
 * NARs). `nix-quorum serve` runs pinned to --server-cpu; wrk (32 connections, hits cycling through
 * every path) and the hostile clients share --client-cpu, as clients do. Each round measures wrk
 * alone, then wrk while --hostile hostile connections (a second wrk, HOSTILE_WRK_SCRIPT) send at most
 * --rate requests per second between them (each on a new connection), in turn:
 *   - unauthenticated attestation submissions declaring 64 MiB bodies (refused after the header);
 *   - submissions with a forged builder signature (403 at the signature check): gzip bodies,
 *     declared 64 MiB, and 2 MiB bodies sent whole (the signature covers the length, not the body);
 *   - NAR uploads of 100 MiB without a valid signature (refused after the header);
 *   - malformed narinfo names, API paths and log queries (400).
 * Goal: honest requests/s with the hostile clients >= 0.7 of without (medians over --rounds). Two
 * peers under the same hostile load, serving the same narinfo bytes: nginx as static files (which
 * answers the attacks 404/413), and bare node:http from memory, refusing the rest as we do
 * (bench/bareNode.ts). On this VM a new loopback connection costs hundreds of µs of kernel time
 * whoever accepts it: nginx shows that share, bare node what Node adds to it.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
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
import { PROJECT_ROOT } from '../src/paths.js';
import { openService } from '../src/service.js';
import { benchServer, freePort, median, NARINFO_WRK_SCRIPT, postAttestations, randomStorePath, spawnPinned, startNginx, startQuorumServer, waitForHealth, wrkNarinfos, type BenchServer, type WrkResult } from './common.js';

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
    // Which of the hostile requests to send (indices into the list in HOSTILE_WRK_SCRIPT), e.g. 0,3; default all.
    kinds: { type: 'string' },
  },
});

const MiB = 1024 * 1024;

/**
 * The hostile clients: wrk with this script, so what they cost the clients' core is C's epoll loop and
 * not a Node process (which, at 0.7-1 ms of CPU per request on a new connection, took wrk's core from
 * the honest client: with nginx as the server the honest rate fell to 0.6 under plain GETs alone).
 * Each connection sends the kinds in turn, waiting `delay` ms before each; a request whose answer
 * says `Connection: close`, or that the server closes or resets, is followed by a new connection.
 * Bodies are random bytes (incompressible), built once; a body shorter than its Content-Length
 * is the attacker's promise of more, which a server must not wait for.
 */
const HOSTILE_WRK_SCRIPT = `
-- statuses is a global: done() reads each thread's with thread:get.
statuses = {}
local requests, n, wait, threads = {}, 0, 0, {}
function setup(thread) table.insert(threads, thread) end
local function bytes(count)
  local t = {}
  for i = 1, 65536 do t[i] = string.char(math.random(0, 255)) end
  local chunk = table.concat(t)
  return string.rep(chunk, math.floor(count / 65536)) .. chunk:sub(1, count % 65536)
end
local function raw(method, path, headers, body)
  local lines = { method .. " " .. path .. " HTTP/1.1", "Host: " .. wrk.host .. ":" .. wrk.port }
  for _, h in ipairs(headers) do lines[#lines + 1] = h end
  return table.concat(lines, "\\r\\n") .. "\\r\\n\\r\\n" .. (body or "")
end
function init(args)
  wait = tonumber(args[1])
  local forged = "Authorization: NixQuorum-Attest builder=bench-a,ts=" .. os.time() .. ",sig=" .. args[2]
  local upload = "Authorization: NixQuorum-Upload builder=x,ts=1,sig=" .. string.rep("A", 86) .. "=="
  local mib = bytes(${MiB})
  local all = {
    raw("POST", "/api/v1/attestations", { "Content-Length: ${64 * MiB}" }, mib),
    raw("POST", "/api/v1/attestations", { forged, "Content-Encoding: gzip", "Content-Length: ${MiB}" }, mib),
    raw("POST", "/api/v1/attestations", { forged, "Content-Length: ${64 * MiB}" }, mib),
    raw("POST", "/api/v1/attestations", { forged, "Content-Length: ${2 * MiB}", "Connection: close" }, bytes(${2 * MiB})),
    raw("PUT", "/api/v1/nars/sha256:" .. string.rep("0", 52), { upload, "Content-Length: ${100 * MiB}" }, mib),
    raw("GET", "/not-a-hash.narinfo", { "Connection: close" }),
    raw("GET", "/api/v1/paths/" .. string.rep("%ff", 100), { "Connection: close" }),
    raw("GET", "/api/v1/log/entries?start=x&end=" .. string.rep("9", 40), { "Connection: close" }),
  }
  for kind in string.gmatch(args[3] or "", "%d+") do requests[#requests + 1] = all[tonumber(kind) + 1] end
  if #requests == 0 then requests = all end
end
function delay() return wait end
local verified = false
function request()
  -- wrk parses the first request it is given (to count pipelined requests) and refuses to start if
  -- it is incomplete, as a promised body is: that one is only parsed, never sent.
  if not verified then
    verified = true
    return raw("GET", "/", {})
  end
  n = n % #requests + 1
  return requests[n]
end
function response(status)
  statuses[tostring(status)] = (statuses[tostring(status)] or 0) + 1
end
function done(summary)
  local out = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do out[#out + 1] = string.format('"%s":%d', status, count) end
  end
  local e = summary.errors
  io.write(string.format('{"answers":{%s},"closedUnanswered":%d}\\n', table.concat(out, ","), e.connect + e.read + e.write + e.timeout))
end
`;

/** The second peer (bench/bareNode.ts): bare node:http serving the same files, refusing the rest as we do. */
async function startBareNode(root: string, cpus: string): Promise<BenchServer> {
  const port = await freePort();
  const server = benchServer(spawnPinned(cpus, process.execPath, [join(PROJECT_ROOT, 'dist', 'bench', 'bareNode.js'), root, String(port)], { stdio: ['ignore', 'ignore', 'inherit'] }), port);
  await waitForHealth(server.url);
  return server;
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
    const bare = await startBareNode(nginxRoot, values['server-cpu']);
    const scriptFile = join(work, 'narinfo.lua');
    writeFileSync(scriptFile, NARINFO_WRK_SCRIPT);
    const listFile = join(work, 'hits.txt');
    writeFileSync(listFile, hashParts.map((h) => `/${h}.narinfo\n`).join(''));
    const measure = (target: BenchServer, seconds: number) => wrkNarinfos({ server: target, kind: 'hits', seconds, scriptFile, listFile, connections, clientCpu: values['client-cpu'] });
    const targets = [['ours', server], ['bare node', bare], ['nginx', nginx]] as const;
    const results = new Map(targets.map(([name]) => [name, { alone: [] as WrkResult[], attacked: [] as WrkResult[], hostileRate: [] as number[] }]));
    const hostileScript = join(work, 'hostile.lua');
    writeFileSync(hostileScript, HOSTILE_WRK_SCRIPT);
    const forgedSig = Buffer.alloc(64, 9).toString('base64');
    const answered = new Map<string, number>();
    try {
      for (const [, target] of targets) await measure(target, 3);
      for (let round = 0; round < rounds; round++) {
        for (const [name, target] of targets) {
          const r = results.get(name)!;
          r.alone.push(await measure(target, duration));
          const started = performance.now();
          const attacker = spawn('taskset', ['-c', values['hostile-cpu'] ?? values['client-cpu'], 'wrk', '-t1', `-c${hostile}`, `-d${duration + 5}s`, '--timeout', '10s', '-s', hostileScript, target.url, '--', String((1000 * hostile) / Number(values.rate)), forgedSig, ...(values.kinds ? [values.kinds] : [])], { stdio: ['ignore', 'pipe', 'inherit'] });
          let out = '';
          attacker.stdout!.on('data', (d) => (out += d));
          const exited = once(attacker, 'exit');
          await new Promise((resolve) => setTimeout(resolve, 1000));
          r.attacked.push(await measure(target, duration));
          if (attacker.exitCode !== null || attacker.signalCode !== null) throw new Error(`the hostile wrk ended early: ${out}`);
          attacker.kill('SIGINT');
          await exited;
          const seconds = (performance.now() - started) / 1000;
          const line = out.split('\n').find((l) => l.startsWith('{'));
          if (!line) throw new Error(`the hostile wrk printed no summary: ${out}`);
          const hostileResult = JSON.parse(line) as { answers: Record<string, number>; closedUnanswered: number };
          const sent = Object.values(hostileResult.answers).reduce((a, b) => a + b, 0) + hostileResult.closedUnanswered;
          r.hostileRate.push(sent / seconds);
          if (name === 'ours') for (const [status, n] of Object.entries(hostileResult.answers)) answered.set(status, (answered.get(status) ?? 0) + n);
          process.stderr.write(`round ${round + 1} ${name}: alone ${r.alone.at(-1)!.rps.toFixed(0)} req/s (server CPU ${r.alone.at(-1)!.cpu.toFixed(2)}), with hostile clients ${r.attacked.at(-1)!.rps.toFixed(0)} req/s (server CPU ${r.attacked.at(-1)!.cpu.toFixed(2)}); hostile requests ${(sent / seconds).toFixed(0)}/s, answers ${JSON.stringify(hostileResult.answers)}, closed unanswered ${hostileResult.closedUnanswered}\n`);
        }
      }
    } finally {
      await nginx.stop();
      await bare.stop();
    }
    const rps = (rs: WrkResult[]) => median(rs.map((r) => r.rps));
    const p99 = (rs: WrkResult[]) => median(rs.map((r) => r.p99ms));
    console.log(`wrk -t1 -c${connections} -d${duration}s hits over ${pathCount} paths; server on CPU ${values['server-cpu']}; wrk and ${hostile} hostile wrk connections (kinds ${values.kinds ?? 'all'}, at most ${values.rate} requests/s in all) on CPU ${values['hostile-cpu'] ?? values['client-cpu']}; ${rounds} rounds, medians`);
    console.log('| server | honest req/s alone | p99 ms | with hostile clients | p99 ms | hostile req/s | ratio |');
    console.log('| --- | ---: | ---: | ---: | ---: | ---: | ---: |');
    for (const [name, r] of results) console.log(`| ${name} | ${rps(r.alone).toFixed(0)} | ${p99(r.alone).toFixed(2)} | ${rps(r.attacked).toFixed(0)} | ${p99(r.attacked).toFixed(2)} | ${median(r.hostileRate).toFixed(0)} | ${(rps(r.attacked) / rps(r.alone)).toFixed(2)} |`);
    const ours = results.get('ours')!;
    console.log(`ratio ${(rps(ours.attacked) / rps(ours.alone)).toFixed(2)} (goal >= 0.7)`);
    console.log(`hostile requests to ours answered, by status (all rounds): ${JSON.stringify(Object.fromEntries(answered))}`);
  } finally {
    await server.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

await main();
