import { type ChildProcess } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { postAttestations } from '../../bench/common.js';
import { honestNarinfos, peakRssMiB, rawRequest } from '../../bench/hostile.js';
import { addBuilder } from '../../src/app/builders.js';
import { attestAuthHeader, uploadAuthHeader } from '../../src/http/builderAuth.js';
import { auditLog } from '../../src/ledger/audit.js';
import { createLogger } from '../../src/log.js';
import { narHashFromDigest, sha256 } from '../../src/nix/hash.js';
import { generateSecretKey } from '../../src/nix/keys.js';
import { dumpNar } from '../../src/nix/nar/index.js';
import { hashPartOf, type StorePath } from '../../src/nix/storePath.js';
import { openService } from '../../src/service.js';
import { randomNarHash, randomStorePath, signedAttestation, testConfig } from '../helpers/ledger.js';
import { tempDir } from '../helpers/nix.js';
import { freePort, spawnServer, stopChild } from '../helpers/server.js';

/**
 * Each attack of issue 13, against a server in its own process: refused or bounded, while an honest
 * Nix client's narinfo requests keep their latency (bound P99_BOUND_MS here; the measured figures are
 * printed, and docs/benchmarks.md has them), the server's memory stays bounded, nothing acknowledged
 * is lost and the log still verifies.
 */
const P99_BOUND_MS = 2000;
const RSS_BOUND_MIB = 700;
const MiB = 1024 * 1024;

