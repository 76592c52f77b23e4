import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
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

describe('nix-quorum client against a real server (no Nix)', () => {
  const dirs = tempDirs();
  const [alice, bob, carol, mallory] = ['alice-1', 'bob-1', 'carol-1', 'mallory-1'].map(generateSecretKey) as [SecretKey, SecretKey, SecretKey, SecretKey];
  let server: RunningServer;
  let proxy: HostileProxy;
  let client: RunningClient;
  let nar: { bytes: Buffer; narHash: string; narSize: number };

  const attest = (keys: SecretKey[], outPath: string, narHash = nar.narHash) => server.service.ingestor.submit(keys.map((k) => parseAttestation(signedAttestation(k, { outPath, narHash, narSize: nar.narSize }))));
  const narinfo = (path: string, at = client.url) => fetch(`${at}/${hashPartOf(path as StorePath)}.narinfo`);
  /** A client of its own (state, cache) whose only ledger is `ledger`. */
  const clientOf = (ledger: string, state = dirs.make('client-state')) =>
    startClient(
      loadClientConfig({
        flags: { ledgers: [ledger], logKey: server.service.noteVerifierText, builders: [alice, bob, carol].map((k) => formatPublicKey(k.publicKey)), threshold: 2, listen: '127.0.0.1:0', state, logLevel: 'error' },
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

  it('answers 404 before two of the pinned builders agree, then a narinfo of the attested content signed by its own key; the NAR comes through it', async () => {
    const path = randomStorePath('agreed');
    await attest([alice], path);
    expect((await narinfo(path)).status).toBe(404);
    await attest([bob], path);
    const res = await narinfo(path);
    expect(res.status).toBe(200);
    const info = parseNarInfo(await res.text());
    expect(info).toMatchObject({ storePath: path, narHash: nar.narHash, narSize: nar.narSize, compression: 'none', url: `nar/${nar.narHash.slice(7)}.nar` });
    expect(info.sigs).toHaveLength(1);
    expect(verifyNarInfoSig(info, parsePublicKey(client.publicKey), info.sigs[0]!)).toBe(true);
    const body = await fetch(new URL(info.url, `${client.url}/`));
    expect(body.status).toBe(200);
    expect(Buffer.from(await body.arrayBuffer()).equals(nar.bytes)).toBe(true);
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
