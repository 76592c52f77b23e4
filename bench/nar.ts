/**
 * Benchmark: a ~1 GiB NAR through our server, downloads against nginx serving the very same stored
 * file and uploads against nginx accepting the same bytes by WebDAV PUT, in the same run; plus the
 * server's peak memory above idle during each.
 *
 *   npx tsc -p . && node dist/bench/nar.js [--size-mb 1024] [--uploads 3] [--downloads 5] [--server-cpu 1] [--client-cpu 0]
 *
 * The NAR: `dumpNar` of one file of --size-mb MiB from /dev/urandom (incompressible), written to
 * disk once with its narHash. Servers (ours with `{"compression":"none"}`, so the stored file is
 * the NAR itself; nginx, one process) are pinned to --server-cpu, curl to --client-cpu.
 *
 * Upload: `curl -T` of the NAR file to PUT /api/v1/nars/<narHash> with a registered builder's
 * upload signature; the server parses and hashes the NAR as it streams, takes the stored file's
 * CRC-32, writes and fsyncs it. Each sample uses a fresh data directory (uploads dedupe by narHash).
 * Peers, on the server's core: nginx's WebDAV PUT of the same file (writes it to disk: no parsing,
 * no hashing, no fsync); `dd bs=1M conv=fsync` of the file (a durable copy, the disk's floor); and
 * `openssl dgst -sha256` of the file (one SHA-256 pass, the CPU floor of any verified upload).
 * Download: after two builders attest a path with that NAR, `curl -o /dev/null` of the narinfo's
 * URL from our server (which checks the file's CRC-32 as it sends it, to catch a corrupt store) against
 * nginx serving the same blob file (sendfile); the file is in the page cache for both.
 * Memory: VmHWM of our server process (reset through /proc/<pid>/clear_refs before each transfer)
 * minus its VmRSS when idle after start and one request (goal: under 100 MB above idle).
 * Goals: download MB/s >= 0.8x nginx; upload MB/s reported against both peers.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, createWriteStream, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Readable, Transform } from 'node:stream';
import { parseArgs } from 'node:util';
import { attestationJson, signOutput } from '../src/builder/attest.js';
import { loadConfig } from '../src/config.js';
import { createLogger } from '../src/log.js';
import { uploadAuthHeader } from '../src/http/builderAuth.js';
import { narHashFromDigest } from '../src/nix/hash.js';
import { generateSecretKey } from '../src/nix/keys.js';
import { dumpNar } from '../src/nix/nar/index.js';
import { parseNarInfo } from '../src/nix/narinfo.js';
import type { StorePath } from '../src/nix/storePath.js';
import { openService } from '../src/service.js';
import { exec, median, randomStorePath, startNginx, startQuorumServer, postAttestations, type BenchServer } from './common.js';
import { addBuilder } from '../src/app/builders.js';

const { values } = parseArgs({
  options: {
    'size-mb': { type: 'string', default: '1024' },
    uploads: { type: 'string', default: '3' },
    downloads: { type: 'string', default: '5' },
    'server-cpu': { type: 'string', default: '1' },
    'client-cpu': { type: 'string', default: '0' },
  },
});
const sizeBytes = Number(values['size-mb']) * 1024 * 1024;
const uploads = Number(values.uploads);
const downloads = Number(values.downloads);
const serverCpu = values['server-cpu'];
const clientCpu = values['client-cpu'];
const MB = 1e6;

function procStatusKiB(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no ${field} in /proc/${pid}/status`);
  return Number(m[1]);
}

interface Transfer {
  seconds: number;
  mbps: number;
  /** Server memory, MiB: the peak during the transfer, and that peak above the server's idle RSS. */
  peakMiB: number;
  aboveIdleMiB: number;
}

/** Runs curl pinned to the client core; resolves with its `-w` output. */
function curl(args: string[]): Promise<string> {
  return exec('taskset', ['-c', clientCpu, 'curl', '-sS', '--fail-with-body', '-H', 'Expect:', ...args]);
}

/** Our server's resident memory after start and one request: what "above idle" is measured from. */
const idleKiB = new Map<BenchServer, number>();

/** Times one curl transfer of `bytes` against `server`, with the server's peak memory during it. */
async function transfer(server: BenchServer, bytes: number, args: string[], check: (out: string) => void): Promise<Transfer> {
  writeFileSync(`/proc/${server.pid}/clear_refs`, '5'); // resets VmHWM to the current RSS
  const started = process.hrtime.bigint();
  const out = await curl(args);
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  check(out);
  const peak = procStatusKiB(server.pid, 'VmHWM');
  return { seconds, mbps: bytes / MB / seconds, peakMiB: peak / 1024, aboveIdleMiB: (peak - (idleKiB.get(server) ?? peak)) / 1024 };
}

