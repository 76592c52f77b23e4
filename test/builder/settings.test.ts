import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { storeFromNixConfig } from '../../src/builder/nix.js';
import { builderConfig, builderKey, serverOf, spoolOf, storeOf } from '../../src/builder/settings.js';
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

  it('takes the config file, then NIX_QUORUM_* environment, then flags', () => {
    const file = join(dir, 'config.json');
    writeFileSync(file, JSON.stringify({ builder: { server: 'http://file.example', spool: '/file/spool', keyFile: '/file/key', concurrency: 7 } }));
    const env = { NIX_QUORUM_SERVER: 'http://env.example', NIX_QUORUM_SPOOL: '/env/spool' };
    const config = builderConfig({ config: file, spool: '/flag/spool' }, env);
    expect(config.builder).toMatchObject({ server: 'http://env.example', spool: '/flag/spool', keyFile: '/file/key', concurrency: 7 });
    expect(spoolOf(config, env).dir).toBe('/flag/spool');
    expect(serverOf(config)).toBe('http://env.example');
  });

  it('names the store: --store, else NIX_CONFIG from Nix, else builder.store, else Nix\'s default', () => {
    const config = builderConfig({}, { NIX_QUORUM_STORE: '/ours' });
    expect(storeOf({ store: '/flag' }, config, { NIX_CONFIG: 'store = /nix-given' })).toBe('/flag');
    expect(storeOf({}, config, { NIX_CONFIG: 'store = /nix-given' })).toBe('/nix-given');
    expect(storeOf({}, config, {})).toBe('/ours');
    expect(storeOf({}, builderConfig({}, {}), {})).toBeNull();
  });

  it('loads the key, or says which setting to fix', () => {
    expect(builderKey(builderConfig({ keyFile }, {})).name).toBe(key.name);
    expect(() => builderKey(builderConfig({}, {}))).toThrow(expect.objectContaining({ code: 'no-key', message: expect.stringMatching(/NIX_QUORUM_KEY_FILE.*nix-quorum keygen/) }));
    expect(() => builderKey(builderConfig({ keyFile: join(dir, 'missing') }, {}))).toThrow(expect.objectContaining({ code: 'bad-key', message: expect.stringMatching(/cannot read the builder key file .*missing.*ENOENT/) }));
    const publicOnly = join(dir, 'key.public');
    writeFileSync(publicOnly, `${key.name}:${key.publicKey.raw.toString('base64')}\n`);
    expect(() => builderKey(builderConfig({ keyFile: publicOnly }, {}))).toThrow(expect.objectContaining({ code: 'bad-key', message: expect.stringMatching(/64 bytes.*nix-quorum keygen/) }));
  });

  it('asks for a server when none is configured, and rejects one that is not a URL', () => {
    expect(() => serverOf(builderConfig({}, {}))).toThrow(expect.objectContaining({ code: 'no-server', message: expect.stringMatching(/--server URL, set NIX_QUORUM_SERVER/) }));
    expect(() => builderConfig({ server: 'not a url' }, {})).toThrow(expect.objectContaining({ code: 'bad-config', message: expect.stringMatching(/builder\.server/) }));
  });
});
