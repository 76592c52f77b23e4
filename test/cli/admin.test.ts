import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer, type RunningServer } from '../../src/serve.js';
import { describeNix, nix, tempDir } from '../helpers/nix.js';
import { testConfig } from '../helpers/ledger.js';
import { runCli } from '../helpers/server.js';
import { createLogger } from '../../src/log.js';
import { openService } from '../../src/service.js';

describe('nix-quorum keygen, builder and policy commands', () => {
  let dir: string;

  beforeAll(() => {
    dir = tempDir('cli');
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const keygen = async (name: string) => {
    const secret = join(dir, `${name}.secret`);
    const pub = join(dir, `${name}.public`);
    const r = await runCli(['keygen', name, '--secret', secret, '--public', pub]);
    expect(r.code, r.stderr).toBe(0);
    return { secret, pub: readFileSync(pub, 'utf8').trim() };
  };

  it('manages builders and policies in a local data directory', async () => {
    const data = join(dir, 'local');
    // The ledger a server made on its first start.
    openService(testConfig(data), createLogger('error')).close();
    const b1 = await keygen('local-b1-1');
    const b2 = await keygen('local-b2-1');
    expect((await runCli(['builder', 'add', 'local-b1-1', b1.pub, '--data', data])).code).toBe(0);
    expect((await runCli(['builder', 'add', 'local-b2-1', b2.pub, '--data', data])).code).toBe(0);
    const mismatch = await runCli(['builder', 'add', 'other-name', b1.pub, '--data', data]);
    expect(mismatch.code).toBe(1);
    expect(mismatch.stderr).toMatch(/named local-b1-1, not other-name/);

    const policy = await runCli(['policy', 'set', 'pair', '--threshold', '2', '--builders', 'local-b1-1,local-b2-1', '--on-conflict', 'ignore', '--data', data]);
    expect(policy.code, policy.stderr).toBe(0);
    expect(JSON.parse(policy.stdout)).toEqual({ name: 'pair', threshold: 2, onConflict: 'ignore', builders: ['local-b1-1', 'local-b2-1'], possible: true });
    const tooHigh = await runCli(['policy', 'set', 'pair', '--threshold', '3', '--builders', 'local-b1-1,local-b2-1', '--data', data]);
    expect(tooHigh.code).toBe(1);
    expect(tooHigh.stderr).toMatch(/threshold: 3 is more than the 2 builders the policy names/);

    expect((await runCli(['builder', 'revoke', 'local-b2-1', '--data', data])).code).toBe(0);
    const list = JSON.parse((await runCli(['builder', 'list', '--data', data, '--json'])).stdout) as { builders: Array<{ name: string; active: boolean }> };
    expect(list.builders.map((b) => [b.name, b.active])).toEqual([['local-b1-1', true], ['local-b2-1', false]]);
    const policies = JSON.parse((await runCli(['policy', 'list', '--data', data, '--json'])).stdout) as { policies: Array<{ name: string }> };
    expect(policies.policies.map((p) => p.name)).toEqual(['default', 'pair']);
    // For people: a table; the pair policy lost a key to the revocation and says so.
    const table = (await runCli(['policy', 'list', '--data', data])).stdout.split('\n');
    expect(table[0]).toMatch(/^NAME +THRESHOLD +ON CONFLICT +BUILDERS +NOTE$/);
    expect(table.find((l) => l.startsWith('pair'))).toMatch(/^pair +2 +ignore +local-b1-1,local-b2-1 +IMPOSSIBLE: only 1 active key in the policy, threshold 2/);
    expect((await runCli(['builder', 'list', '--data', data])).stdout).toMatch(/^NAME +STATUS +ADDED +PUBLIC KEY\nlocal-b1-1 +active /);
  });

  describe('through a running server', () => {
    let server: RunningServer;
    beforeAll(async () => {
      server = await startServer(testConfig(join(dir, 'remote')));
    });
    afterAll(async () => server.close());

    it('needs the admin token, and then adds, lists and revokes', async () => {
      const b = await keygen('remote-b1-1');
      const denied = await runCli(['builder', 'add', 'remote-b1-1', b.pub, '--server', server.url, '--admin-token', 'wrong']);
      expect(denied.code).toBe(1);
      expect(denied.stderr).toMatch(/401.*admin token/);
      const token = server.service.adminToken;
      expect((await runCli(['builder', 'add', 'remote-b1-1', b.pub, '--server', server.url, '--admin-token', token])).code).toBe(0);
      expect(server.service.registry.get('remote-b1-1')?.revokedAt).toBeNull();
      expect((await runCli(['builder', 'revoke', 'remote-b1-1', '--server', server.url, '--admin-token', token])).code).toBe(0);
      expect(server.service.registry.get('remote-b1-1')?.revokedAt).not.toBeNull();
      const list = JSON.parse((await runCli(['builder', 'list', '--server', server.url, '--json'])).stdout) as { builders: Array<{ name: string; active: boolean }> };
      expect(list.builders).toEqual([expect.objectContaining({ name: 'remote-b1-1', active: false })]);
    });
  });

  it('every command answers --help', async () => {
    for (const args of [[], ['serve'], ['keygen'], ['builder', 'add'], ['policy', 'set'], ['hook'], ['agent'], ['flush'], ['submit'], ['status'], ['verify'], ['nar', 'hash'], ['gc']]) {
      const r = await runCli([...args, '--help']);
      expect(r.code, args.join(' ')).toBe(0);
      expect(r.stdout).toMatch(/^Usage: nix-quorum/);
    }
  });
});

describeNix('nix-quorum keygen makes keys Nix accepts', () => {
  it('has Nix derive the same public key from our secret key', async () => {
    const dir = tempDir('keygen');
    try {
      const r = await runCli(['keygen', 'nixcheck-1', '--secret', join(dir, 's'), '--public', join(dir, 'p')]);
      expect(r.code, r.stderr).toBe(0);
      const derived = nix('nix', ['key', 'convert-secret-to-public'], { input: readFileSync(join(dir, 's')) }).trim();
      expect(derived).toBe(readFileSync(join(dir, 'p'), 'utf8').trim());
      expect(r.stdout.trim()).toBe(derived);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
