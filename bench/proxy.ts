/**
 * Benchmark: narinfo answers a second through the README's reverse proxy (examples/nginx-nix-quorum.conf,
 * plain HTTP here), as a ratio to the same server asked directly in the same run. The peer: the
 * same proxy without its upstream `keepalive`, which opens a new connection to the server for
 * every request (what the example did before).
 *
 *   npx tsc -p . && node dist/bench/proxy.js [--duration 5] [--connections 32] [--rounds 3]
 *
 * The server runs on --server-cpu with an empty ledger (every narinfo a miss: the cheapest answer,
 * so connection costs show most); nginx and wrk share --client-cpu, as a proxy on a 2-core machine
 * must share with somebody.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { exampleProxySite, median, NARINFO_WRK_SCRIPT, startNginx, startQuorumServer, wrkNarinfos, type BenchServer } from './common.js';

const { values } = parseArgs({
  options: {
    duration: { type: 'string', default: '5' },
    connections: { type: 'string', default: '32' },
    rounds: { type: 'string', default: '3' },
    'server-cpu': { type: 'string', default: '1' },
    'client-cpu': { type: 'string', default: '0' },
  },
});

const work = mkdtempSync(join(tmpdir(), 'nq-bench-proxy-'));
const server = await startQuorumServer({ dataDir: join(work, 'data'), cpus: values['server-cpu'] });
try {
  const upstream = server.port;
  const keepAlive = await startNginx({ site: (port) => exampleProxySite({ port, upstream }), cpus: values['client-cpu'] });
  const perRequest = await startNginx({ site: (port) => exampleProxySite({ port, upstream }).replace('    keepalive 32;\n', ''), cpus: values['client-cpu'] });
  try {
    const scriptFile = join(work, 'narinfo.lua');
    writeFileSync(scriptFile, NARINFO_WRK_SCRIPT);
    const measure = (target: BenchServer) =>
      wrkNarinfos({ server: target, kind: 'misses', seconds: Number(values.duration), scriptFile, listFile: '', connections: Number(values.connections), clientCpu: values['client-cpu'] });
    const targets = [['direct', server], ['proxy (example)', keepAlive], ['proxy, a connection per request', perRequest]] as const;
    const rps = new Map<string, number[]>(targets.map(([name]) => [name, []]));
    for (let round = 0; round < Number(values.rounds); round++) {
      for (const [name, target] of targets) {
        const r = await measure(target);
        rps.get(name)!.push(r.rps);
        process.stderr.write(`round ${round + 1} ${name}: ${r.rps.toFixed(0)} req/s, p99 ${r.p99ms.toFixed(1)} ms\n`);
      }
    }
    const direct = median(rps.get('direct')!);
    console.log(`wrk -t1 -c${values.connections} -d${values.duration}s narinfo misses; server on CPU ${values['server-cpu']}, nginx and wrk on CPU ${values['client-cpu']}; ${values.rounds} rounds, medians`);
    console.log('| asked | req/s | ratio to direct |');
    console.log('| --- | ---: | ---: |');
    for (const [name] of targets) console.log(`| ${name} | ${median(rps.get(name)!).toFixed(0)} | ${(median(rps.get(name)!) / direct).toFixed(2)} |`);
    console.log(`keep-alive to the server: ${(median(rps.get('proxy (example)')!) / median(rps.get('proxy, a connection per request')!)).toFixed(2)}x the answers of a connection per request`);
  } finally {
    await keepAlive.stop();
    await perRequest.stop();
  }
} finally {
  await server.stop();
  rmSync(work, { recursive: true, force: true });
}
