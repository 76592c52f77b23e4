import Database from 'better-sqlite3';
import { cpSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { brotliCompressSync } from 'node:zlib';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { postAttestations } from '../../bench/common.js';
import { addBuilder } from '../../src/app/builders.js';
import { startClient, type RunningClient } from '../../src/client/client.js';
import { loadClientConfig } from '../../src/client/config.js';
import type { CheckReport } from '../../src/client/report.js';
import { dataPaths } from '../../src/dataDir.js';
import { parseAttestation } from '../../src/ledger/attestation.js';
import { signNarInfo } from '../../src/nix/fingerprint.js';
import { uploadAuthHeader } from '../../src/http/builderAuth.js';
import { narHashFromDigest, parseNarHash, sha256, type NarHash } from '../../src/nix/hash.js';
import { formatPublicKey, formatSecretKey, generateSecretKey, parseSecretKey, type SecretKey } from '../../src/nix/keys.js';
import { dumpNar } from '../../src/nix/nar/index.js';
import { serializeNarInfo, NARINFO_CONTENT_TYPE, type NarInfo } from '../../src/nix/narinfo.js';
import { baseNameOf, hashPartOf, type StorePath } from '../../src/nix/storePath.js';
import { startServer, type RunningServer } from '../../src/serve.js';
import { chrootBuild, closureOutputs, substitute, writeClosure } from '../helpers/closure.js';
import { hostileProxy, type HostileProxy } from '../helpers/hostileProxy.js';
import { randomNarHash, randomStorePath, signedAttestation, testConfig } from '../helpers/ledger.js';
import { describeNix, nix, nixEnv, tempDirs } from '../helpers/nix.js';
import { freePort, runCli, spawnServer, stopChild } from '../helpers/server.js';
import { prepareLedger, spawnWitness, waitFor, type SpawnedWitness } from '../helpers/witness.js';

const ORIGIN = 'client-e2e.test/log';

interface PathInfo {
  path: string;
  narHash: string;
  narSize: number;
  references: string[];
}

/**
 * A Nix store whose only substituter is `nix-quorum client` substitutes a closure once 2 of the 3
 * builders the user pinned agree, proved by a log two witnesses cosigned, and never a path a hostile
 * server makes up; plain Nix pointed at the same server does take what that server makes up.
 */
describeNix('nix-quorum client between Nix and a hostile server (real Nix)', () => {
  const dirs = tempDirs();
  let dir: string;
  let dataDir: string;
  let port: number;
  let logKey: string;
  let server: RunningServer;
  let proxy: HostileProxy;
  let client: RunningClient;
  let serverCacheKey: string;
  let w1: SpawnedWitness;
  let w2: SpawnedWitness;
  /** The ledger as it was before the builders attested anything: for the rollback and the fork. */
  let before: string;
  let outputs: string[];
  let stores = 0;
  const builders = ['b1', 'b2', 'b3'].map((n) => generateSecretKey(`${n}.client-e2e-1`));
  const keyFiles: string[] = [];

  const store = () => join(dir, `store${stores++}`);
  const startPrimary = () =>
    startServer(testConfig(dataDir, { listen: `127.0.0.1:${port}`, ledger: { origin: ORIGIN, checkpointIntervalMs: 0, witnessRetryMaxMs: 300, witnesses: [w1, w2].map((w) => ({ url: w.url, vkey: w.vkey })) } }));
  const clientFlags = (ledgers: string[], state: string, witnessed = true) => ({
    ledgers,
    logKey,
    builders: builders.map((k) => formatPublicKey(k.publicKey)),
    threshold: 2,
    ...(witnessed ? { witnesses: [w1.vkey, w2.vkey], witnessThreshold: 2 } : {}),
    listen: '127.0.0.1:0',
    state,
    logLevel: 'error',
  });
  const newClient = (ledgers: string[], state = dirs.make('client-state')) => startClient(loadClientConfig({ flags: clientFlags(ledgers, state) }));
  /** `nix-quorum client --check PATH --json` as a user runs it. */
  const check = async (path: string, ledgers: string[], state: string, witnessed = true): Promise<{ code: number | null; report: CheckReport }> => {
    const f = clientFlags(ledgers, state, witnessed);
    const args = ['client', '--check', path, '--json', '--log-key', logKey, '--threshold', '2', '--state', state, ...ledgers.flatMap((l) => ['--ledger', l]), ...f.builders.flatMap((b) => ['--builder', b])];
    if (witnessed) args.push('--witness', w1.vkey, '--witness', w2.vkey);
    const r = await runCli(args);
    return { code: r.code, report: JSON.parse(r.stdout) as CheckReport };
  };
  /** Nix through a fresh client on the hostile proxy does not substitute `target`, and --check names the step that refused it. */
  const expectRefusedThroughProxy = async (target: string, code: string, step: string) => {
    try {
      const fresh = await newClient([proxy.url]);
      try {
        expect((await substitute(store(), fresh.url, fresh.publicKey, [target])).code).not.toBe(0);
      } finally {
        await fresh.close();
      }
      const checked = await check(target, [proxy.url], dirs.make('check-state'));
      expect(checked.code).toBe(1);
      expect(checked.report.skipped).toEqual([expect.objectContaining({ code, step })]);
    } finally {
      proxy.rewrite = () => undefined;
    }
  };
  const submit = async (builder: number, paths: string[]) => {
    const r = await runCli(['submit', '--upload', '--store', join(dir, `b${builder}`), '--server', server.url, '--key-file', keyFiles[builder]!, ...paths], nixEnv);
    expect(r.code, r.stderr).toBe(0);
  };
  /** Until both witnesses cosigned the newest checkpoint: the client asks for one with 2 cosignatures. */
  const witnessed = () =>
    waitFor(async () => {
      const note = await (await fetch(`${server.url}/api/v1/log/checkpoint?cosigned=2`)).text();
      return Number(note.split('\n')[1]) === server.service.log.size();
    }, 'both witnesses cosigning the newest checkpoint');
  const pathInfo = (storeDir: string, paths: string[]) => JSON.parse(nix('nix', ['--store', storeDir, 'path-info', '--json', ...paths])) as PathInfo[];
  const held = (storeDir: string) => {
    try {
      return readdirSync(join(storeDir, 'nix', 'store'));
    } catch {
      return [];
    }
  };
  /** A path only the first builder built and attested (with its NAR): never at quorum for the user. */
  const lonePath = async (salt: string): Promise<PathInfo> => {
    const closure = writeClosure(dir, { count: 2, salt });
    expect(chrootBuild(join(dir, 'b0'), closure.file).status).toBe(0);
    const d0 = closureOutputs(join(dir, 'b0'), closure.file).outputs.find((p) => p.endsWith('-nq-d0'))!;
    await submit(0, [d0]);
    const info = pathInfo(join(dir, 'b0'), [d0])[0]!;
    return { ...info, narHash: parseNarHash(info.narHash) };
  };
  /** The NAR of a directory holding one file of `text`: bytes no builder attested. */
  const attackerNar = async (text: string): Promise<Buffer> => {
    const evilDir = dirs.make('evil');
    writeFileSync(join(evilDir, 'data'), text);
    const chunks: Buffer[] = [];
    for await (const c of dumpNar(evilDir)) chunks.push(c);
    return Buffer.concat(chunks);
  };
  const servedBy = (url: string, path: string) => waitFor(async () => (await fetch(`${url}/${hashPartOf(path as StorePath)}.narinfo`)).status === 200, `${url} serving ${path}`);

  beforeAll(async () => {
    dir = dirs.make('e2e-client');
    dataDir = join(dir, 'ledger');
    port = await freePort();
    logKey = prepareLedger(dataDir, ORIGIN, builders.map((k) => k.publicKey));
    w1 = await spawnWitness(dirs.make('w1'), [{ origin: ORIGIN, vkey: logKey }], { name: 'witness.test/w1' });
    w2 = await spawnWitness(dirs.make('w2'), [{ origin: ORIGIN, vkey: logKey }], { name: 'witness.test/w2' });
    server = await startPrimary();
    serverCacheKey = readFileSync(dataPaths(dataDir).cachePublicKey, 'utf8').trim();
    for (const [i, key] of builders.entries()) {
      keyFiles.push(join(dir, `key${i}`));
      writeFileSync(keyFiles[i]!, formatSecretKey(key));
    }
    // 20 chained derivations and a two-output one: 22 outputs, built by each builder in its own store.
    const closure = writeClosure(dir, { count: 20, salt: 'client-e2e' });
    for (const b of [0, 1, 2]) expect(chrootBuild(join(dir, `b${b}`), closure.file).status).toBe(0);
    outputs = closureOutputs(join(dir, 'b0'), closure.file).outputs;
    expect(outputs.length).toBe(22);
    await witnessed();
    before = dirs.make('before');
    cpSync(dataDir, before, { recursive: true, filter: (src) => !/ledger\.sqlite|serve\.lock|server\.json/.test(src) });
    await server.service.db.backup(dataPaths(before).db);
    proxy = await hostileProxy(server.url);
    client = await newClient([proxy.url]);
  }, 600_000);

  afterAll(async () => {
    await client?.close();
    await proxy?.close();
    await server?.close();
    for (const w of [w1, w2]) if (w) await stopChild(w.child);
    dirs.removeAll();
  });

  it('substitutes nothing while one builder alone attested the closure', async () => {
    await submit(0, outputs);
    await witnessed();
    const clientStore = store();
    const r = await substitute(clientStore, client.url, client.publicKey, outputs);
    expect(r.code).not.toBe(0);
    expect(held(clientStore).filter((name) => outputs.some((p) => p.endsWith(name)))).toEqual([]);
  });

  it('substitutes the whole closure, with the builders\' contents, once a second pinned builder agrees', async () => {
    await submit(1, outputs);
    await witnessed();
    const clientStore = store();
    const r = await substitute(clientStore, client.url, client.publicKey, outputs);
    expect(r.code, r.stderr).toBe(0);
    expect(pathInfo(clientStore, outputs).map((p) => [p.path, p.narHash])).toEqual(pathInfo(join(dir, 'b2'), outputs).map((p) => [p.path, p.narHash]));
    nix('nix', ['--store', clientStore, 'store', 'verify', '--no-trust', ...outputs]);
  }, 300_000);

  it('fails over: with the first ledger stopped, Nix substitutes the rest of the closure through the client from a mirror', async () => {
    const mirror = await spawnServer(dirs.make('mirror'), await freePort(), ['--follow', server.url, '--log-key', logKey, '--witness', w1.vkey, '--witness', w2.vkey]);
    try {
      for (const p of outputs) await servedBy(mirror.url, p);
      const failover = await newClient([server.url, mirror.url]);
      try {
        const clientStore = store();
        const [first, rest] = [outputs.filter((p) => /-nq-d[0-9]$/.test(p)), outputs.filter((p) => !/-nq-d[0-9]$/.test(p))];
        expect((await substitute(clientStore, failover.url, failover.publicKey, first)).code).toBe(0);
        await server.close();
        const r = await substitute(clientStore, failover.url, failover.publicKey, rest);
        expect(r.code, r.stderr).toBe(0);
        nix('nix', ['--store', clientStore, 'store', 'verify', '--no-trust', ...outputs]);
        const metrics = await (await fetch(`${failover.url}/metrics`)).text();
        expect(metrics).toMatch(new RegExp(`nixquorum_client_ledger_failures_total\\{ledger="${server.url}/",code="unavailable"\\} [1-9]`));
      } finally {
        await failover.close();
        server = await startPrimary();
      }
    } finally {
      await stopChild(mirror.child);
    }
  }, 300_000);

  it('hostile server, a decision row edited into its database: plain Nix substitutes the path, Nix through the client does not', async () => {
    const lone = await lonePath('edited-decision');
    const db = new Database(dataPaths(dataDir).db);
    try {
      db.prepare("INSERT OR REPLACE INTO decisions (policy, out_path, status, nar_hash, nar_size, refs, agreeing, reason, updated_at) VALUES ('default', ?, 'quorum', ?, ?, '', 2, 'edited', 0)").run(lone.path, lone.narHash, lone.narSize);
    } finally {
      db.close();
    }
    await servedBy(server.url, lone.path);
    expect((await substitute(store(), proxy.url, serverCacheKey, [lone.path])).code).toBe(0);
    expect((await substitute(store(), client.url, client.publicKey, [lone.path])).code).not.toBe(0);
  }, 120_000);

  it('hostile server, a builder row added directly (a sock puppet) that attests: plain Nix substitutes, the client does not', async () => {
    const lone = await lonePath('sock-puppet');
    const puppet = generateSecretKey('puppet-1');
    const db = new Database(dataPaths(dataDir).db);
    try {
      db.prepare('INSERT INTO builders (name, public_key, added_at, added_leaf) VALUES (?, ?, 0, 1)').run(puppet.name, puppet.publicKey.raw);
    } finally {
      db.close();
    }
    await waitFor(async () => (await postAttestations(server.url, puppet, signedAttestation(puppet, { outPath: lone.path, narHash: lone.narHash, narSize: lone.narSize }))).status < 300, 'the puppet attestation accepted');
    await servedBy(server.url, lone.path);
    expect((await substitute(store(), proxy.url, serverCacheKey, [lone.path])).code).toBe(0);
    expect((await substitute(store(), client.url, client.publicKey, [lone.path])).code).not.toBe(0);
  }, 120_000);

  it('hostile server, attestations by a key the operator registered but the user did not pin: plain Nix substitutes, the client does not', async () => {
    const lone = await lonePath('unpinned');
    const eve = generateSecretKey('eve-1');
    addBuilder(server.service, eve.publicKey);
    await server.service.ingestor.submit([parseAttestation(signedAttestation(eve, { outPath: lone.path, narHash: lone.narHash, narSize: lone.narSize }))]);
    await servedBy(server.url, lone.path);
    await witnessed();
    expect((await substitute(store(), proxy.url, serverCacheKey, [lone.path])).code).toBe(0);
    expect((await substitute(store(), client.url, client.publicKey, [lone.path])).code).not.toBe(0);
    const { code, report } = await check(lone.path, [proxy.url], dirs.make('check-state'));
    expect(code).toBe(1);
    expect(report.steps.find((s) => s.name === 'attestations')!.detail).toMatch(/by eve-1, a name you did not pin/);
  }, 120_000);

  /** A narinfo the proxy makes up for `path`, signed with the server's cache key (stolen, or the attacker's own in its place). */
  const forged = (path: PathInfo, nar: { narHash: string; narSize: number; url: string }) => {
    const stolen: SecretKey = parseSecretKey(readFileSync(dataPaths(dataDir).cacheSecretKey, 'utf8'));
    const info: NarInfo = { storePath: path.path as StorePath, url: nar.url, compression: 'none', fileHash: nar.narHash, fileSize: nar.narSize, narHash: nar.narHash as NarHash, narSize: nar.narSize, references: path.references.map((r) => baseNameOf(r as StorePath)), sigs: [] };
    info.sigs.push(signNarInfo(info, stolen));
    return serializeNarInfo(info);
  };

  it('hostile server, its cache key in the attacker\'s hands: plain Nix takes a narinfo for a path without quorum, the client never reads narinfos', async () => {
    const lone = await lonePath('cache-key');
    const text = forged(lone, { narHash: lone.narHash, narSize: lone.narSize, url: `api/v1/nars/${lone.narHash}` });
    proxy.rewrite = (p) => (p === `/${hashPartOf(lone.path as StorePath)}.narinfo` ? { body: text, status: 200, type: NARINFO_CONTENT_TYPE } : undefined);
    try {
      expect((await substitute(store(), proxy.url, serverCacheKey, [lone.path])).code).toBe(0);
      expect((await substitute(store(), client.url, client.publicKey, [lone.path])).code).not.toBe(0);
    } finally {
      proxy.rewrite = () => undefined;
    }
  }, 120_000);

  it('hostile server, a narinfo with a forged NarHash for a path at quorum: plain Nix installs the attacker\'s bytes, the client the builders\'', async () => {
    const target = outputs.find((p) => p.endsWith('-nq-d3'))!;
    const [honest] = pathInfo(join(dir, 'b0'), [target]);
    const evil = await attackerNar('not what the builders built\n');
    const evilHash = narHashFromDigest(sha256(evil));
    const text = forged(honest!, { narHash: evilHash, narSize: evil.length, url: 'evil.nar' });
    proxy.rewrite = (p) => (p === `/${hashPartOf(target as StorePath)}.narinfo` ? { body: text, status: 200, type: NARINFO_CONTENT_TYPE } : p === '/evil.nar' ? { body: evil, status: 200, type: 'application/x-nix-nar' } : undefined);
    try {
      const plain = store();
      expect((await substitute(plain, proxy.url, serverCacheKey, [target])).code).toBe(0);
      expect(parseNarHash(pathInfo(plain, [target])[0]!.narHash)).toBe(evilHash);
      const viaClient = store();
      const r = await substitute(viaClient, client.url, client.publicKey, [target]);
      expect(r.code, r.stderr).toBe(0);
      expect(pathInfo(viaClient, [target])[0]!.narHash).toBe(honest!.narHash);
    } finally {
      proxy.rewrite = () => undefined;
    }
  }, 120_000);

  it('hostile blob store, a NAR file replaced: Nix through the client installs nothing, and the builders\' bytes once the file is honest again', async () => {
    const target = outputs.find((p) => p.endsWith('-nq-d5'))!;
    const [honest] = pathInfo(join(dir, 'b0'), [target]);
    const evil = brotliCompressSync(await attackerNar('not what the builders built either\n'));
    // Nix is sent to the ledger's file and gets other bytes: its own NarHash check refuses them.
    proxy.rewrite = (p) => (p.startsWith('/nar/') || p.startsWith('/api/v1/nars/') ? { body: evil, status: 200, type: 'application/x-nix-nar' } : undefined);
    const viaClient = store();
    try {
      const r = await substitute(viaClient, client.url, client.publicKey, [target]);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/hash mismatch/);
      expect(held(viaClient)).not.toContain(baseNameOf(target as StorePath));
    } finally {
      proxy.rewrite = () => undefined;
    }
    const r = await substitute(viaClient, client.url, client.publicKey, [target]);
    expect(r.code, r.stderr).toBe(0);
    expect(pathInfo(viaClient, [target])[0]!.narHash).toBe(honest!.narHash);
  }, 120_000);

  it('hostile server, a rolled-back ledger (its own old checkpoint, cosigned then): refused, evidence kept, stated by --check', async () => {
    const rolledBack = dirs.make('rolled-back');
    cpSync(before, rolledBack, { recursive: true });
    const old = await startServer(testConfig(rolledBack, { ledger: { origin: ORIGIN } }));
    try {
      const target = outputs.find((p) => p.endsWith('-nq-d5'))!;
      // The client that saw the newer checkpoints, through a ledger that now answers from the old copy.
      const rolled = await newClient([old.url], client.state.dir);
      try {
        expect((await substitute(store(), rolled.url, rolled.publicKey, [target])).code).not.toBe(0);
      } finally {
        await rolled.close();
      }
      const { code, report } = await check(target, [old.url], client.state.dir);
      expect(code).toBe(1);
      expect(report.skipped).toEqual([expect.objectContaining({ code: 'rollback', step: 'consistency' })]);
      expect(client.state.evidence().some((e) => e.code === 'rollback' && e.ledger === `${old.url}/`)).toBe(true);
    } finally {
      await old.close();
    }
  }, 120_000);

  it('hostile server, a rewritten history (a fork of the log under its key, with a sock puppet at quorum): plain Nix substitutes from it, the client refuses and keeps the evidence', async () => {
    const forkDir = dirs.make('fork');
    cpSync(before, forkDir, { recursive: true });
    const fork = await startServer(testConfig(forkDir, { ledger: { origin: ORIGIN, checkpointIntervalMs: 0 } }));
    try {
      const lone = await lonePath('forked');
      const [b0] = builders;
      const puppet = generateSecretKey('forked-puppet-1');
      addBuilder(fork.service, puppet.publicKey);
      await fork.service.ingestor.submit([b0!, puppet].map((k) => parseAttestation(signedAttestation(k, { outPath: lone.path, narHash: lone.narHash, narSize: lone.narSize }))));
      // A longer history than the one the client verified, so it is asked to prove it extends it.
      await fork.service.ingestor.submit(Array.from({ length: server.service.log.size() }, () => parseAttestation(signedAttestation(b0!, { outPath: randomStorePath('filler'), narHash: randomNarHash() }))));
      const nar = await fetch(`${server.url}/api/v1/nars/${lone.narHash}`);
      await fetch(`${fork.url}/api/v1/nars/${lone.narHash}`, { method: 'PUT', body: new Uint8Array(await nar.arrayBuffer()), headers: { authorization: uploadAuthHeader(b0!, lone.narHash as NarHash, lone.narSize) } });
      fork.service.checkpoints.publish();
      expect((await substitute(store(), fork.url, readFileSync(dataPaths(forkDir).cachePublicKey, 'utf8').trim(), [lone.path])).code).toBe(0);
      // Pinning witnesses, the client is shown the fork's last cosigned checkpoint, an old one; pinning none, the fork itself.
      const witnessedCheck = await check(lone.path, [fork.url], client.state.dir);
      expect(witnessedCheck.code).toBe(1);
      const unwitnessed = await check(lone.path, [fork.url], client.state.dir, false);
      expect(unwitnessed.code).toBe(1);
      expect(unwitnessed.report.skipped).toEqual([expect.objectContaining({ code: 'fork', step: 'consistency' })]);
      expect(client.state.evidence().some((e) => e.code === 'fork' && e.ledger === `${fork.url}/`)).toBe(true);
      const forked = await newClient([fork.url], client.state.dir);
      try {
        expect((await substitute(store(), forked.url, forked.publicKey, [lone.path])).code).not.toBe(0);
      } finally {
        await forked.close();
      }
    } finally {
      await fork.close();
    }
  }, 180_000);

  it('hostile server, a checkpoint with fewer witness cosignatures than the user requires: refused at step 1', async () => {
    const target = outputs.find((p) => p.endsWith('-nq-d7'))!;
    const w2Name = 'witness.test/w2';
    proxy.rewrite = (p, body) => {
      if (!p.endsWith('/proofs') && p !== '/api/v1/log/checkpoint') return undefined;
      const strip = (text: string) => text.split('\n').filter((line) => !line.startsWith(`\u2014 ${w2Name} `)).join('\n');
      if (p === '/api/v1/log/checkpoint') return { body: strip(body.toString()) };
      const json = JSON.parse(body.toString()) as { attestations: Array<{ proof: string }>; registry: Array<{ proof: string }> };
      for (const a of [...json.attestations, ...json.registry]) a.proof = strip(a.proof);
      return { body: JSON.stringify(json) };
    };
    await expectRefusedThroughProxy(target, 'not-witnessed', 'checkpoint');
  }, 120_000);

  it('hostile server, proofs against another tree than the checkpoint they claim: refused at the inclusion step', async () => {
    const target = outputs.find((p) => p.endsWith('-nq-d8'))!;
    proxy.rewrite = async (p, body) => {
      if (!p.endsWith('/proofs')) return undefined;
      const json = JSON.parse(body.toString()) as { attestations: Array<{ proof: string }> };
      for (const a of json.attestations) {
        const index = Number(/\nindex (\d+)\n/.exec(a.proof)![1]);
        // A genuine inclusion proof, of the tree that ended at this entry: not the tree the checkpoint signs.
        const { hashes } = (await (await fetch(`${server.url}/api/v1/log/proof/inclusion?index=${index}&size=${index + 1}`)).json()) as { hashes: string[] };
        a.proof = a.proof.replace(/(\nindex \d+\n)[\s\S]*?\n\n/, `$1${hashes.map((h) => `${h}\n`).join('')}\n`);
      }
      return { body: JSON.stringify(json) };
    };
    await expectRefusedThroughProxy(target, 'bad-proof', 'inclusion');
  }, 120_000);
});
