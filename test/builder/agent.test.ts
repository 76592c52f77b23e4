import { rmSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startAgent } from '../../src/builder/agent.js';
import { signOutput } from '../../src/builder/attest.js';
import { drain, type DrainOptions, type DrainReport } from '../../src/builder/drain.js';
import { buildOutputs, type BuiltOutput } from '../../src/builder/outputs.js';
import { QuorumClient } from '../../src/builder/remote.js';
import { Spool } from '../../src/builder/spool.js';
import { createLogger } from '../../src/log.js';
import { narHashToSri } from '../../src/nix/hash.js';
import { generateSecretKey } from '../../src/nix/keys.js';
import { hashPartOf, parseDrvPath, type StorePath } from '../../src/nix/storePath.js';
import { startServer, type RunningServer } from '../../src/serve.js';
import { chrootBuild, closureOutputs, writeClosure } from '../helpers/closure.js';
import { randomNarHash, randomStorePath, testConfig } from '../helpers/ledger.js';
import { describeNix, tempDir } from '../helpers/nix.js';
import { freePort } from '../helpers/server.js';
import { addBuilder } from '../../src/app/builders.js';

describeNix('drain and agent against a real server and a real Nix store', () => {
  let dir: string;
  let store: string;
  let server: RunningServer;
  let outputs: BuiltOutput[];
  const key = generateSecretKey('agent-test-1');
  const logLines: string[] = [];
  const logger = createLogger('debug', (line) => logLines.push(line));
  let spoolCount = 0;
  const freshSpool = () => new Spool(join(dir, `spool-${spoolCount++}`));

  const options = (spool: Spool, serverUrl: string, extra: Partial<DrainOptions> = {}): DrainOptions => ({
    spool,
    client: new QuorumClient(serverUrl),
    key,
    upstreams: [],
    concurrency: 2,
    retry: { attempts: 2, baseDelayMs: 5, maxDelayMs: 20 },
    logger,
    ...extra,
  });

  const hasNar = async (narHash: string) => (await fetch(`${server.url}/api/v1/nars/${narHash}`, { method: 'HEAD' })).status === 200;
  const attestationsOf = async (outPath: string) =>
    ((await (await fetch(`${server.url}/api/v1/paths/${hashPartOf(outPath as StorePath)}`)).json()) as { paths: Array<{ attestations: unknown[] }> }).paths[0]?.attestations ?? [];

  beforeAll(async () => {
    dir = tempDir('builder-agent');
    store = join(dir, 'store');
    const closure = writeClosure(dir, { count: 2, salt: 'agent-test' });
    const build = chrootBuild(store, closure.file);
    expect(build.status, build.stderr).toBe(0);
    const drvs = closureOutputs(store, closure.file).drvs.map((d) => parseDrvPath(d));
    outputs = (await Promise.all(drvs.map((d) => buildOutputs(d, [], { store })))).flat();
    server = await startServer(testConfig(join(dir, 'data')));
    addBuilder(server.service, key.publicKey);
  });

  afterAll(async () => {
    await server?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('uploads the NAR from the recorded store, then submits; a repeated entry is a duplicate and adds no leaf', async () => {
    const spool = freshSpool();
    const output = outputs.find((o) => o.outputName === 'dev')!;
    spool.add(signOutput(output, key), store);
    const leaves = server.service.log.size();
    expect(await drain(options(spool, server.url))).toEqual({ delivered: 1, failed: [], quarantined: [] });
    expect(spool.list()).toEqual([]);
    expect(await hasNar(output.narHash)).toBe(true);
    expect(await attestationsOf(output.outPath)).toHaveLength(1);

    spool.add(signOutput(output, key), store);
    expect(await drain(options(spool, server.url))).toEqual({ delivered: 1, failed: [], quarantined: [] });
    expect(server.service.log.size()).toBe(leaves + 1);
  });

  it('does not upload a NAR an upstream cache already serves with the same hash, and uploads when it differs', async () => {
    const [same, differing] = outputs.filter((o) => o.outPath.endsWith('-nq-d1') || o.outPath.endsWith('-nq-split'));
    const upstream = http.createServer((req, res) => {
      const o = [same!, differing!].find((x) => req.url === `/${hashPartOf(x.outPath)}.narinfo`);
      if (!o) return res.writeHead(404).end();
      const narHash = o === same ? narHashToSri(o.narHash) : randomNarHash();
      res.writeHead(200, { 'content-type': 'text/x-nix-narinfo' });
      res.end(`StorePath: ${o.outPath}\nURL: nar/x.nar\nCompression: none\nNarHash: ${narHash}\nNarSize: ${o.narSize}\nReferences: \n`);
    });
    await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
    try {
      const spool = freshSpool();
      for (const o of [same!, differing!]) spool.add(signOutput(o, key), store);
      const upstreams = [`http://127.0.0.1:${(upstream.address() as AddressInfo).port}`];
      expect(await drain(options(spool, server.url, { upstreams }))).toMatchObject({ delivered: 2 });
      expect(await hasNar(same!.narHash)).toBe(false);
      expect(await hasNar(differing!.narHash)).toBe(true);
    } finally {
      await new Promise((resolve) => upstream.close(resolve));
    }
  });

  it('keeps entries, saying why, while the server is down or refuses the builder', async () => {
    const spool = freshSpool();
    const name = spool.add(signOutput(outputs[0]!, key), store);
    const down = await drain(options(spool, `http://127.0.0.1:${await freePort()}`));
    expect(down).toEqual({ delivered: 0, quarantined: [], failed: [{ entry: name, error: expect.stringMatching(/cannot reach http:\/\/127\.0\.0\.1:\d+/) }] });

    const stranger = generateSecretKey('agent-test-unregistered');
    const refused = freshSpool();
    const missing = randomStorePath('gone');
    const strangerEntry = refused.add(signOutput({ ...outputs[0]!, outPath: missing }, stranger), store);
    const report = await drain({ ...options(refused, server.url), key: stranger });
    expect(report.failed).toEqual([{ entry: strangerEntry, error: expect.stringMatching(/403 agent-test-unregistered is not an active registered builder/) }]);
    expect(spool.list()).toEqual([name]);
    expect(refused.list()).toEqual([strangerEntry]);
  });

  it('submits the attestation without a NAR when the output has left the store, and logs it', async () => {
    const spool = freshSpool();
    const outPath = randomStorePath('collected');
    spool.add(signOutput({ ...outputs[0]!, outPath }, key), store);
    expect(await drain(options(spool, server.url))).toMatchObject({ delivered: 1 });
    expect(await attestationsOf(outPath)).toHaveLength(1);
    expect(logLines.some((l) => l.includes('no longer in the store') && l.includes(outPath))).toBe(true);
  });

  it('agent: drains at start, retries with backoff while the server is down, then delivers new entries as they appear', async () => {
    const port = await freePort();
    const spool = freshSpool();
    const [first, second] = outputs.filter((o) => o.outPath.endsWith('-nq-d0') || o.outPath.endsWith('-nq-d1'));
    spool.add(signOutput(first!, key), store);
    const reports: DrainReport[] = [];
    let notify = () => {};
    const until = (pred: () => boolean) =>
      new Promise<void>((resolve) => {
        const check = () => (pred() ? resolve() : (notify = check));
        check();
      });
    const agent = startAgent({
      ...options(spool, `http://127.0.0.1:${port}`),
      cron: '0 0 1 1 *',
      backoff: { baseDelayMs: 20, maxDelayMs: 100 },
      onDrained: (r) => {
        reports.push(r);
        notify();
      },
    });
    let backOnline: RunningServer | undefined;
    try {
      await until(() => reports.filter((r) => r.failed.length === 1).length >= 2);
      backOnline = await startServer(testConfig(join(dir, 'data-agent'), { listen: `127.0.0.1:${port}` }));
      addBuilder(backOnline.service, key.publicKey);
      const leaves = backOnline.service.log.size();
      await until(() => reports.some((r) => r.delivered === 1));
      expect(spool.list()).toEqual([]);

      const delivered = reports.length;
      spool.add(signOutput(second!, key), store);
      await until(() => reports.slice(delivered).some((r) => r.delivered === 1));
      expect(spool.list()).toEqual([]);
      expect(backOnline.service.log.size()).toBe(leaves + 2);
    } finally {
      await agent.stop();
      await backOnline?.close();
    }
  });
});
