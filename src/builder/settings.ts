import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { Config } from '../config.js';
import { configFile, envSetting } from '../configEnv.js';
import { QuorumError } from '../errors.js';
import { parseSecretKey, type SecretKey } from '../nix/keys.js';
import { storeFromNixConfig } from './nix.js';
import { defaultSpoolDir, Spool } from './spool.js';

/** Flags every builder-side command accepts; each overrides the config file and NIX_QUORUM_* env. */
export interface BuilderFlags {
  config?: string;
  server?: string;
  keyFile?: string;
  spool?: string;
  store?: string;
}

/** The part of the configuration a function reads, so the hook can pass what hookConfig read. */
type Settings<K extends keyof Config['builder']> = { builder: Pick<Config['builder'], K> };

/** The flags as config settings. `--store` is kept apart: see storeOf. */
function flagSettings(flags: BuilderFlags): Settings<'server' | 'keyFile' | 'spool'>['builder'] {
  const builder: Settings<'server' | 'keyFile' | 'spool'>['builder'] = {};
  if (flags.server) builder.server = flags.server;
  if (flags.keyFile) builder.keyFile = flags.keyFile;
  if (flags.spool) builder.spool = flags.spool;
  return builder;
}

/** Config file, then NIX_QUORUM_* environment, then flags (loadConfig's order), validated by the config schema. */
export async function builderConfig(flags: BuilderFlags, env: NodeJS.ProcessEnv = process.env): Promise<Config> {
  // Imported here: loading zod and the schema is what hookConfig avoids.
  const { loadConfig } = await import('../config.js');
  return loadConfig({ file: flags.config, env, flags: { builder: flagSettings(flags) } });
}

/**
 * What the hook reads: builder.keyFile, .spool and .store, in builderConfig's order. Without a config
 * file they come from NIX_QUORUM_* and flags, plain strings, which is all the schema asks of these
 * three; the hook then skips loading zod and the schema, a third of its run time. Settings the hook
 * does not use (the server URL…) are validated by the commands that use them. A config file is JSON
 * of any shape, so it goes through builderConfig like everywhere else.
 */
export async function hookConfig(flags: BuilderFlags, env: NodeJS.ProcessEnv = process.env): Promise<Settings<'keyFile' | 'spool' | 'store'>> {
  if (configFile(flags.config, env)) return builderConfig(flags, env);
  const flagged = flagSettings(flags);
  return {
    builder: {
      keyFile: flagged.keyFile ?? envSetting(env, 'builder.keyFile'),
      spool: flagged.spool ?? envSetting(env, 'builder.spool'),
      store: envSetting(env, 'builder.store'),
    },
  };
}

/**
 * The store to read from: an explicit `--store` flag, else the `store = …` Nix put in NIX_CONFIG
 * (a post-build-hook of a chroot-store build), else builder.store / NIX_QUORUM_STORE, else null
 * (Nix's own default). Nix's setting beats ours because it says where the build really happened.
 */
export function storeOf(flags: BuilderFlags, config: Settings<'store'>, env: NodeJS.ProcessEnv = process.env): string | null {
  return flags.store ?? storeFromNixConfig(env.NIX_CONFIG) ?? config.builder.store ?? null;
}

export function spoolOf(config: Settings<'spool'>, env: NodeJS.ProcessEnv = process.env): Spool {
  return new Spool(config.builder.spool ?? defaultSpoolDir(env));
}

export function serverOf(config: Settings<'server'>): string {
  if (!config.builder.server) {
    throw new QuorumError('no-server', 'no server configured: pass --server URL, set NIX_QUORUM_SERVER, or set builder.server in the config file', { field: 'builder.server' });
  }
  return config.builder.server;
}

/**
 * Where the key is unless configured: system-wide for root (the Nix daemon's hook, the agent's
 * service), else per user, as for the spool. So a standard setup needs no key setting anywhere.
 */
export function defaultKeyFile(env: NodeJS.ProcessEnv = process.env, root = process.getuid?.() === 0): string {
  if (root) return '/etc/nix-quorum/builder.secret';
  return join(env.XDG_CONFIG_HOME || join(homedir(), '.config'), 'nix-quorum', 'builder.secret');
}

/** The builder's signing key; every way this can fail says which setting to fix. */
export function builderKey(config: Settings<'keyFile'>, env: NodeJS.ProcessEnv = process.env, root?: boolean): SecretKey {
  const file = config.builder.keyFile ?? defaultKeyFile(env, root);
  if (!config.builder.keyFile && !existsSync(file)) {
    throw new QuorumError(
      'no-key',
      `no builder key: none configured, and there is no ${file}. Create one with \`nix-quorum keygen NAME --secret ${file} --public FILE\` and register the public key on the server, or set NIX_QUORUM_KEY_FILE (or builder.keyFile in the config file, or --key-file) to a secret key file`,
      { field: 'builder.keyFile' },
    );
  }
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new QuorumError('bad-key', `cannot read the builder key file ${file}: ${(e as Error).message}; make it readable by the user that runs this command (root for the Nix daemon's post-build-hook)`, { field: 'builder.keyFile', cause: e });
  }
  try {
    return parseSecretKey(text, `builder key file ${file}`);
  } catch (e) {
    throw new QuorumError('bad-key', `${(e as Error).message} (expected the secret key written by nix-quorum keygen or nix-store --generate-binary-cache-key)`, { field: 'builder.keyFile', cause: e });
  }
}