describe('hostile input', () => {
  let dir: string;
  let url: string;
  let child: ChildProcess;
  const alice = generateSecretKey('alice-1');
  const bob = generateSecretKey('bob-1');
  const served: string[] = [];
  /** Every attestation an honest builder had acknowledged during the attacks: all must stay in the log. */
  const acknowledged = new Map<string, number>();
  const forged = () => `NixQuorum-Attest builder=alice-1,ts=${Math.floor(Date.now() / 1000)},sig=${Buffer.alloc(64, 7).toString('base64')}`;

  /** Runs `attack` with an honest narinfo client and an honest builder alongside; reports and bounds the client's p99. */
  async function during<T>(what: string, attack: () => Promise<T>): Promise<T> {
    let finished!: () => void;
    const stop = new Promise<void>((r) => (finished = r));
    const client = honestNarinfos(url, served, stop);
    const builder = (async () => {
      for (let i = 0; ; i++) {
        const a = signedAttestation(alice, { outPath: randomStorePath(`honest-${i}`), narHash: randomNarHash() });
        const res = await postAttestations(url, alice, a);
        if (res.status === 201) acknowledged.set(a.outPath, ((await res.json()) as { leafIndex: number }).leafIndex);
        if (await Promise.race([stop.then(() => true), new Promise((r) => setTimeout(() => r(false), 50))])) return;
      }
    })();
    try {
      return await attack();
    } finally {
      finished();
      const latency = await client;
      await builder;
      console.log(`${what}: honest narinfo p50 ${latency.p50.toFixed(1)} ms, p99 ${latency.p99.toFixed(1)} ms over ${latency.count} requests (bound ${P99_BOUND_MS} ms)`);
      expect(latency.failures).toBe(0);
      expect(latency.p99).toBeLessThan(P99_BOUND_MS);
    }
  }

  beforeAll(async () => {
    dir = tempDir('attacks');
    const service = openService(testConfig(dir), createLogger('error'));
    addBuilder(service, alice.publicKey);
    addBuilder(service, bob.publicKey);
    service.close();
    ({ url, child } = await spawnServer(dir, await freePort()));
    for (let i = 0; i < 20; i++) {
      const file = join(dir, `src-${i}`);
      writeFileSync(file, `path ${i}\n`);
      const chunks: Buffer[] = [];
      for await (const c of dumpNar(file)) chunks.push(c);
      const bytes = Buffer.concat(chunks);
      const narHash = narHashFromDigest(sha256(bytes));
      expect((await fetch(`${url}/api/v1/nars/${narHash}`, { method: 'PUT', body: new Uint8Array(bytes), headers: { authorization: uploadAuthHeader(alice, narHash, bytes.length) } })).status).toBe(201);
      const outPath = randomStorePath(`served-${i}`);
      expect((await postAttestations(url, alice, [alice, bob].map((k) => signedAttestation(k, { outPath, narHash, narSize: bytes.length })))).status).toBe(200);
      served.push(hashPartOf(outPath as StorePath));
    }
  }, 120_000);

  afterAll(async () => {
    await stopChild(child);
    rmSync(dir, { recursive: true, force: true });
  });

  it('refuses unauthenticated 64 MB bodies after the header, without reading them, and closes their connections', async () => {
    const answers = await during('8 unauthenticated 64 MB bodies', () =>
      Promise.all(Array.from({ length: 8 }, () => rawRequest(url, { method: 'POST', path: '/api/v1/attestations', headers: { 'content-type': 'application/json', 'content-length': String(64 * MiB) }, bodyBytes: 64 * MiB }))),
    );
    for (const a of answers) {
      expect(a.status).toBe(401);
      expect(a.sent).toBeLessThan(64 * MiB);
      expect(a.closedMs).toBeLessThan(10_000);
    }
  });

  it('refuses a forged signature before the body, then (from a builder) compressed bodies and a declared size over the limit', async () => {
    // A builder's genuine signature over the declared length: only then do the body's own checks run.
    const signed = (length: number) => attestAuthHeader(alice, Buffer.alloc(length));
    const answers = await during('forged, gzip and oversize bodies', () =>
      Promise.all([
        ...Array.from({ length: 8 }, () =>
          rawRequest(url, { method: 'POST', path: '/api/v1/attestations', headers: { authorization: forged(), 'content-length': String(7 * MiB) }, bodyBytes: 7 * MiB, fill: Buffer.alloc(64 * 1024, '[') }),
        ),
        ...Array.from({ length: 16 }, () =>
          rawRequest(url, { method: 'POST', path: '/api/v1/attestations', headers: { authorization: signed(300 * 1024), 'content-encoding': 'gzip', 'content-length': String(300 * 1024) }, bodyBytes: 300 * 1024 }),
        ),
        ...Array.from({ length: 4 }, () =>
          rawRequest(url, { method: 'POST', path: '/api/v1/attestations', headers: { authorization: signed(64 * MiB), 'content-length': String(64 * MiB) }, bodyBytes: 64 * MiB }),
        ),
        ...Array.from({ length: 4 }, () =>
          rawRequest(url, { method: 'PUT', path: `/api/v1/nars/sha256:${'0'.repeat(52)}`, headers: { authorization: forged().replace('NixQuorum-Attest', 'NixQuorum-Upload'), 'content-length': String(100 * MiB) }, bodyBytes: 100 * MiB }),
        ),
      ]),
    );
    expect(answers.map((a) => a.status)).toEqual([...Array(8).fill(403), ...Array(16).fill(415), ...Array(4).fill(413), ...Array(4).fill(403)]);
    for (const a of answers) expect(a.closedMs).toBeLessThan(10_000);
    // The server stops reading after the answer: at most what the socket buffers took got onto the wire.
    for (const a of answers.slice(20)) expect(a.sent).toBeLessThan(64 * MiB);
  });

  it('keeps the log auditable: references and leaves are bounded, entry pages are bounded in bytes', async () => {
    const longRef = (i: number) => `/nix/store/${hashPartOf(randomStorePath() as StorePath)}-${'r'.repeat(180)}${i}`;
    const tooMany = signedAttestation(bob, { outPath: randomStorePath('many-refs'), narHash: randomNarHash(), references: Array.from({ length: 10_000 }, (_, i) => longRef(i)) });
    const refused = await postAttestations(url, bob, tooMany);
    expect(refused.status).toBe(400);
    expect(await refused.json()).toMatchObject({ code: 'bad-attestation', field: 'references' });
    const biggest = () => signedAttestation(bob, { outPath: randomStorePath('big'), narHash: randomNarHash(), references: Array.from({ length: 4000 }, (_, i) => longRef(i)) });
    const heavy = await during('leaves of 0.8 MB', async () => {
      for (let r = 0; r < 4; r++) {
        const res = await postAttestations(url, bob, Array.from({ length: 6 }, biggest));
        expect(res.status, await res.clone().text()).toBe(200);
      }
      return (await (await fetch(`${url}/api/v1/log/checkpoint`)).text()).split('\n')[1];
    });
    const size = Number(heavy);
    const page = await fetch(`${url}/api/v1/log/entries?start=0&end=${size}`);
    const text = await page.text();
    expect(text.length).toBeLessThan(8 * MiB);
    expect((JSON.parse(text) as { entries: unknown[] }).entries.length).toBeLessThan(size);
    const report = await auditLog(url);
    expect(report.problems).toEqual([]);
  }, 120_000);

  it('bounds one key\'s statements about one path: the excess is refused, and the server stays responsive', async () => {
    const outPath = randomStorePath('one-path');
    const results = await during('11,000 statements about one path', async () => {
      const all: Array<{ status: string; code?: string }> = [];
      for (let r = 0; r < 11; r++) {
        const batch = Array.from({ length: 1000 }, () => signedAttestation(bob, { outPath, narHash: randomNarHash(), drvPath: `${randomStorePath('d')}.drv` }));
        const res = await postAttestations(url, bob, batch);
        all.push(...((await res.json()) as { results: Array<{ status: string; code?: string }> }).results);
      }
      return all;
    });
    expect(results.filter((r) => r.status !== 'rejected')).toHaveLength(8);
    expect(results.filter((r) => r.code === 'too-many-statements')).toHaveLength(11_000 - 8);
    const metrics = await (await fetch(`${url}/metrics`)).text();
    expect(metrics).toMatch(/^nixquorum_attestations_refused_total\{code="too-many-statements"\} 10992$/m);
    const path = (await (await fetch(`${url}/api/v1/paths/${hashPartOf(outPath as StorePath)}?limit=5`)).json()) as { next: number | null; paths: Array<{ attestations: unknown[] }> };
    expect(path.paths[0]!.attestations).toHaveLength(5);
    expect(path.next).not.toBeNull();
  }, 120_000);

  it('tolerates any bytes in a search', async () => {
    const search = await during('searches with NULs', () => fetch(`${url}/api/v1/search?q=${encodeURIComponent('a\u0000b')}`));
    expect(search.status).toBe(200);
    expect(await search.json()).toMatchObject({ query: { kind: 'invalid' }, results: [] });
    expect((await fetch(`${url}/search?q=%00%00%00`)).status).toBe(200);
  });

  it('afterwards: memory stayed bounded, nothing acknowledged was lost, and the log verifies', async () => {
    const rss = await peakRssMiB(child.pid!);
    console.log(`server peak RSS over all attacks: ${rss.toFixed(0)} MiB (bound ${RSS_BOUND_MIB})`);
    expect(rss).toBeLessThan(RSS_BOUND_MIB);
    expect(acknowledged.size).toBeGreaterThan(10);
    const report = await auditLog(url);
    expect(report.problems).toEqual([]);
    for (const [outPath, leafIndex] of acknowledged) {
      const { entries } = (await (await fetch(`${url}/api/v1/log/entries?start=${leafIndex}&end=${leafIndex + 1}`)).json()) as { entries: Array<{ leaf: string }> };
      expect(Buffer.from(entries[0]!.leaf, 'base64').toString('utf8')).toContain(`;${outPath};`);
    }
  }, 120_000);
});
