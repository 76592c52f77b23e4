import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.js';
import { formatNoteVerifierKey, generateNoteKey } from '../src/ledger/checkpoint.js';
import { generateCosignerKey } from '../src/witness/cosignature.js';
import { PROJECT_ROOT } from '../src/paths.js';
import { clientConfigSchema, loadClientConfig } from '../src/client/config.js';
import { formatPublicKey, generateSecretKey } from '../src/nix/keys.js';
import { clientNixConf } from '../src/substituter/clientConfig.js';
import { describeNix, nix } from './helpers/nix.js';

/**
 * examples/ holds the exact files the README shows; the README includes each one as a block right
 * after a `<!-- examples/NAME -->` line, and the tests use the files. This keeps the three equal.
 */
const EXAMPLES = join(PROJECT_ROOT, 'examples');
const example = (name: string) => readFileSync(join(EXAMPLES, name), 'utf8');
const readme = readFileSync(join(PROJECT_ROOT, 'README.md'), 'utf8');

function includedBlocks(): Array<{ name: string; body: string }> {
  return [...readme.matchAll(/^<!-- examples\/([^ ]+) -->\n```[a-z]*\n([\s\S]*?)^```$/gm)].map((m) => ({ name: m[1]!, body: m[2]! }));
}

describe('the README\'s examples', () => {
  it('shows every file of examples/, each exactly as it is', () => {
    const blocks = includedBlocks();
    expect(blocks.length).toBeGreaterThan(0);
    for (const b of blocks) expect(b.body, `README block of examples/${b.name}`).toBe(example(b.name));
    expect(new Set(blocks.map((b) => b.name))).toEqual(new Set(readdirSync(EXAMPLES)));
    // A marker not followed by its block would escape the check above.
    expect(readme.match(/<!-- examples\//g)).toHaveLength(blocks.length);
  });

  it('configures the server and the builder with files the config schema accepts', () => {
    const server = loadConfig({ file: join(EXAMPLES, 'server.json'), env: {} });
    expect(server.publicUrl).toBe('https://quorum.example.org');
    const builder = loadConfig({ file: join(EXAMPLES, 'builder.json'), env: {} });
    expect(builder.builder.server).toBe('https://quorum.example.org');
    expect(JSON.parse(example('client.json'))).toMatchObject({ ledgers: ['https://quorum.example.org', 'https://mirror.example.net'], threshold: 2, witnessThreshold: 2 });
    // The mirror's file with real keys in place of the placeholders is a config serve accepts.
    const mirror = JSON.parse(example('mirror.json')) as { follow: { logKey: string; witnesses: string[] } };
    expect([mirror.follow.logKey, ...mirror.follow.witnesses].every((k) => k.endsWith('…'))).toBe(true);
    const logKey = formatNoteVerifierKey(generateNoteKey('quorum.example.org/log').verifier);
    const witnesses = mirror.follow.witnesses.map((w) => generateCosignerKey(w.slice(0, w.indexOf('+'))).verifier.text);
    const config = loadConfig({ env: {}, flags: { ...mirror, follow: { ...mirror.follow, logKey, witnesses } } as never });
    expect(config.follow).toMatchObject({ url: 'https://quorum.example.org', witnessThreshold: 2, witnesses });
  });

  it('configures the verifying client with the keys its schema knows, each of the shape it takes', () => {
    const shown = JSON.parse(example('client.json')) as Record<string, unknown>;
    expect(Object.keys(shown).every((k) => k in clientConfigSchema.shape)).toBe(true);
    // The same file with real keys in place of the placeholders loads.
    const real = {
      ...shown,
      logKey: formatNoteVerifierKey(generateNoteKey('quorum.example.org/log').verifier),
      builders: (shown.builders as string[]).map((b) => formatPublicKey(generateSecretKey(b.split(':')[0]!).publicKey)),
      witnesses: (shown.witnesses as string[]).map((w) => generateCosignerKey(w.split('+')[0]!).verifier.text),
    };
    const config = loadClientConfig({ flags: real });
    expect(config.listen).toEqual({ host: '127.0.0.1', port: 37515 });
    expect(config.trust.witnesses?.threshold).toBe(2);
  });

  it('gives a verifying client the lines `client` prints', () => {
    const [first, keyLine] = example('client-verifying-nix.conf').split('\n');
    expect(first).toBe('extra-substituters = http://127.0.0.1:37515');
    expect(example('client-verifying-nix.conf')).toBe(`${clientNixConf('http://127.0.0.1:37515', keyLine!.slice('extra-trusted-public-keys = '.length)).join('\n')}\n`);
  });

  it('gives clients the lines serve prints', () => {
    const [first, keyLine] = example('client-nix.conf').split('\n');
    const key = keyLine!.slice('extra-trusted-public-keys = '.length);
    expect(first).toBe('extra-substituters = https://quorum.example.org');
    expect(example('client-nix.conf')).toBe(`${clientNixConf('https://quorum.example.org', key).join('\n')}\n`);
  });

  it('has a hook script the shell can parse, where the builder nix.conf says it is', () => {
    expect(spawnSync('/bin/sh', ['-n', join(EXAMPLES, 'nix-quorum-hook.sh')]).status).toBe(0);
    const hookPath = /^post-build-hook = (\S+)$/m.exec(example('builder-nix.conf'))![1]!;
    expect(example('nix-quorum-hook.sh')).toContain(hookPath);
    expect(readme).toContain(`\`${hookPath}\` (mode 0755)`);
  });
});

describeNix('the nix.conf examples, as Nix reads them', () => {
  it('are settings Nix knows, with the values meant', () => {
    for (const name of ['client-nix.conf', 'client-verifying-nix.conf', 'builder-nix.conf']) {
      const run = spawnSync('nix', ['--extra-experimental-features', 'nix-command', 'show-config'], { env: { ...process.env, NIX_CONFIG: example(name) }, encoding: 'utf8' });
      expect(run.status, run.stderr).toBe(0);
      expect(run.stderr, name).not.toMatch(/unknown setting/);
    }
    const shown = nix('nix', ['show-config'], { env: { NIX_CONFIG: `experimental-features = nix-command\n${example('client-nix.conf')}` } });
    expect(shown).toMatch(/^narinfo-cache-negative-ttl = 300$/m);
    expect(shown).toMatch(/^substituters = .* https:\/\/quorum\.example\.org$/m);
    expect(shown).toMatch(/^trusted-public-keys = .* nix-quorum-1a2b3c4d-1:/m);
  });
});
