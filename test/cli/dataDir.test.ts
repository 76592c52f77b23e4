import { chmodSync, existsSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addBuilder } from '../../src/app/builders.js';
import { dataPaths } from '../../src/dataDir.js';
import { uploadAuthHeader } from '../../src/http/builderAuth.js';
import { narHashFromDigest, sha256 } from '../../src/nix/hash.js';
import { formatPublicKey, generateSecretKey, type SecretKey } from '../../src/nix/keys.js';
import { dumpNar } from '../../src/nix/nar/index.js';
import { parseNarInfo } from '../../src/nix/narinfo.js';
import { hashPartOf, type StorePath } from '../../src/nix/storePath.js';
import { startServer, type RunningServer } from '../../src/serve.js';
import { randomStorePath, signedAttestation, testConfig } from '../helpers/ledger.js';
import { tempDir } from '../helpers/nix.js';
import { fetchLeaves, replayLeaves, servedQuorum } from '../helpers/replay.js';
import { freePort, runCli, spawnServer, stopChild } from '../helpers/server.js';
import { postAttestations } from '../../bench/common.js';

describe('admin commands given --data while a server holds the directory', () => {
  let dir: string;
  let server: RunningServer;
  const [alice, bob] = [generateSecretKey('alice-1'), generateSecretKey('bob-1')];
  const outPath = randomStorePath('held');
  let nar: { bytes: Buffer; narHash: string; narSize: number };

  const attest = (key: SecretKey, path = outPath) =>
    postAttestations(server.url, key, signedAttestation(key, { outPath: path, narHash: nar.narHash, narSize: nar.narSize }));
  const narinfo = (policy = '') => fetch(`${server.url}${policy}/${hashPartOf(outPath as StorePath)}.narinfo`);
  const admin = async (...args: string[]) => {
    const r = await runCli([...args, '--data', dir]);
    expect(r.code, r.stderr).toBe(0);
    // It went through the server, so the change is the server's own: effective at once, nothing to wait for.
    expect(r.stderr).toMatch(/is served by http:\/\/127\.0\.0\.1:\d+: changing it through that server/);
    return r;
  };

  beforeAll(async () => {
    dir = tempDir('held');
    server = await startServer(testConfig(dir));
    const src = join(dir, 'src');
    writeFileSync(src, 'the bytes of a store path\n');
    const chunks: Buffer[] = [];
    for await (const c of dumpNar(src)) chunks.push(c);
    const bytes = Buffer.concat(chunks);
    nar = { bytes, narHash: narHashFromDigest(sha256(bytes)), narSize: bytes.length };
  });
  afterAll(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('builder add, policy set and builder revoke take effect in the running server at once; a restart serves what the log implies', async () => {
    await admin('builder', 'add', 'alice-1', formatPublicKey(alice.publicKey));
    await admin('builder', 'add', 'bob-1', formatPublicKey(bob.publicKey));
    expect((await attest(alice)).status).toBe(201);
    expect((await attest(bob)).status).toBe(201);
    const upload = await fetch(`${server.url}/api/v1/nars/${nar.narHash}`, { method: 'PUT', body: new Uint8Array(nar.bytes), headers: { authorization: uploadAuthHeader(alice, nar.narHash as never, nar.narSize) } });
    expect(upload.status).toBe(201);
    const served = await narinfo();
    expect(served.status).toBe(200);
    const narUrl = new URL(parseNarInfo(await served.text()).url, `${server.url}/`).href;

    expect((await narinfo('/policy/solo')).status).toBe(404);
    await admin('policy', 'set', 'solo', '--threshold', '1', '--builders', 'bob-1');
    expect((await narinfo('/policy/solo')).status).toBe(200);

    await admin('builder', 'revoke', 'bob-1');
    expect((await narinfo()).status).toBe(404);
    expect((await narinfo('/policy/solo')).status).toBe(404);
    expect((await fetch(narUrl)).status).toBe(404);
    expect((await attest(bob, randomStorePath())).status).toBe(403);

    await server.close();
    server = await startServer(testConfig(dir));
    expect((await narinfo()).status).toBe(404);
    const log = replayLeaves(await fetchLeaves(server.url));
    expect(log.problems).toEqual([]);
    expect([...log.builders].map(([name, b]) => [name, b.revoked])).toEqual([['alice-1', false], ['bob-1', true]]);
    for (const policy of ['default', 'solo']) expect(await servedQuorum(server.url, policy)).toEqual(log.quorum.get(policy));
  });
});

describe('the data directory', () => {
  const dirs: string[] = [];
  afterAll(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });
  const fresh = () => {
    const d = tempDir('datadir');
    dirs.push(d);
    return d;
  };

  it('belongs to one server: a second serve on it exits with a clear message', async () => {
    const dir = fresh();
    const { child } = await spawnServer(dir, await freePort());
    try {
      const second = await runCli(['serve', '--data', dir, '--listen', `127.0.0.1:${await freePort()}`]);
      expect(second.code).toBe(1);
      expect(second.stderr).toMatch(/^nix-quorum: the data directory .* is in use by another nix-quorum process \(a running server, or an admin command\)\n$/);
    } finally {
      await stopChild(child);
    }
  });

  it('without a ledger is refused by every command but serve, and nothing is created', async () => {
    const base = fresh();
    const missing = join(base, 'typo');
    const key = formatPublicKey(generateSecretKey('x-1').publicKey);
    for (const args of [
      ['builder', 'add', 'x-1', key],
      ['builder', 'list'],
      ['builder', 'revoke', 'x-1'],
      ['policy', 'set', 'p', '--threshold', '1'],
      ['policy', 'delete', 'p'],
      ['policy', 'list'],
      ['gc', '--dry-run'],
    ]) {
      const r = await runCli([...args, '--data', missing]);
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.stderr, args.join(' ')).toMatch(/^nix-quorum: no ledger in .*typo: give the server's data directory with --data \(nix-quorum serve --data DIR creates one\)\n$/);
      expect(existsSync(missing), args.join(' ')).toBe(false);
    }
    // An existing directory without a ledger (the default ./data of a new checkout, say) is no ledger either.
    mkdirSync(missing);
    expect((await runCli(['builder', 'list', '--data', missing])).code).toBe(1);
    expect(readdirSync(missing)).toEqual([]);
  });

  it('refuses to start with an empty or short admin token, saying how to make one, and creates nothing', async () => {
    for (const token of ['', '\n', 'short-token']) {
      const dir = fresh();
      writeFileSync(join(dir, 'admin-token'), token);
      const r = await runCli(['serve', '--data', dir, '--listen', `127.0.0.1:${await freePort()}`]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/admin-token holds (no admin token|an admin token of only \d+ characters): it must be at least 32; make one with `openssl rand -hex 32 > .*admin-token`/);
      expect(readdirSync(dir)).toEqual(['admin-token']);
    }
  });

  it('creates the admin token and the secret keys 0600, and reports a looser mode at start', async () => {
    const dir = fresh();
    let server = await startServer(testConfig(dir));
    await server.close();
    const paths = dataPaths(dir);
    for (const f of [paths.adminToken, paths.cacheSecretKey, paths.noteSignerKey]) expect((statSync(f).mode & 0o777).toString(8), f).toBe('600');
    chmodSync(paths.adminToken, 0o644);
    const lines: string[] = [];
    const { createLogger } = await import('../../src/log.js');
    server = await startServer(testConfig(dir), createLogger('warn', (l) => lines.push(l)));
    await server.close();
    expect(lines.map((l) => JSON.parse(l) as Record<string, unknown>)).toContainEqual(expect.objectContaining({ msg: 'a secret file is readable by other users: chmod 600 it', file: paths.adminToken, mode: '644' }));
  });

  it('keeps its origin and default threshold once created, and says so when the config differs', async () => {
    const dir = fresh();
    let server = await startServer(testConfig(dir, { ledger: { origin: 'first.example/log' }, quorum: { defaultThreshold: 3 } }));
    addBuilder(server.service, generateSecretKey('a-1').publicKey);
    await server.close();
    const lines: string[] = [];
    const { createLogger } = await import('../../src/log.js');
    server = await startServer(testConfig(dir, { ledger: { origin: 'second.example/log' }, quorum: { defaultThreshold: 2 } }), createLogger('warn', (l) => lines.push(l)));
    try {
      expect(server.service.origin).toBe('first.example/log');
      expect(server.service.policies.require('default').threshold).toBe(3);
      const said = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
      expect(said).toContainEqual(expect.objectContaining({ msg: expect.stringMatching(/^ledger.origin applies only when a ledger is created/), configured: 'second.example/log', origin: 'first.example/log' }));
      expect(said).toContainEqual(expect.objectContaining({ msg: expect.stringMatching(/^quorum.defaultThreshold applies only when a ledger is created/), configured: 2, defaultPolicyThreshold: 3 }));
    } finally {
      await server.close();
    }
  });
});
