import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { statementText } from '../../src/ledger/statement.js';
import { formatSecretKey, generateSecretKey, signRaw, type SecretKey } from '../../src/nix/keys.js';
import { parseNarInfo } from '../../src/nix/narinfo.js';
import { hashPartOf, type StorePath } from '../../src/nix/storePath.js';
import { startServer, type RunningServer } from '../../src/serve.js';
import { chrootBuild, closureOutputs, substitute, writeClosure } from '../helpers/closure.js';
import { testConfig, randomNarHash, signedAttestation } from '../helpers/ledger.js';
import { describeNix, nix, nixEnv, tempDir } from '../helpers/nix.js';
import { runCli } from '../helpers/server.js';
import { fetchLeaves, replayLeaves, servedQuorum } from '../helpers/replay.js';
import { postAttestations } from '../../bench/common.js';
import { addBuilder } from '../../src/app/builders.js';
import { setPolicy } from '../../src/app/policies.js';

describeNix('quorum-gated substitution with three independent builders (real Nix)', () => {
  let dir: string;
  let server: RunningServer;
  let cacheKey: string;
  const keys = ['b1', 'b2', 'b3'].map((n) => generateSecretKey(`${n}.test-1`));
  const keyFiles: string[] = [];
  let outputs: string[];
  let reproducible: string[];
  let noise: string;
  let chainEnd: string;
  let client = 0;

  const narinfo = (path: string, policy = '') => fetch(`${server.url}${policy ? `/policy/${policy}` : ''}/${hashPartOf(path as StorePath)}.narinfo`);
  const newClient = () => join(dir, `client${client++}`);
  const submit = (builder: number, paths: string[]) =>
    runCli(['submit', '--upload', '--store', join(dir, `b${builder}`), '--server', server.url, '--key-file', keyFiles[builder]!, ...paths], nixEnv);

  beforeAll(async () => {
    dir = tempDir('substituter');
    server = await startServer(testConfig(join(dir, 'data')));
    cacheKey = readFileSync(join(dir, 'data', 'cache-key.public'), 'utf8').trim();
    for (const [i, key] of keys.entries()) {
      addBuilder(server.service, key.publicKey);
      keyFiles.push(join(dir, `key${i}`));
      writeFileSync(keyFiles[i]!, formatSecretKey(key));
    }
    setPolicy(server.service, { name: 'tolerant', threshold: 2, onConflict: 'ignore', builders: new Set(keys.map((k) => k.name)) });
    // 20 chained derivations, a two-output one and a non-reproducible one: 23 outputs per builder.
    const closure = writeClosure(dir, { count: 20, salt: 'substituter-e2e', nonReproducible: true });
    for (const b of [0, 1, 2]) {
      const built = chrootBuild(join(dir, `b${b}`), closure.file);
      expect(built.status, built.stderr).toBe(0);
    }
    outputs = closureOutputs(join(dir, 'b0'), closure.file).outputs;
    noise = outputs.find((p) => p.endsWith('-nq-noise'))!;
    chainEnd = outputs.find((p) => p.endsWith('-nq-d19'))!;
    reproducible = outputs.filter((p) => p !== noise);
    expect(outputs.length).toBe(23);
  }, 600_000);

  afterAll(async () => {
    await server?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('serves nothing before the quorum (2 of 3): Nix cannot substitute', async () => {
    const first = await submit(0, outputs);
    expect(first.code, first.stderr).toBe(0);
    expect((await narinfo(chainEnd)).status).toBe(404);
    const result = await substitute(newClient(), server.url, cacheKey, [chainEnd]);
    expect(result.code).not.toBe(0);
  });

  it('after a second builder agrees, Nix substitutes the whole closure and checks every NAR hash', async () => {
    const second = await submit(1, outputs);
    expect(second.code, second.stderr).toBe(0);
    const res = await narinfo(chainEnd);
    expect(res.status).toBe(200);
    const info = parseNarInfo(await res.text());
    expect(info.sigs.some((s) => s.startsWith('nix-quorum-'))).toBe(true);
    expect(info.sigs.filter((s) => /^b[12]\.test-1:/.test(s))).toHaveLength(2);

    const store = newClient();
    const result = await substitute(store, server.url, cacheKey, reproducible);
    expect(result.code, result.stderr).toBe(0);
    // What the client holds is what the builders built, by Nix's own account.
    const ours = JSON.parse(nix('nix', ['--store', store, 'path-info', '--json', ...reproducible])) as Array<{ path: string; narHash: string }>;
    const theirs = JSON.parse(nix('nix', ['--store', join(dir, 'b0'), 'path-info', '--json', ...reproducible])) as Array<{ path: string; narHash: string }>;
    expect(ours.map((p) => [p.path, p.narHash])).toEqual(theirs.map((p) => [p.path, p.narHash]));
    nix('nix', ['--store', store, 'store', 'verify', '--no-trust', ...reproducible]);
  });

  it('never serves a non-reproducible output under onConflict: block, and shows why', async () => {
    expect((await narinfo(noise)).status).toBe(404);
    const result = await substitute(newClient(), server.url, cacheKey, [noise]);
    expect(result.code).not.toBe(0);
    const body = (await (await fetch(`${server.url}/api/v1/paths/${hashPartOf(noise as StorePath)}`)).json()) as {
      paths: Array<{ attestations: Array<{ narHash: string }>; decisions: Array<{ policy: string; status: string; dissenting: string[]; reason: string }> }>;
    };
    const [path] = body.paths;
    expect(new Set(path!.attestations.map((a) => a.narHash)).size).toBe(2);
    const byDefault = path!.decisions.find((d) => d.policy === 'default')!;
    expect(byDefault.status).toBe('blocked');
    expect(byDefault.reason).toMatch(/different contents/);
    expect(byDefault.dissenting).toHaveLength(1);
  });

  it('a minority builder forging a different narHash changes nothing that is served', async () => {
    const target = outputs.find((p) => p.endsWith('-nq-d7'))!;
    const before = await (await narinfo(target, 'tolerant')).text();
    const forger = keys[2]!;
    const honest = JSON.parse(nix('nix', ['--store', join(dir, 'b2'), 'path-info', '--json', target])) as Array<{ narSize: number; references: string[]; deriver: string }>;
    const forged = {
      drvPath: honest[0]!.deriver,
      outputName: 'out',
      outPath: target,
      narHash: randomNarHash(),
      narSize: honest[0]!.narSize,
      references: [...honest[0]!.references].sort(),
    };
    const signature = signRaw(forger as SecretKey, statementText(forged as never)).toString('base64');
    const res = await postAttestations(server.url, forger, { ...forged, builder: forger.name, signature });
    expect(res.status).toBe(201);
    // Under "ignore" the two honest keys still agree: the same narinfo, and Nix substitutes the real bytes.
    expect(await (await narinfo(target, 'tolerant')).text()).toBe(before);
    const result = await substitute(newClient(), `${server.url}/policy/tolerant`, cacheKey, [target]);
    expect(result.code, result.stderr).toBe(0);
    // Under "block" the disagreement withholds the path rather than risk it: never the forged content.
    expect((await narinfo(target)).status).toBe(404);
  });

  it('revoking a key with the README\'s `builder revoke NAME --data DIR`, while serve runs, drops the paths it was needed for at once; a restart serves what the log implies', async () => {
    const served = await narinfo(chainEnd);
    expect(served.status).toBe(200);
    const narUrl = new URL(parseNarInfo(await served.text()).url, `${server.url}/`).href;
    expect((await fetch(narUrl)).status).toBe(200);
    const revoked = await runCli(['builder', 'revoke', keys[1]!.name, '--data', join(dir, 'data')]);
    expect(revoked.code, revoked.stderr).toBe(0);
    expect(revoked.stderr).toMatch(/is served by http:\/\/127\.0\.0\.1:\d+: changing it through that server/);
    // Asked at once, without waiting: the change was made by the server itself.
    expect((await narinfo(chainEnd)).status).toBe(404);
    expect((await narinfo(chainEnd, 'tolerant')).status).toBe(404);
    // A client that cached the narinfo cannot fetch the NAR either.
    expect((await fetch(narUrl)).status).toBe(404);
    const late = signedAttestation(keys[1]!, { outPath: chainEnd, narHash: randomNarHash() });
    expect((await postAttestations(server.url, keys[1]!, late)).status).toBe(403);
    const result = await substitute(newClient(), server.url, cacheKey, [chainEnd]);
    expect(result.code).not.toBe(0);

    await server.close();
    server = await startServer(testConfig(join(dir, 'data')));
    expect((await narinfo(chainEnd)).status).toBe(404);
    const log = replayLeaves(await fetchLeaves(server.url));
    expect(log.problems).toEqual([]);
    for (const policy of ['default', 'tolerant']) expect(await servedQuorum(server.url, policy)).toEqual(log.quorum.get(policy));
  });
});
