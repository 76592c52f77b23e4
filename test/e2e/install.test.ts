import { existsSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatSecretKey, generateSecretKey } from '../../src/nix/keys.js';
import { PROJECT_ROOT } from '../../src/paths.js';
import { chrootBuild, EXAMPLE_HOOK, writeClosure } from '../helpers/closure.js';
import { haveNix, tempDir } from '../helpers/nix.js';
import { freePort, runAsync } from '../helpers/server.js';

/**
 * The README's install: `npm pack` of this checkout, then `npm install -g --prefix` of the tarball
 * into an empty prefix (the README uses /usr/local). The installed CLI must run on its own, from
 * that prefix alone: the builder commands, the server (better-sqlite3 built or fetched for this
 * Node), and the README's hook script finding it on PATH.
 */
describe('the CLI installed from its npm tarball into a clean prefix', () => {
  let dir: string;
  let prefix: string;
  let env: NodeJS.ProcessEnv;
  const bin = () => join(prefix, 'bin', 'nix-quorum');

  beforeAll(async () => {
    dir = tempDir('install');
    prefix = join(dir, 'prefix');
    // The tests run after the build (npm test's pretest), so pack what is built rather than build it again.
    const packed = await runAsync('npm', ['pack', '--ignore-scripts', '--pack-destination', dir], { ...process.env, npm_config_loglevel: 'error' });
    expect(packed.code, packed.stderr).toBe(0);
    const tarball = join(dir, readdirSync(dir).find((f) => f.endsWith('.tgz'))!);
    const installed = await runAsync('npm', ['install', '-g', '--prefix', prefix, '--prefer-offline', '--no-audit', '--no-fund', tarball], { ...process.env, npm_config_loglevel: 'error' });
    expect(installed.code, installed.stderr).toBe(0);
    // Only the prefix and the system's own tools (node itself is a prerequisite, in /usr/bin here).
    env = { PATH: `${join(prefix, 'bin')}:/usr/bin:/bin`, HOME: dir };
  }, 900_000);

  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('puts nix-quorum on PATH with what it needs at run time, and nothing of the source tree', () => {
    const root = join(prefix, 'lib', 'node_modules', 'nix-quorum');
    expect(existsSync(bin())).toBe(true);
    for (const file of ['schema.sql', 'LICENSE', 'README.md', 'examples/nix-quorum-hook.sh', 'src/web/assets/path-page.js', 'dist/src/cli/main.js']) expect(existsSync(join(root, file)), file).toBe(true);
    for (const absent of ['test', 'bench', 'src/cli', 'node_modules/typescript', 'node_modules/vitest']) expect(existsSync(join(root, absent)), absent).toBe(false);
  });

  it('runs the builder commands: hook, agent, flush', async () => {
    for (const command of ['hook', 'agent', 'flush']) {
      const help = await runAsync(bin(), [command, '--help'], env);
      expect(help.code, `${command}: ${help.stderr}`).toBe(0);
      expect(help.stdout).toContain(`Usage: nix-quorum ${command}`);
    }
    // Outside Nix the hook still exits 0, and says why it did nothing.
    const hook = await runAsync(bin(), ['hook'], env);
    expect(hook.code).toBe(0);
    expect(hook.stderr).toMatch(/nix-quorum hook: ERROR: .*DRV_PATH is not set/s);
    const flush = await runAsync(bin(), ['flush', '--spool', join(dir, 'empty-spool'), '--server', 'http://127.0.0.1:9', '--key-file', join(dir, 'none')], env);
    expect(flush.stderr).toMatch(/cannot read the builder key file/);
  });

  it('runs the verifying client: client --help', async () => {
    const help = await runAsync(bin(), ['client', '--help'], env);
    expect(help.code, help.stderr).toBe(0);
    expect(help.stdout).toContain('Usage: nix-quorum client');
    expect(help.stdout).toContain('--check <path>');
  });

  it('serves: the native SQLite module works for this Node', async () => {
    const port = await freePort();
    const { spawn } = await import('node:child_process');
    const child = spawn(bin(), ['serve', '--data', join(dir, 'data'), '--listen', `127.0.0.1:${port}`], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      let ok = false;
      for (let i = 0; i < 200 && !ok; i++) {
        ok = await fetch(`http://127.0.0.1:${port}/healthz`).then((r) => r.ok, () => false);
        if (!ok) await new Promise((r) => setTimeout(r, 50));
      }
      expect(ok).toBe(true);
      expect(await (await fetch(`http://127.0.0.1:${port}/assets/nacl-fast.min.js`)).text()).toContain('nacl');
    } finally {
      child.kill('SIGTERM');
    }
  });

  (haveNix || process.env.CI ? it : it.skip)('is what the README\'s hook script finds on PATH: a build queues its signed outputs', async () => {
    const keyFile = join(dir, 'builder.secret');
    writeFileSync(keyFile, formatSecretKey(generateSecretKey('install-test-1')));
    const spool = join(dir, 'spool');
    const closure = writeClosure(dir, { count: 2, salt: `install-${Date.now()}` });
    const build = chrootBuild(join(dir, 'store'), closure.file, { hook: EXAMPLE_HOOK, env: { PATH: env.PATH!, NIX_QUORUM_KEY_FILE: keyFile, NIX_QUORUM_SPOOL: spool } });
    expect(build.status, build.stderr).toBe(0);
    expect(build.stderr).not.toMatch(/nix-quorum hook: ERROR/);
    expect(readdirSync(spool).filter((f) => f.endsWith('.json'))).toHaveLength(4);
  });

  it('ships the README\'s examples as they are in the repository', async () => {
    const { readFileSync } = await import('node:fs');
    for (const file of readdirSync(join(PROJECT_ROOT, 'examples'))) {
      expect(readFileSync(join(prefix, 'lib', 'node_modules', 'nix-quorum', 'examples', file), 'utf8'), file).toBe(readFileSync(join(PROJECT_ROOT, 'examples', file), 'utf8'));
    }
  });
});
