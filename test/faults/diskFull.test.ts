import { execFileSync, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync, readdirSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { postAttestations } from '../../bench/common.js';
import { addBuilder } from '../../src/app/builders.js';
import { uploadAuthHeader } from '../../src/http/builderAuth.js';
import { createLogger } from '../../src/log.js';
import { generateSecretKey } from '../../src/nix/keys.js';
import { hashPartOf, type StorePath } from '../../src/nix/storePath.js';
import { openService } from '../../src/service.js';
import { killUnderLoad, storedAttestations } from '../helpers/crash.js';
import { randomNarHash, randomStorePath, signedAttestation, testConfig } from '../helpers/ledger.js';
import { treeNar, type Nar } from '../helpers/nars.js';
import { tempDir, tempDirs } from '../helpers/nix.js';
import { freePort, spawnServer, stopChild } from '../helpers/server.js';

/** A tmpfs needs root to mount; CI runs as root. */
const describeRoot: typeof describe = process.getuid?.() === 0 ? describe : (describe.skip as typeof describe);

/** Fills the filesystem at `dir` to its last block with filler files; free() removes them all. */
function diskFiller(dir: string): { fill: () => void; free: () => void } {
  const files: string[] = [];
  return {
    fill() {
      const file = join(dir, `filler-${files.length}`);
      files.push(file);
      const fd = openSync(file, 'w');
      try {
        for (const size of [1024 * 1024, 4096, 1]) {
          const chunk = Buffer.alloc(size, 0xa5);
          for (;;) {
            try {
              writeSync(fd, chunk);
            } catch (error) {
              if ((error as NodeJS.ErrnoException).code === 'ENOSPC') break;
              throw error;
            }
          }
        }
      } finally {
        closeSync(fd);
      }
    },
    free() {
      for (const file of files.splice(0)) rmSync(file, { force: true });
    },
  };
}

describeRoot('a full disk', () => {
  let mount: string;
  let dataDir: string;
  const builder = generateSecretKey('full-builder-1');
  const acknowledged = new Map<string, number>();
  const refused: string[] = [];
  let server: { url: string; child: ChildProcess; stderr: () => string };
  let served: { outPath: string; nar: Nar };
  let disk: { fill: () => void; free: () => void };
  const narDirs = tempDirs();

  const putNar = (nar: Nar) =>
    fetch(`${server.url}/api/v1/nars/${nar.narHash}`, { method: 'PUT', body: new Uint8Array(nar.bytes), headers: { authorization: uploadAuthHeader(builder, nar.narHash, nar.narSize) } });

  /** Submits `n` fresh attestations in one request; remembers what was acknowledged and what refused. */
  async function submit(n: number): Promise<Response> {
    const batch = Array.from({ length: n }, () => signedAttestation(builder, { outPath: randomStorePath('full'), narHash: randomNarHash() }));
    const res = await postAttestations(server.url, builder, n === 1 ? batch[0] : batch);
    if (res.ok) {
      const body = (await res.clone().json()) as { leafIndex: number } | { results: Array<{ leafIndex: number }> };
      const results = 'results' in body ? body.results : [body];
      results.forEach((r, i) => acknowledged.set(batch[i]!.outPath, r.leafIndex));
    } else refused.push(...batch.map((a) => a.outPath));
    return res;
  }

  beforeAll(async () => {
    mount = tempDir('disk-full');
    dataDir = join(mount, 'data');
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=512m', 'tmpfs', mount]);
    // One builder is a quorum here, so one attestation and its NAR make a served path.
    const service = openService(testConfig(dataDir, { quorum: { defaultThreshold: 1 } }), createLogger('error'));
    addBuilder(service, builder.publicKey);
    service.close();
    server = await spawnServer(dataDir, await freePort());
    const outPath = randomStorePath('served');
    const nar = await treeNar(narDirs.make('disk-full-nar'), 4096);
    expect((await putNar(nar)).status).toBe(201);
    const attestation = signedAttestation(builder, { outPath, narHash: nar.narHash, narSize: nar.narSize });
    expect((await postAttestations(server.url, builder, attestation)).status).toBe(201);
    served = { outPath, nar };
  });

  afterAll(async () => {
    if (server) await stopChild(server.child, 'SIGKILL');
    disk?.free();
    execFileSync('umount', [mount]);
    rmSync(mount, { recursive: true, force: true });
    narDirs.removeAll();
  });

  it('refuses attestations and NAR uploads with 503 storage-full and Retry-After, writes nothing half, logs a JSON line and keeps serving reads', async () => {
    disk = diskFiller(mount);
    disk.fill();
    let full: Response | undefined;
    // The WAL may have room left from earlier commits: larger batches until one finds none.
    for (let i = 0; i < 40 && !full; i++) {
      const res = await submit(500);
      if (!res.ok) full = res;
    }
    expect(full?.status).toBe(503);
    expect(full!.headers.get('retry-after')).toMatch(/^[0-9]+$/);
    expect(await full!.json()).toMatchObject({ code: 'storage-full', error: expect.stringMatching(/no space left/) });

    const big = await treeNar(narDirs.make('disk-full-nar'), 4 * 1024 * 1024);
    // The WAL checkpointer may have cut the WAL back meanwhile, freeing what it held.
    disk.fill();
    const upload = await putNar(big);
    expect(upload.status, await upload.clone().text()).toBe(503);
    expect(upload.headers.get('retry-after')).toMatch(/^[0-9]+$/);
    expect(await upload.json()).toMatchObject({ code: 'storage-full' });
    // No temp file, no blob, no catalogue row.
    expect(readdirSync(join(dataDir, 'nars', '.tmp'))).toEqual([]);
    expect((await fetch(`${server.url}/api/v1/nars/${big.narHash}`, { method: 'HEAD' })).status).toBe(404);

    const hashPart = hashPartOf(served.outPath as StorePath);
    expect((await fetch(`${server.url}/${hashPart}.narinfo`)).status).toBe(200);
    expect((await fetch(`${server.url}/api/v1/paths/${hashPart}`)).status).toBe(200);
    expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
    const logged = server
      .stderr()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(logged).toContainEqual(expect.objectContaining({ level: 'error', msg: 'request failed', code: 'storage-full' }));
    expect(server.child.exitCode).toBeNull();

    disk.free();
    expect((await submit(1)).status).toBe(201);
    expect((await putNar(big)).status).toBe(201);
  });

  it('then loses no acknowledged attestation across ten SIGKILLs under write load, and holds none it refused', async () => {
    await stopChild(server.child, 'SIGKILL');
    const before = acknowledged.size;
    await killUnderLoad(dataDir, builder, 10, acknowledged);
    expect(acknowledged.size - before).toBeGreaterThan(100);
    const stored = storedAttestations(dataDir);
    for (const [outPath, leafIndex] of acknowledged) expect(stored.get(outPath)).toBe(leafIndex);
    expect(refused.length).toBeGreaterThan(0);
    expect(refused.filter((outPath) => stored.has(outPath))).toEqual([]);
  });

  it('survives logging to a full disk: stdout and stderr on /dev/full', async () => {
    const devFull = openSync('/dev/full', 'w');
    try {
      server = await spawnServer(dataDir, await freePort(), [], { output: devFull, env: { NIX_QUORUM_LOG_LEVEL: 'debug' } });
    } finally {
      closeSync(devFull);
    }
    // Each of these logs (debug: every checkpoint signed); every log write fails with ENOSPC.
    for (let i = 0; i < 5; i++) expect((await submit(10)).status).toBe(200);
    expect((await fetch(`${server.url}/api/v1/nars/${randomNarHash()}`)).status).toBe(404);
    await new Promise((r) => setTimeout(r, 1500));
    expect(server.child.exitCode).toBeNull();
    expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
    expect(existsSync(join(dataDir, 'server.json'))).toBe(true);
  });
}, 300_000);
