import { addBuilder } from '../../src/app/builders.js';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { narHashFromDigest, parseNarHash, sha256 } from '../../src/nix/hash.js';
import { formatSecretKey, generateSecretKey } from '../../src/nix/keys.js';
import { hashPartOf, type StorePath } from '../../src/nix/storePath.js';
import { PROJECT_ROOT } from '../../src/paths.js';
import { startServer, type RunningServer } from '../../src/serve.js';
import { chrootBuild, cliBinDir, EXAMPLE_HOOK } from '../helpers/closure.js';
import { testConfig } from '../helpers/ledger.js';
import { describeNix, nix, nixEnv, tempDir } from '../helpers/nix.js';
import { runAsync, runCli } from '../helpers/server.js';

/**
 * What an operator and a Nix user see, with real Nix: two builders running the README's hook script
 * and `flush`, then `nix log`, `nix store ls`, `nix copy --to` and reproducibility diffs against
 * the server, `status` from a config file, and the hook script with the CLI missing or broken.
 */

const nixString = (s: string) => JSON.stringify(s).replace(/\$\{/g, '\\${');

/** Derivations that log, that build a small tree (directory, executable, symlink) and that differ on every build. */
function writeDerivations(dir: string, salt: string): string {
  const file = join(dir, `operator-${salt}.nix`);
  writeFileSync(
    file,
    `let
  salt = ${nixString(salt)};
  mk = name: script: derivation { inherit name salt; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" script ]; };
in {
  logged = mk "nq-logged" "/bin/echo building nq-logged with salt $salt; /bin/echo a second line on stderr >&2; /bin/mkdir $out; /bin/echo x > $out/x";
  tree = mk "nq-tree" "/bin/mkdir -p $out/bin $out/share/10 $out/share/2 && /bin/echo '#!/bin/sh' > $out/bin/tool && /bin/chmod +x $out/bin/tool && /bin/ln -s bin/tool $out/link && /usr/bin/head -c 70000 /dev/zero > $out/share/zeros && /bin/echo same > $out/stable";
  noise = mk "nq-noise" "/bin/mkdir $out && /bin/echo same > $out/stable && /bin/date +%s%N > $out/time && /usr/bin/head -c 32 /dev/urandom > $out/random";
}
`,
  );
  return file;
}

describeNix('an operator\'s cache, seen from Nix (real Nix, the README\'s hook script)', () => {
  let dir: string;
  let server: RunningServer;
  let cacheKey: string;
  let bin: string;
  const keys = ['op-b1', 'op-b2'].map((n) => generateSecretKey(`${n}-1`));
  const keyFiles: string[] = [];
  let outputs: Record<'logged' | 'tree' | 'noise', string>;
  const store = (b: number) => join(dir, `b${b}`);
  const spool = (b: number) => join(dir, `spool${b}`);
  /** The hook's settings (builds add them to Nix's environment, without a NIX_CONFIG of their own: see chrootBuild). */
  const hookEnv = (b: number, path: string) => ({ PATH: path, NIX_QUORUM_KEY_FILE: keyFiles[b]!, NIX_QUORUM_SPOOL: spool(b) });

  /** examples/builder.json with this server in it: what `flush` and `status` read outside the agent's environment. */
  function builderConfigFile(): string {
    const example = readFileSync(join(PROJECT_ROOT, 'examples', 'builder.json'), 'utf8');
    expect(example).toContain('https://quorum.example.org');
    const file = join(dir, 'builder.json');
    writeFileSync(file, example.replace('https://quorum.example.org', server.url));
    return file;
  }

  beforeAll(async () => {
    dir = tempDir('operator');
    server = await startServer(testConfig(join(dir, 'data')));
    cacheKey = readFileSync(join(dir, 'data', 'cache-key.public'), 'utf8').trim();
    bin = cliBinDir(dir);
    for (const [i, key] of keys.entries()) {
      addBuilder(server.service, key.publicKey);
      keyFiles.push(join(dir, `key${i}`));
      writeFileSync(keyFiles[i]!, formatSecretKey(key));
    }
    const file = writeDerivations(dir, `operator-${Date.now()}`);
    for (const b of [0, 1]) {
      const built = chrootBuild(store(b), file, { hook: EXAMPLE_HOOK, env: hookEnv(b, `${bin}:/usr/bin:/bin`) });
      expect(built.status, built.stderr).toBe(0);
      expect(built.stderr).not.toMatch(/nix-quorum hook: ERROR/);
      const flushed = await runCli(['flush', '--config', builderConfigFile()], { ...nixEnv, ...hookEnv(b, process.env.PATH!) });
      expect(flushed.code, flushed.stderr).toBe(0);
      expect(flushed.stderr).toMatch(/delivered 3, undelivered 0/);
    }
    const paths = built(file);
    outputs = { logged: paths.find((p) => p.endsWith('-nq-logged'))!, tree: paths.find((p) => p.endsWith('-nq-tree'))!, noise: paths.find((p) => p.endsWith('-nq-noise'))! };
  }, 600_000);

  function built(file: string): string[] {
    const drvs = nix('nix-instantiate', ['--store', store(0), file]).split('\n').filter(Boolean);
    return nix('nix-store', ['--store', store(0), '-q', '--outputs', ...drvs]).split('\n').filter(Boolean);
  }

  afterAll(async () => {
    await server?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('nix log prints the builder\'s build log, fetched from the server as from any binary cache', async () => {
    const client = join(dir, 'client-log');
    const log = await runAsync(
      'nix',
      ['--store', client, 'log', outputs.logged, '--option', 'substituters', server.url, '--option', 'trusted-public-keys', cacheKey, '--option', 'narinfo-cache-negative-ttl', '0'],
      nixEnv,
    );
    expect(log.code, log.stderr).toBe(0);
    expect(log.stdout).toContain(`building nq-logged with salt`);
    expect(log.stdout).toContain('a second line on stderr');
    // The path page links each builder's log.
    const page = await (await fetch(`${server.url}/paths/${hashPartOf(outputs.logged as StorePath)}`)).text();
    for (const k of keys) expect(page).toContain(`?builder=${k.name}">build log</a>`);
  });

  it('serves Nix\'s JSON listing of a served path: what nix store ls reads from the NAR itself, and the builder\'s store', async () => {
    const res = await fetch(`${server.url}/${hashPartOf(outputs.tree as StorePath)}.ls`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    const text = await res.text();
    const listing = JSON.parse(text) as { version: number; root: unknown };
    expect(listing.version).toBe(1);
    // Nix 2.8's `nix store ls` on a binary cache downloads the NAR and lists it (with offsets): the same JSON, byte for byte.
    const remote = await runAsync('nix', ['store', 'ls', '--store', server.url, '--json', '-R', outputs.tree], nixEnv);
    expect(remote.code, remote.stderr).toBe(0);
    expect(`{"version":1,"root":${remote.stdout.trim()}}`).toBe(text);
    const local = JSON.parse(nix('nix', ['--store', store(0), 'store', 'ls', '--json', '-R', outputs.tree])) as unknown;
    expect(JSON.parse(JSON.stringify(listing.root, (k, v: unknown) => (k === 'narOffset' ? undefined : v)))).toEqual(local);
    // Not served, not listed.
    expect((await fetch(`${server.url}/${hashPartOf(outputs.noise as StorePath)}.ls`)).status).toBe(404);
  });

  it('names the files that differ between two builders\' outputs, and links both NARs', async () => {
    const res = await fetch(`${server.url}/api/v1/paths/${hashPartOf(outputs.noise as StorePath)}/diff`);
    expect(res.status).toBe(200);
    const diff = (await res.json()) as { outputs: Array<{ outPath: string; contents: Array<{ label: string; narHash: string; builders: string[]; nar: { url: string } | null; listed: boolean }>; files: Array<{ path: string; versions: Array<{ sha256?: string } | null> }>; totalDifferences: number }> };
    const [o] = diff.outputs;
    expect(o!.outPath).toBe(outputs.noise);
    expect(o!.contents.map((c) => c.builders)).toEqual([[keys[0]!.name], [keys[1]!.name]]);
    expect(o!.files.map((f) => f.path)).toEqual(['random', 'time']);
    expect(o!.totalDifferences).toBe(2);
    for (const f of o!.files) expect(f.versions[0]!.sha256).not.toBe(f.versions[1]!.sha256);
    // Each NAR link gives the NAR its builder signed, as Nix hashes it in the builder's store.
    for (const [i, c] of o!.contents.entries()) {
      const nar = Buffer.from(await (await fetch(`${server.url}${c.nar!.url}`)).arrayBuffer());
      const info = JSON.parse(nix('nix', ['--store', store(i), 'path-info', '--json', outputs.noise])) as Array<{ narHash: string; narSize: number }>;
      const signed = parseNarHash(info[0]!.narHash);
      expect([narHashFromDigest(sha256(nar)), nar.length]).toEqual([signed, info[0]!.narSize]);
      expect(c.narHash).toBe(signed);
    }
    const page = await (await fetch(`${server.url}/paths/${hashPartOf(outputs.noise as StorePath)}`)).text();
    expect(page).toMatch(/2 files differ between groups A, B/);
    expect(page).toContain('<code class="path">random</code>');
    expect(page).toContain(`href="${o!.contents[0]!.nar!.url}"`);
  });

  it('nix copy --to the server fails with a message that names the upload path', async () => {
    // A path the server does not serve (builders disagree on it), so Nix tries to upload it.
    const copy = await runAsync('nix', ['--store', store(0), 'copy', '--to', server.url, outputs.noise], nixEnv);
    expect(copy.code).not.toBe(0);
    expect(copy.stderr).toMatch(/HTTP error 405/);
    expect(copy.stderr).toContain('nix-quorum submit --upload');
  });

  it('status works from the builder config file alone, and says the path is served', async () => {
    const status = await runCli(['status', outputs.logged, '--config', builderConfigFile()], { PATH: process.env.PATH });
    expect(status.code, status.stderr).toBe(0);
    expect(status.stdout).toMatch(/^ {2}default +QUORUM +yes +2 of 2 trusted keys agree/m);
    const noise = await runCli(['status', outputs.noise, '--config', builderConfigFile()], { PATH: process.env.PATH });
    expect(noise.stdout).toMatch(/^ {2}default +BLOCKED +no: blocked/m);
  });

  it('the README\'s hook script lets the build succeed and says what to fix when the CLI is missing or broken', async () => {
    const missing = chrootBuild(join(dir, 'b-missing'), writeDerivations(dir, `missing-${Date.now()}`), { hook: EXAMPLE_HOOK, env: { PATH: '/usr/bin:/bin' } });
    expect(missing.status, missing.stderr).toBe(0);
    expect(missing.stderr).toMatch(/nix-quorum hook: ERROR: the outputs of \/nix\/store\/\S+\.drv were NOT attested: nix-quorum is not on PATH \(\/usr\/bin:\/bin:\/usr\/local\/bin\): install it/);
    expect(missing.stderr).toMatch(/nix-quorum hook: {3}nix-quorum submit --upload \$\(nix-store -q --outputs \/nix\/store\/\S+\.drv\)/);

    const broken = join(dir, 'broken-bin');
    const { mkdirSync } = await import('node:fs');
    mkdirSync(broken);
    writeFileSync(join(broken, 'nix-quorum'), '#!/bin/sh\necho "/usr/bin/env: node: No such file or directory" >&2\nexit 127\n', { mode: 0o755 });
    const failing = chrootBuild(join(dir, 'b-broken'), writeDerivations(dir, `broken-${Date.now()}`), { hook: EXAMPLE_HOOK, env: { PATH: `${broken}:/usr/bin:/bin` } });
    expect(failing.status, failing.stderr).toBe(0);
    expect(failing.stderr).toMatch(/NOT attested: nix-quorum hook exited with status 127 \(is Node\.js >= 20\.15 on PATH\?/);
  });
});
