import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { brotliCompressSync, brotliDecompressSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addBuilder, revokeBuilder } from '../../src/app/builders.js';
import { startClient, type RunningClient } from '../../src/client/client.js';
import { loadClientConfig } from '../../src/client/config.js';
import { checkReport } from '../../src/client/report.js';
import { uploadAuthHeader } from '../../src/http/builderAuth.js';
import { parseAttestation } from '../../src/ledger/attestation.js';
import { verifyNarInfoSig } from '../../src/nix/fingerprint.js';
import { narHashFromDigest, sha256 } from '../../src/nix/hash.js';
import { formatPublicKey, generateSecretKey, parsePublicKey, type SecretKey } from '../../src/nix/keys.js';
import { dumpNar } from '../../src/nix/nar/index.js';
import { parseNarInfo } from '../../src/nix/narinfo.js';
import { hashPartOf, type StorePath } from '../../src/nix/storePath.js';
import { startServer, type RunningServer } from '../../src/serve.js';
import { hostileProxy, type HostileProxy } from '../helpers/hostileProxy.js';
import { randomNarHash, randomStorePath, signedAttestation, testConfig } from '../helpers/ledger.js';
import { tempDirs } from '../helpers/nix.js';
import { waitFor } from '../helpers/witness.js';

describe('nix-quorum client against a real server (no Nix)', () => {
  const dirs = tempDirs();
  const [alice, bob, carol, mallory] = ['alice-1', 'bob-1', 'carol-1', 'mallory-1'].map(generateSecretKey) as [SecretKey, SecretKey, SecretKey, SecretKey];
  let server: RunningServer;
  let proxy: HostileProxy;
  let client: RunningClient;
  let nar: { bytes: Buffer; narHash: string; narSize: number };

  const attest = (keys: SecretKey[], outPath: string, narHash = nar.narHash) => server.service.ingestor.submit(keys.map((k) => parseAttestation(signedAttestation(k, { outPath, narHash, narSize: nar.narSize }))));
  const narinfo = (path: string, at = client.url) => fetch(`${at}/${hashPartOf(path as StorePath)}.narinfo`);
  /** A client of its own (state, cache) whose ledgers are `ledger`. */
  const clientOf = (ledger: string | string[], state = dirs.make('client-state')) =>
    startClient(
      loadClientConfig({
        flags: { ledgers: [ledger].flat(), logKey: server.service.noteVerifierText, builders: [alice, bob, carol].map((k) => formatPublicKey(k.publicKey)), threshold: 2, listen: '127.0.0.1:0', state, logLevel: 'error' },
      }),
    );

  beforeAll(async () => {
    server = await startServer(testConfig(dirs.make('server'), { ledger: { checkpointIntervalMs: 0 } }));
    for (const k of [alice, bob, carol, mallory]) addBuilder(server.service, k.publicKey);
    const file = join(dirs.make('nar'), 'file');
    writeFileSync(file, 'verified bytes\n');
    const chunks: Buffer[] = [];
    for await (const c of dumpNar(file)) chunks.push(c);
    const bytes = Buffer.concat(chunks);
    nar = { bytes, narHash: narHashFromDigest(sha256(bytes)), narSize: bytes.length };
    const put = await fetch(`${server.url}/api/v1/nars/${nar.narHash}`, { method: 'PUT', body: new Uint8Array(bytes), headers: { authorization: uploadAuthHeader(alice, nar.narHash as never, bytes.length) } });
    expect(put.status).toBe(201);
    proxy = await hostileProxy(server.url);
    client = await clientOf(proxy.url);
  });
  afterAll(async () => {
    await client?.close();
    await proxy?.close();
    await server?.close();
    dirs.removeAll();
  });

  it('answers 404 before two of the pinned builders agree, then a narinfo of the attested content signed by its own key; the NAR comes from the ledger', async () => {
    const path = randomStorePath('agreed');
    await attest([alice], path);
    expect((await narinfo(path)).status).toBe(404);
    await attest([bob], path);
    const res = await narinfo(path);
    expect(res.status).toBe(200);
    const info = parseNarInfo(await res.text());
    // The server stores brotli: the client announces the ledger's own compression and no FileHash of its own making.
    expect(info).toMatchObject({ storePath: path, narHash: nar.narHash, narSize: nar.narSize, compression: 'br', url: `nar/${nar.narHash.slice(7)}.nar.br` });
    expect(info.fileHash).toBeUndefined();
    expect(info.sigs).toHaveLength(1);
    expect(verifyNarInfoSig(info, parsePublicKey(client.publicKey), info.sigs[0]!)).toBe(true);
    const narUrl = new URL(info.url, `${client.url}/`);
    // First ask: Nix is sent to the ledger's file, which it decompresses and checks itself.
    const sent = await fetch(narUrl, { redirect: 'manual' });
    expect(sent.status).toBe(302);
    const location = sent.headers.get('location')!;
    expect(location.startsWith(`${proxy.url}/nar/`)).toBe(true);
    expect(brotliDecompressSync(Buffer.from(await (await fetch(location)).arrayBuffer())).equals(nar.bytes)).toBe(true);
    // Asked again soon after (Nix retrying a failed download): streamed through the client, checked, compressed as announced.
    const streamed = await fetch(narUrl, { redirect: 'manual' });
    expect(streamed.status).toBe(200);
    expect(brotliDecompressSync(Buffer.from(await streamed.arrayBuffer())).equals(nar.bytes)).toBe(true);
    // The old spelling of the route (narinfos Nix cached before) still streams the NAR uncompressed.
    const plain = await fetch(new URL(`nar/${nar.narHash.slice(7)}.nar`, `${client.url}/`), { redirect: 'manual' });
    expect(plain.status).toBe(200);
    expect(Buffer.from(await plain.arrayBuffer()).equals(nar.bytes)).toBe(true);
    expect((await fetch(new URL(`nar/${nar.narHash.slice(7)}.nar.xz`, `${client.url}/`))).status).toBe(404);
  });

  it('breaks off a streamed NAR whose bytes a ledger replaced; fails over to the next ledger for a NAR once one is down', async () => {
    const path = randomStorePath('replaced');
    await attest([alice, bob], path);
    const info = parseNarInfo(await (await narinfo(path)).text());
    const narUrl = new URL(info.url, `${client.url}/`);
    expect((await fetch(narUrl, { redirect: 'manual' })).status).toBe(302);
    proxy.rewrite = (p) => (p.startsWith('/nar/') || p.startsWith('/api/v1/nars/') ? { body: brotliCompressSync(Buffer.from(nar.bytes.toString('latin1').replace('verified', 'tampered'), 'latin1')) } : undefined);
    try {
      // Nix's retry is streamed: the client checks the hash and cuts the answer short.
      await expect(fetch(narUrl, { redirect: 'manual' }).then((r) => r.arrayBuffer())).rejects.toThrow();
      expect(await (await fetch(`${client.url}/metrics`)).text()).toMatch(/nixquorum_client_nar_requests_total\{result="corrupt"\} [1-9]/);
    } finally {
      proxy.rewrite = () => undefined;
    }

    const down = await hostileProxy(server.url);
    const failover = await clientOf([down.url, server.url]);
    try {
      const res = await narinfo(path, failover.url);
      expect(res.status).toBe(200);
      const url = new URL(parseNarInfo(await res.text()).url, `${failover.url}/`);
      await down.close();
      // The first ledger went down unnoticed: Nix is sent there, its download fails, and its retry is
      // streamed from the second ledger; from then on the first is known down and Nix is not sent there.
      expect((await fetch(url, { redirect: 'manual' })).headers.get('location')).toMatch(new RegExp(`^${down.url}/`));
      for (let ask = 0; ask < 2; ask++) {
        const streamed = await fetch(url, { redirect: 'manual' });
        expect(streamed.status).toBe(200);
        expect(brotliDecompressSync(Buffer.from(await streamed.arrayBuffer())).equals(nar.bytes)).toBe(true);
      }
    } finally {
      await failover.close();
    }
  });

  it('verifies the references of a path Nix asked for before Nix asks for them', async () => {
    const [dep, top] = [randomStorePath('dep'), randomStorePath('top')];
    await server.service.ingestor.submit([alice, bob].flatMap((k) => [dep, top].map((outPath) => parseAttestation(signedAttestation(k, { outPath, narHash: nar.narHash, narSize: nar.narSize, references: outPath === top ? [dep] : [] })))));
    expect((await narinfo(top)).status).toBe(200);
    await waitFor(() => client.resolver.cached(hashPartOf(dep)) !== undefined, 'the reference verified ahead');
    const cachedBefore = /nixquorum_client_narinfo_requests_total\{result="cached"\} (\d+)/;
    const count = async () => Number(cachedBefore.exec(await (await fetch(`${client.url}/metrics`)).text())?.[1] ?? 0);
    const before = await count();
    expect((await narinfo(dep)).status).toBe(200);
    expect(await count()).toBe(before + 1);
  });

  it('does not count a builder the server registered but the user did not pin; the server does', async () => {
    const path = randomStorePath('puppet');
    await attest([alice, mallory], path);
    expect((await narinfo(path, server.url)).status).toBe(200);
    expect((await narinfo(path)).status).toBe(404);
    const report = checkReport(await client.resolver.resolve(hashPartOf(path)));
    expect(report.verdict).toBe('refuse');
    expect(report.steps.find((s) => s.name === 'attestations')!.detail).toMatch(/by mallory-1, a name you did not pin/);
    expect(report.steps.map((s) => [s.step, s.ok])).toEqual([[1, true], [2, true], [3, true], [4, false], [5, false]]);
  });

  it('refuses a narinfo whose NarHash the proxy forged: it never reads the server\'s narinfo at all', async () => {
    const path = randomStorePath('forged');
    await attest([alice, bob], path);
    proxy.rewrite = (p, body) => (p.endsWith('.narinfo') ? { body: body.toString().replace(nar.narHash, randomNarHash()) } : undefined);
    try {
      const info = parseNarInfo(await (await narinfo(path)).text());
      expect(info.narHash).toBe(nar.narHash);
    } finally {
      proxy.rewrite = () => undefined;
    }
  });

  it('keeps a cached answer until a newer checkpoint is verified; then a revocation the log states drops it', async () => {
    const path = randomStorePath('revoked');
    await attest([alice, carol], path);
    expect((await narinfo(path)).status).toBe(200);
    revokeBuilder(server.service, carol.name);
    server.service.checkpoints.publish();
    expect((await narinfo(path)).status).toBe(200);
    await client.resolver.refreshHead();
    expect((await narinfo(path)).status).toBe(404);
    const report = checkReport(await client.resolver.resolve(hashPartOf(path)));
    expect(report.steps.find((s) => s.name === 'revocations')!.detail).toBe('the log revoked carol-1: not counted');
  });

  it('refuses a rolled-back checkpoint and keeps both as evidence; the rollback survives a restart of the client', async () => {
    const state = dirs.make('rollback-state');
    const old = (await (await fetch(`${server.url}/api/v1/log/checkpoint`)).text()).trimEnd();
    const path = randomStorePath('rolled');
    await attest([alice, bob], path);
    let first = await clientOf(proxy.url, state);
    expect((await narinfo(path, first.url)).status).toBe(200);
    await first.close();
    // The proxy now answers with the older checkpoint, genuinely signed: the server restored from a backup.
    proxy.rewrite = (p, body) => {
      if (!p.endsWith('/proofs')) return undefined;
      const json = JSON.parse(body.toString()) as { attestations: Array<{ proof: string }>; registry: Array<{ proof: string }> };
      for (const a of [...json.attestations, ...json.registry]) a.proof = a.proof.replace(/\n\n[\s\S]*$/, `\n\n${old}\n`);
      return { body: JSON.stringify(json) };
    };
    try {
      first = await clientOf(proxy.url, state);
      const res = await narinfo(path, first.url);
      expect(res.status).toBe(503);
      expect(await res.text()).toMatch(/fewer than the \d+ this client verified: its history was rolled back/);
      expect(first.state.evidence().map((e) => e.code)).toEqual(['rollback']);
    } finally {
      proxy.rewrite = () => undefined;
      await first.close();
    }
  });
});
