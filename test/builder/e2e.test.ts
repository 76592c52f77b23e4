import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Spool } from '../../src/builder/spool.js';
import { readSpoolEntry } from '../../src/builder/spoolEntry.js';
import { statementText } from '../../src/ledger/statement.js';
import { parseNarHash } from '../../src/nix/hash.js';
import { formatSecretKey, generateSecretKey, verifyRaw } from '../../src/nix/keys.js';
import { hashPartOf, type StorePath } from '../../src/nix/storePath.js';
import { startServer, type RunningServer } from '../../src/serve.js';
import { chrootBuild, closureOutputs, writeClosure, writeHookScript } from '../helpers/closure.js';
import { testConfig } from '../helpers/ledger.js';
import { describeNix, nix, nixEnv, tempDir } from '../helpers/nix.js';
import { CLI, freePort, runCli, stopChild } from '../helpers/server.js';
import { addBuilder } from '../../src/app/builders.js';

interface PathAnswer {
  paths: Array<{ outPath: string; attestations: Array<{ builder: string; narHash: string; narSize: number; outputName: string; drvPath: string }> }>;
}

async function ledgerPath(server: RunningServer, outPath: string): Promise<PathAnswer['paths'][number] | undefined> {
  const res = await fetch(`${server.url}/api/v1/paths/${hashPartOf(outPath as StorePath)}`);
  expect(res.status).toBe(200);
  return ((await res.json()) as PathAnswer).paths.find((p) => p.outPath === outPath);
}

async function serverHasNar(server: RunningServer, narHash: string): Promise<boolean> {
  const res = await fetch(`${server.url}/api/v1/nars/${narHash}`, { method: 'HEAD' });
  expect([200, 404]).toContain(res.status);
  return res.status === 200;
}

/** `nix path-info --json` of a chroot store: the oracle for what a builder must have signed. */
function nixPathInfo(store: string, paths: string[]): Map<string, { narHash: string; narSize: number; references: string[]; signatures?: string[] }> {
  const infos = JSON.parse(nix('nix', ['--store', store, 'path-info', '--json', '--sigs', ...paths])) as Array<{ path: string; narHash: string; narSize: number; references: string[]; signatures?: string[] }>;
  return new Map(infos.map((i) => [i.path, i]));
}

type ProxyMode = 'pass' | 'stall-big-put' | 'hold-post' | 'swallow-post-answer';

/**
 * A reverse proxy between the agent and the server that can freeze the agent at exact points, so a
 * test kills it there without relying on timing: in the middle of a NAR upload (after part of the
 * body reached the server), before an attestation reaches the server, or after the server committed
 * an attestation but before the agent hears back.
 */
class FreezingProxy {
  mode: ProxyMode = 'pass';
  private readonly server: http.Server;
  private waiters: Array<{ event: string; resolve: (detail: string) => void }> = [];
  url = '';