const work = mkdtempSync(join(tmpdir(), 'nq-bench-nar-'));
const servers: BenchServer[] = [];
try {
  // The NAR, as a builder would produce it from its store path.
  const payload = join(work, 'payload');
  const payloadFd = openSync(payload, 'w');
  const made = spawnSync('head', ['-c', String(sizeBytes), '/dev/urandom'], { stdio: ['ignore', payloadFd, 'inherit'] });
  closeSync(payloadFd);
  if (made.status !== 0) throw new Error('head -c … /dev/urandom failed');
  const narFile = join(work, 'payload.nar');
  const hash = createHash('sha256');
  let narSize = 0;
  await pipeline(
    Readable.from(dumpNar(payload)),
    new Transform({
      transform(chunk: Buffer, _enc, done) {
        hash.update(chunk);
        narSize += chunk.length;
        done(null, chunk);
      },
    }),
    createWriteStream(narFile),
  );
  rmSync(payload);
  const narHash = narHashFromDigest(hash.digest());
  console.log(`NAR                  ${narSize} bytes (${(narSize / 2 ** 20).toFixed(0)} MiB), ${narHash}`);

  const keys = [generateSecretKey('bench-builder-a'), generateSecretKey('bench-builder-b')];
  const newDataDir = (i: number) => {
    const dataDir = join(work, `data-${i}`);
    const service = openService(loadConfig({ env: {}, flags: { dataDir } }), createLogger('error'));
    for (const k of keys) addBuilder(service, k.publicKey);
    service.close();
    return dataDir;
  };
  const config = { compression: 'none' };

  // Peer for uploads: nginx writing PUT bodies to disk (WebDAV), on the same core.
  const davRoot = join(work, 'dav');
  mkdirSync(join(davRoot, 'put'), { recursive: true });
  mkdirSync(join(davRoot, '.tmp'));
  const davPeer = await startNginx({
    root: davRoot,
    cpus: serverCpu,
    serverConfig: `location /put/ { dav_methods PUT; client_max_body_size 0; client_body_temp_path ${join(davRoot, '.tmp')}; }`,
  });
  servers.push(davPeer);
  /** MB/s of a command over the NAR file on the server's core. */
  const peerRate = async (command: string, args: string[]) => {
    const started = process.hrtime.bigint();
    await exec('taskset', ['-c', serverCpu, command, ...args]);
    return narSize / MB / (Number(process.hrtime.bigint() - started) / 1e9);
  };
  const hashPeer = () => peerRate('openssl', ['dgst', '-sha256', narFile]);
  const writePeer = async () => {
    const rate = await peerRate('dd', [`if=${narFile}`, `of=${join(work, 'dd.out')}`, 'bs=1M', 'conv=fsync']);
    rmSync(join(work, 'dd.out'));
    return rate;
  };

  const ourUploads: Transfer[] = [];
  const davUploads: number[] = [];
  const writeRates: number[] = [];
  const hashRates: number[] = [];
  let dataDir = '';
  let ours: BenchServer | undefined;
  for (let r = 0; r < uploads; r++) {
    if (ours) {
      await ours.stop();
      servers.splice(servers.indexOf(ours), 1);
      rmSync(dataDir, { recursive: true, force: true });
    }
    dataDir = newDataDir(r);
    ours = await startQuorumServer({ dataDir, config, cpus: serverCpu });
    servers.push(ours);
    await fetch(`${ours.url}/nix-cache-info`); // the server's first request, untimed
    idleKiB.set(ours, procStatusKiB(ours.pid, 'VmRSS'));
    const auth = uploadAuthHeader(keys[0]!, narHash, narSize);
    const up = await transfer(ours, narSize, ['-T', narFile, '-H', `Authorization: ${auth}`, '-o', '/dev/null', '-w', '%{http_code}', `${ours.url}/api/v1/nars/${narHash}`], (code) => {
      if (code !== '201') throw new Error(`our upload answered ${code}`);
    });
    ourUploads.push(up);
    const davStarted = process.hrtime.bigint();
    await curl(['-T', narFile, '-o', '/dev/null', `${davPeer.url}/put/${r}.nar`]);
    davUploads.push(narSize / MB / (Number(process.hrtime.bigint() - davStarted) / 1e9));
    if (statSync(join(davRoot, 'put', `${r}.nar`)).size !== narSize) throw new Error('nginx stored a different size');
    rmSync(join(davRoot, 'put', `${r}.nar`));
    writeRates.push(await writePeer());
    hashRates.push(await hashPeer());
    process.stderr.write(
      `upload ${r + 1}: ours ${up.mbps.toFixed(0)} MB/s (peak ${up.peakMiB.toFixed(0)} MiB, +${up.aboveIdleMiB.toFixed(1)} over idle), nginx PUT ${davUploads[r]!.toFixed(0)} MB/s, dd conv=fsync ${writeRates[r]!.toFixed(0)} MB/s, openssl sha256 ${hashRates[r]!.toFixed(0)} MB/s\n`,
    );
  }
  await davPeer.stop();
  servers.splice(servers.indexOf(davPeer), 1);

  // Quorum for a path with this NAR, so the substituter serves it.
  const outPath = randomStorePath('big-payload-1.0') as StorePath;
  const output = { drvPath: `${randomStorePath('big-payload-1.0')}.drv` as StorePath, outputName: 'out', outPath, narHash, narSize, references: [] };
  const res = await postAttestations(ours!.url, keys[0]!, keys.map((k) => attestationJson(signOutput(output, k))));
  if (!res.ok) throw new Error(`attestations answered ${res.status}: ${await res.text()}`);
  const narinfoRes = await fetch(`${ours!.url}/${outPath.slice(11, 43)}.narinfo`);
  if (narinfoRes.status !== 200) throw new Error(`the path is not advertised (${narinfoRes.status}): ${await narinfoRes.text()}`);
  const info = parseNarInfo(await narinfoRes.text());
  if (info.compression !== 'none' || info.fileSize !== narSize) throw new Error(`expected an uncompressed stored NAR, got ${info.compression} of ${info.fileSize} bytes`);

  // The fs blob store keeps key a/b/name at <root>/a/b/@<first two chars of name>/name.
  const blobFile = join(dataDir, 'nars', dirname(info.url), `@${basename(info.url).slice(0, 2)}`, basename(info.url));
  if (!existsSync(blobFile) || statSync(blobFile).size !== narSize) throw new Error(`the stored NAR is not at ${blobFile}`);
  const nginx = await startNginx({ root: work, cpus: serverCpu, serverConfig: `location = /${info.url} { alias ${blobFile}; }` });
  servers.push(nginx);

  const contenders = [
    { name: 'ours', server: ours!, samples: [] as Transfer[] },
    { name: 'nginx', server: nginx, samples: [] as Transfer[] },
  ];
  const download = (server: BenchServer) =>
    transfer(server, narSize, ['-o', '/dev/null', '-w', '%{http_code} %{size_download}', `${server.url}/${info.url}`], (out) => {
      if (out !== `200 ${narSize}`) throw new Error(`download from ${server.url} gave ${out}, expected 200 ${narSize}`);
    });
  for (const c of contenders) await download(c.server); // warm-up, untimed
  for (let r = 0; r < downloads; r++) {
    for (const c of r % 2 === 0 ? contenders : [...contenders].reverse()) {
      const d = await download(c.server);
      c.samples.push(d);
      process.stderr.write(`download ${r + 1} ${c.name}: ${d.mbps.toFixed(0)} MB/s (peak ${d.peakMiB.toFixed(0)} MiB, +${d.aboveIdleMiB.toFixed(1)} over idle)\n`);
    }
  }

  const [ourDl, nginxDl] = contenders.map((c) => median(c.samples.map((s) => s.mbps)));
  const ourUp = median(ourUploads.map((s) => s.mbps));
  const davUp = median(davUploads);
  const writeUp = median(writeRates);
  const hashUp = median(hashRates);
  console.log(`servers on CPU ${serverCpu}, curl on CPU ${clientCpu}; medians of ${downloads} downloads and ${uploads} uploads; MB = 10^6 bytes`);
  console.log('');
  console.log('| transfer | ours MB/s | peer | peer MB/s | ratio | our server memory above idle (max) |');
  console.log('| --- | ---: | --- | ---: | ---: | ---: |');
  const maxAbove = (ts: Transfer[]) => `+${Math.max(...ts.map((t) => t.aboveIdleMiB)).toFixed(1)} MiB (peak ${Math.max(...ts.map((t) => t.peakMiB)).toFixed(0)} MiB)`;
  console.log(`| download (GET nar/…, compression none) | ${ourDl!.toFixed(0)} | nginx, same file (sendfile) | ${nginxDl!.toFixed(0)} | ${(ourDl! / nginxDl!).toFixed(2)} | ${maxAbove(contenders[0]!.samples)} |`);
  console.log(`| upload (PUT /api/v1/nars, verified, fsync'd) | ${ourUp.toFixed(0)} | nginx WebDAV PUT (no hash, no fsync) | ${davUp.toFixed(0)} | ${(ourUp / davUp).toFixed(2)} | ${maxAbove(ourUploads)} |`);
  console.log(`| upload | ${ourUp.toFixed(0)} | dd bs=1M conv=fsync (durable local copy, no network) | ${writeUp.toFixed(0)} | ${(ourUp / writeUp).toFixed(2)} | |`);
  console.log(`| upload | ${ourUp.toFixed(0)} | openssl dgst -sha256 (one hash pass) | ${hashUp.toFixed(0)} | ${(ourUp / hashUp).toFixed(2)} | |`);
} finally {
  for (const s of servers) await s.stop();
  rmSync(work, { recursive: true, force: true });
}
