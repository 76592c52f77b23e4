import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { storeFromNixConfig } from '../../src/builder/nix.js';
import { builderConfig, builderKey, defaultKeyFile, hookConfig, serverOf, spoolOf, storeOf } from '../../src/builder/settings.js';
import { formatSecretKey, generateSecretKey } from '../../src/nix/keys.js';
import { tempDir } from '../helpers/nix.js';

describe('storeFromNixConfig', () => {
  it('reads the store a post-build-hook was given, the last setting winning', () => {
    expect(storeFromNixConfig(undefined)).toBeNull();
    expect(storeFromNixConfig('experimental-features = nix-command')).toBeNull();
    expect(storeFromNixConfig('sandbox = true\nstore = /tmp/b1\npost-build-hook = /x')).toBe('/tmp/b1');
    expect(storeFromNixConfig('store = /a\nstore=local?root=/b  # chroot\n')).toBe('local?root=/b');
    expect(storeFromNixConfig('# store = /commented\nextra-store-x = 1')).toBeNull();
  });
});

describe('builder settings', () => {
  let dir: string;
  let keyFile: string;
  const key = generateSecretKey('settings-test-1');
  beforeAll(() => {
    dir = tempDir('builder-settings');
    keyFile = join(dir, 'key.secret');
    writeFileSync(keyFile, `${formatSecretKey(key)}\n`);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('takes the config file, then NIX_QUORUM_* environment, then flags', async () => {
    const file = join(dir, 'config.json');
    writeFileSync(file, JSON.stringify({ builder: { server: 'http://file.example', spool: '/file/spool', keyFile: '/file/key', concurrency: 7 } }));
    const env = { NIX_QUORUM_SERVER: 'http://env.example', NIX_QUORUM_SPOOL: '/env/spool' };
    const config = await builderConfig({ config: file, spool: '/flag/spool' }, env);
    expect(config.builder).toMatchObject({ server: 'http://env.example', spool: '/flag/spool', keyFile: '/file/key', concurrency: 7 });
    expect(spoolOf(config, env).dir).toBe('/flag/spool');
    expect(serverOf(config)).toBe('http://env.example');
  });

  it('names the store: --store, else NIX_CONFIG from Nix, else builder.store, else Nix\'s default', async () => {
    const config = await builderConfig({}, { NIX_QUORUM_STORE: '/ours' });
    expect(storeOf({ store: '/flag' }, config, { NIX_CONFIG: 'store = /nix-given' })).toBe('/flag');
    expect(storeOf({}, config, { NIX_CONFIG: 'store = /nix-given' })).toBe('/nix-given');
    expect(storeOf({}, config, {})).toBe('/ours');
    expect(storeOf({}, await builderConfig({}, {}), {})).toBeNull();
  });

  it('loads the key, or says which setting to fix', async () => {
    expect(builderKey(await builderConfig({ keyFile }, {})).name).toBe(key.name);
    const none = await builderConfig({}, {});
    expect(() => builderKey(none, {})).toThrow(expect.objectContaining({ code: 'no-key', message: expect.stringMatching(/there is no \/.*builder\.secret.*nix-quorum keygen.*NIX_QUORUM_KEY_FILE/) }));
    // Without a setting, the key is where a standard setup puts it.
    const home = join(dir, 'home');
    mkdirSync(join(home, 'nix-quorum'), { recursive: true });
    writeFileSync(defaultKeyFile({ XDG_CONFIG_HOME: home }, false), formatSecretKey(key));
    expect(builderKey(none, { XDG_CONFIG_HOME: home }, false).name).toBe(key.name);
    expect(defaultKeyFile({}, true)).toBe('/etc/nix-quorum/builder.secret');
    expect(defaultKeyFile({}, false)).toMatch(/\/\.config\/nix-quorum\/builder\.secret$/);
    const missing = await builderConfig({ keyFile: join(dir, 'missing') }, {});
    expect(() => builderKey(missing)).toThrow(expect.objectContaining({ code: 'bad-key', message: expect.stringMatching(/cannot read the builder key file .*missing.*ENOENT/) }));
    const publicOnly = join(dir, 'key.public');
    writeFileSync(publicOnly, `${key.name}:${key.publicKey.raw.toString('base64')}\n`);
    const publicConfig = await builderConfig({ keyFile: publicOnly }, {});
    expect(() => builderKey(publicConfig)).toThrow(expect.objectContaining({ code: 'bad-key', message: expect.stringMatching(/64 bytes.*nix-quorum keygen/) }));
  });

  it('asks for a server when none is configured, and rejects one that is not a URL', async () => {
    const none = await builderConfig({}, {});
    expect(() => serverOf(none)).toThrow(expect.objectContaining({ code: 'no-server', message: expect.stringMatching(/--server URL, set NIX_QUORUM_SERVER/) }));
    await expect(builderConfig({ server: 'not a url' }, {})).rejects.toThrow(expect.objectContaining({ code: 'bad-config', message: expect.stringMatching(/builder\.server/) }));
  });

  it('gives the hook the settings builderConfig would, and validates a config file in full', async () => {
    const hookSettings = (c: { builder: { keyFile?: string; spool?: string; store?: string } }) => ({ keyFile: c.builder.keyFile, spool: c.builder.spool, store: c.builder.store });
    const cases: Array<[Parameters<typeof hookConfig>[0], NodeJS.ProcessEnv]> = [
      [{}, {}],
      [{}, { NIX_QUORUM_KEY_FILE: '/env/key', NIX_QUORUM_SPOOL: '/env/spool', NIX_QUORUM_STORE: '/env/store' }],
      [{ keyFile: '/flag/key', spool: '/flag/spool', store: '/flag/store' }, { NIX_QUORUM_KEY_FILE: '/env/key', NIX_QUORUM_SPOOL: '', NIX_QUORUM_STORE: '/env/store' }],
      [{ keyFile: '' }, { NIX_QUORUM_KEY_FILE: '/env/key', NIX_QUORUM_SERVER: 'http://env.example' }],
    ];
    for (const [flags, env] of cases) expect(hookSettings(await hookConfig(flags, env)), JSON.stringify([flags, env])).toEqual(hookSettings(await builderConfig(flags, env)));

    const file = join(dir, 'hook-config.json');
    writeFileSync(file, JSON.stringify({ builder: { keyFile: '/file/key', spool: '/file/spool' } }));
    expect(hookSettings(await hookConfig({}, { NIX_QUORUM_CONFIG: file, NIX_QUORUM_SPOOL: '/env/spool' }))).toEqual({ keyFile: '/file/key', spool: '/env/spool', store: undefined });
    writeFileSync(file, JSON.stringify({ builder: { keyfile: '/file/key' } }));
    await expect(hookConfig({ config: file }, {})).rejects.toThrow(expect.objectContaining({ code: 'bad-config', message: expect.stringMatching(/keyfile/) }));
  });
});