  constructor(private readonly target: string, private readonly bigBytes: number) {
    this.server = http.createServer((req, res) => this.handle(req, res));
  }

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  /** Resolves when `event` next happens: with the attestations sent (post-held), or JSON {sent, answer} (post-committed). */
  next(event: 'put-stalled' | 'post-held' | 'post-committed'): Promise<string> {
    return new Promise((resolve) => this.waiters.push({ event, resolve }));
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private emit(event: string, detail: string): void {
    const ready = this.waiters.filter((w) => w.event === event);
    this.waiters = this.waiters.filter((w) => w.event !== event);
    for (const w of ready) w.resolve(detail);
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const mode = this.mode;
    if (mode === 'hold-post' && req.method === 'POST') {
      let body = '';
      req.on('data', (d) => (body += d));
      req.on('end', () => this.emit('post-held', body));
      return;
    }
    let sent = '';
    if (mode === 'swallow-post-answer' && req.method === 'POST') req.on('data', (d) => (sent += d));
    const upstream = http.request(`${this.target}${req.url}`, { method: req.method, headers: req.headers }, (answer) => {
      if (mode === 'swallow-post-answer' && req.method === 'POST') {
        let body = '';
        answer.on('data', (d) => (body += d));
        answer.on('end', () => this.emit('post-committed', JSON.stringify({ sent: JSON.parse(sent), answer: JSON.parse(body) })));
        return;
      }
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    upstream.on('error', () => res.destroy());
    // The agent died mid-request: cut the server's side too, as a real network would.
    req.on('close', () => {
      if (!req.complete) upstream.destroy();
    });
    if (mode === 'stall-big-put' && req.method === 'PUT' && Number(req.headers['content-length']) >= this.bigBytes) {
      let forwarded = 0;
      req.on('data', (chunk: Buffer) => {
        upstream.write(chunk);
        forwarded += chunk.length;
        if (forwarded >= 1024 * 1024 && !req.isPaused()) {
          req.pause();
          this.emit('put-stalled', String(forwarded));
        }
      });
      return;
    }
    req.pipe(upstream);
  }
}

describeNix('builder side with real Nix: hook, spool, agent, flush, submit, status', () => {
  const BIG = 16 * 1024 * 1024;
  let dir: string;
  let keyFile: string;
  const key = generateSecretKey('builder-e2e-1');
  /** The server's address, reserved up front: the first test builds while nothing listens there. */
  let serverUrl: string;
  let running: RunningServer | undefined;
  async function up(): Promise<RunningServer> {
    if (!running) {
      running = await startServer(testConfig(join(dir, 'data'), { listen: serverUrl.slice('http://'.length) }));
      addBuilder(running.service, key.publicKey);
    }
    return running;
  }
  const children = new Set<ChildProcess>();

  const builderEnv = (spool: string, server: string): NodeJS.ProcessEnv => ({
    NIX_QUORUM_KEY_FILE: keyFile,
    NIX_QUORUM_SPOOL: spool,
    NIX_QUORUM_SERVER: server,
    NIX_QUORUM_LOG_LEVEL: 'warn',
  });

  /**
   * Builds the closure salted `name` into a fresh chroot store whose post-build-hook is
   * `nix-quorum hook`. The hook learns the store from Nix's NIX_CONFIG, unless `buildEnv` sets a
   * NIX_CONFIG of its own (Nix 2.8 then passes that one on); `hookEnv` replaces the hook's settings.
   */
  function buildWithHook(name: string, spec: { count: number; nonReproducible?: boolean; bigBytes?: number }, options: { hookEnv?: Record<string, string>; buildEnv?: NodeJS.ProcessEnv } = {}) {
    const store = join(dir, `store-${name}`);
    const spool = join(dir, `spool-${name}`);
    const closure = writeClosure(dir, { salt: name, ...spec });
    const hook = writeHookScript(join(dir, `hook-${name}.sh`), options.hookEnv ?? { NIX_QUORUM_KEY_FILE: keyFile, NIX_QUORUM_SPOOL: spool, NIX_QUORUM_SERVER: serverUrl });
    const build = chrootBuild(store, closure.file, { hook, env: options.buildEnv });
    return { store, spool, build, outputs: closureOutputs(store, closure.file).outputs };
  }

  function spawnAgent(server: string, spool: string): ChildProcess {
    const child = spawn(process.execPath, [CLI, 'agent'], { env: { ...nixEnv, ...builderEnv(spool, server) }, stdio: ['ignore', 'ignore', 'pipe'] });
    child.stderr!.resume();
    children.add(child);
    return child;
  }

  beforeAll(async () => {
    dir = tempDir('builder-e2e');
    keyFile = join(dir, 'builder.secret');
    writeFileSync(keyFile, formatSecretKey(key), { mode: 0o600 });
    serverUrl = `http://127.0.0.1:${await freePort()}`;
  });

  afterAll(async () => {
    for (const child of children) await stopChild(child, 'SIGKILL');
    await running?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('queues one signed entry per output while the server is down; flush then delivers attestations and NARs', async () => {
    // The hook is configured with the server's address, where nothing listens yet: builds must not notice.
    const { store, spool, build, outputs } = buildWithHook('down', { count: 4, nonReproducible: true });
    expect(running).toBeUndefined();
    expect(build.status, build.stderr).toBe(0);
    expect(build.stderr).not.toMatch(/nix-quorum hook: ERROR/);

    const queue = new Spool(spool);
    const entries = queue.list().map((n) => readSpoolEntry(queue, n));
    expect(entries.map((e) => e.attestation.outPath).sort()).toEqual(outputs);

    // What was signed is what Nix's database says, and the narinfo signature is the very one Nix makes with the same key.
    nix('nix', ['--store', store, 'store', 'sign', '--key-file', keyFile, ...outputs]);
    const infos = nixPathInfo(store, outputs);
    for (const { attestation: a, store: entryStore } of entries) {
      const info = infos.get(a.outPath)!;
      expect(entryStore).toBe(store);
      expect(a.narHash).toBe(parseNarHash(info.narHash));
      expect(a.narSize).toBe(info.narSize);
      expect(a.references).toEqual([...info.references].sort());
      expect(a.outputName).toBe(a.outPath.endsWith('-nq-split-dev') ? 'dev' : 'out');
      expect(verifyRaw(key.publicKey, statementText(a), a.signature)).toBe(true);
      expect(info.signatures).toContain(a.narinfoSignature);
    }

    // Nothing is lost while the server is down: flush keeps every entry and says why.
    const early = await runCli(['flush'], { ...nixEnv, ...builderEnv(spool, serverUrl) });
    expect(early.code).toBe(1);
    expect(early.stderr).toMatch(new RegExp(`delivered 0, undelivered ${outputs.length}, quarantined 0[^]*cannot reach http://127.0.0.1`));
    expect(queue.list()).toHaveLength(outputs.length);

    const server = await up();
    const leavesBefore = server.service.log.size();
    const flushed = await runCli(['flush'], { ...nixEnv, ...builderEnv(spool, server.url) });
    expect(flushed.code, flushed.stderr).toBe(0);
    expect(flushed.stderr).toMatch(new RegExp(`delivered ${outputs.length}, undelivered 0, quarantined 0`));
    expect(queue.list()).toEqual([]);
    for (const { attestation: a } of entries) {
      const path = await ledgerPath(server, a.outPath);
      expect(path?.attestations).toEqual([expect.objectContaining({ builder: key.name, narHash: a.narHash, narSize: a.narSize, outputName: a.outputName, drvPath: a.drvPath })]);
      expect(await serverHasNar(server, a.narHash)).toBe(true);
    }
    expect(server.service.log.size()).toBe(leavesBefore + outputs.length);
  });

  it('loses nothing and adds no duplicate leaf when the agent is SIGKILLed mid-upload, before an attestation, or before its answer', async () => {
    const { spool, build, outputs } = buildWithHook('kill', { count: 2, bigBytes: BIG });
    expect(build.status, build.stderr).toBe(0);
    const queue = new Spool(spool);
    const entries = queue.list().map((n) => readSpoolEntry(queue, n));
    expect(entries).toHaveLength(outputs.length);
    const big = entries.find((e) => e.attestation.outPath.endsWith('-nq-big'))!.attestation;
    const server = await up();
    const leavesBefore = server.service.log.size();
    const proxy = new FreezingProxy(server.url, BIG);
    await proxy.start();
    try {
      // 1. Killed while the big NAR is half-way to the server: the server must keep no partial NAR.
      proxy.mode = 'stall-big-put';
      const stalled = proxy.next('put-stalled');
      const agent1 = spawnAgent(proxy.url, spool);
      await stalled;
      await stopChild(agent1, 'SIGKILL');
      expect(await serverHasNar(server, big.narHash)).toBe(false);
      expect(queue.list().map((n) => readSpoolEntry(queue, n).attestation.outPath)).toContain(big.outPath);

      // 2. Killed after uploading, before the attestation reached the server.
      proxy.mode = 'hold-post';
      const held = proxy.next('post-held');
      const agent2 = spawnAgent(proxy.url, spool);
      const [heldItem] = JSON.parse(await held) as Array<{ outPath: string; narHash: string }>;
      await stopChild(agent2, 'SIGKILL');
      expect(await serverHasNar(server, heldItem!.narHash)).toBe(true);
      expect(queue.list().map((n) => readSpoolEntry(queue, n).attestation.outPath)).toContain(heldItem!.outPath);

      // 3. Killed after the server committed an attestation, before the agent heard back: the entry stays and is resubmitted.
      proxy.mode = 'swallow-post-answer';
      const committed = proxy.next('post-committed');
      const agent3 = spawnAgent(proxy.url, spool);
      const { sent, answer } = JSON.parse(await committed) as { sent: Array<{ outPath: string }>; answer: unknown };
      await stopChild(agent3, 'SIGKILL');
      // 'duplicate' when stage 1's kill came after the server committed that entry but before the agent removed it.
      expect(answer).toEqual({ results: [expect.objectContaining({ status: expect.stringMatching(/^(accepted|duplicate)$/) })] });
      expect((await ledgerPath(server, sent[0]!.outPath))?.attestations).toHaveLength(1);
      expect(queue.list().map((n) => readSpoolEntry(queue, n).attestation.outPath)).toContain(sent[0]!.outPath);
    } finally {
      await proxy.close();
    }

    const flushed = await runCli(['flush'], { ...nixEnv, ...builderEnv(spool, server.url) });
    expect(flushed.code, flushed.stderr).toBe(0);
    expect(queue.list()).toEqual([]);
    for (const { attestation: a } of entries) {
      expect((await ledgerPath(server, a.outPath))?.attestations).toHaveLength(1);
      expect(await serverHasNar(server, a.narHash)).toBe(true);
    }
    expect(server.service.log.size()).toBe(leavesBefore + outputs.length);
  });

  it('quarantines corrupt spool entries with a clear message and delivers the entries after them', async () => {
    // Also the other way to name the store: the build's own NIX_CONFIG hides Nix's, so the hook script sets NIX_QUORUM_STORE.
    const store = join(dir, 'store-corrupt');
    const spool = join(dir, 'spool-corrupt');
    const { build, outputs } = buildWithHook('corrupt', { count: 2 }, {
      buildEnv: { NIX_CONFIG: 'experimental-features = nix-command' },
      hookEnv: { NIX_QUORUM_KEY_FILE: keyFile, NIX_QUORUM_SPOOL: spool, NIX_QUORUM_STORE: store },
    });
    expect(build.status, build.stderr).toBe(0);
    expect(build.stderr).not.toMatch(/nix-quorum hook: ERROR/);
    const queue = new Spool(spool);
    const good = queue.list();
    // Names that sort first, so the drain meets the bad entries before the good ones.
    const truncated = '00000000000000000000000000000000-0000000000000000.json';
    const invalid = '00000000000000000000000000000001-0000000000000000.json';
    writeFileSync(join(spool, truncated), '{"version":1,"attestation":{"drvPath":');
    const tampered = JSON.parse(readFileSync(join(spool, good[0]!), 'utf8')) as { attestation: { narHash: string } };
    tampered.attestation.narHash = 'sha256:not-a-hash';
    writeFileSync(join(spool, invalid), JSON.stringify(tampered));

    const server = await up();
    const flushed = await runCli(['flush'], { ...nixEnv, ...builderEnv(spool, server.url) });
    expect(flushed.code, flushed.stderr).toBe(0);
    expect(flushed.stderr).toMatch(new RegExp(`delivered ${outputs.length}, undelivered 0, quarantined 2`));
    expect(flushed.stderr).toMatch(new RegExp(`quarantined ${truncated} .*not valid JSON`));
    expect(flushed.stderr).toMatch(new RegExp(`quarantined ${invalid} .*attestation\\.narHash`));
    expect(queue.list()).toEqual([]);
    const quarantine = join(spool, 'quarantine');
    expect(readdirSync(quarantine).sort()).toEqual([truncated, `${truncated}.reason`, invalid, `${invalid}.reason`].sort());
    expect(readFileSync(join(quarantine, `${invalid}.reason`), 'utf8')).toMatch(/narHash/);
    for (const outPath of outputs) expect((await ledgerPath(server, outPath))?.attestations).toHaveLength(1);
  });

  it('lets every build succeed when the hook is misconfigured, says what to fix, and submit catches up', async () => {
    const spool = join(dir, 'spool-misconfigured');
    mkdirSync(spool);
    const { store, build, outputs } = buildWithHook('misconfigured', { count: 3 }, { hookEnv: { NIX_QUORUM_SPOOL: spool, NIX_QUORUM_KEY_FILE: '' } });
    expect(build.status, build.stderr).toBe(0);
    // Every derivation was built (the build loop went on after each failed hook run)…
    expect([...nixPathInfo(store, outputs).keys()].sort()).toEqual(outputs);
    // …and each hook run said loudly what is wrong, what to set, and how to catch up.
    expect(build.stderr).toMatch(/nix-quorum hook: ERROR: the outputs of \/nix\/store\/\S+\.drv were NOT attested/);
    expect(build.stderr).toMatch(/no builder key: none configured, and there is no \/etc\/nix-quorum\/builder.secret.*set NIX_QUORUM_KEY_FILE/);
    expect(build.stderr).toMatch(new RegExp(`nix-quorum submit --upload --store ${store} \\$\\(nix-store --store ${store} -q --outputs /nix/store/\\S+\\.drv\\)`));
    expect(readdirSync(spool)).toEqual([]);

    const server = await up();
    const leavesBefore = server.service.log.size();
    const top = outputs.find((p) => p.endsWith('-nq-split'))!;
    const env = builderEnv(spool, server.url);
    const submitted = await runCli(['submit', '--closure', '--upload', '--store', store, top], env);
    expect(submitted.code, submitted.stderr).toBe(0);
    // The closure of split's `out` is everything but nothing else: d0…d2, split-dev and itself.
    expect(submitted.stderr).toMatch(new RegExp(`accepted ${outputs.length}, duplicate 0`));
    const infos = nixPathInfo(store, outputs);
    for (const outPath of outputs) {
      const [attestation] = (await ledgerPath(server, outPath))!.attestations;
      expect(attestation!.narHash).toBe(parseNarHash(infos.get(outPath)!.narHash));
      expect(await serverHasNar(server, attestation!.narHash)).toBe(true);
    }
    expect(server.service.log.size()).toBe(leavesBefore + outputs.length);

    const again = await runCli(['submit', '--store', store, ...outputs], env);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).toMatch(new RegExp(`accepted 0, duplicate ${outputs.length}`));
    expect(server.service.log.size()).toBe(leavesBefore + outputs.length);

    const missing = '/nix/store/00000000000000000000000000000000-not-there';
    const failed = await runCli(['submit', '--store', store, missing], env);
    expect(failed.code).toBe(1);
    expect(failed.stderr).toContain(`error ${missing}: ${missing} is not in the store ${store}`);

    // status: the default policy needs 2 keys, one has attested.
    const status = await runCli(['status', top], env);
    expect(status.code, status.stderr).toBe(0);
    expect(status.stdout).toContain(top);
    expect(status.stdout).toMatch(/^ {2}default +PENDING +no: no quorum yet +1 of 1 trusted keys agree; 2 needed$/m);
    expect(status.stdout).toMatch(new RegExp(` ${key.name} +${parseNarHash(infos.get(top)!.narHash)} `));
    const raw = await runCli(['status', '--json', top], env);
    expect((JSON.parse(raw.stdout) as PathAnswer).paths[0]!.outPath).toBe(top);
  });

  it('exits 0 from the hook outside Nix too, naming what is missing', async () => {
    const run = await runCli(['hook'], { NIX_QUORUM_KEY_FILE: keyFile, DRV_PATH: '' });
    expect(run.code).toBe(0);
    expect(run.stderr).toMatch(/DRV_PATH is not set: `nix-quorum hook` is meant to run as Nix's post-build-hook/);
  });
});
