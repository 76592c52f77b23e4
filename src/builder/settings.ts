import { readFileSync } from 'node:fs';
import { loadConfig, type Config } from '../config.js';
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

/** Config file, then NIX_QUORUM_* environment, then flags (loadConfig's order). `--store` is kept apart: see storeOf. */
export function builderConfig(flags: BuilderFlags, env: NodeJS.ProcessEnv = process.env): Config {
  const builder: Record<string, string> = {};
  if (flags.server) builder.server = flags.server;
  if (flags.keyFile) builder.keyFile = flags.keyFile;
  if (flags.spool) builder.spool = flags.spool;
  return loadConfig({ file: flags.config, env, flags: { builder } });
}

/**
 * The store to read from: an explicit `--store` flag, else the `store = …` Nix put in NIX_CONFIG
 * (a post-build-hook of a chroot-store build), else builder.store / NIX_QUORUM_STORE, else null
 * (Nix's own default). Nix's setting beats ours because it says where the build really happened.
 */
export function storeOf(flags: BuilderFlags, config: Config, env: NodeJS.ProcessEnv = process.env): string | null {
  return flags.store ?? storeFromNixConfig(env.NIX_CONFIG) ?? config.builder.store ?? null;
}

export function spoolOf(config: Config, env: NodeJS.ProcessEnv = process.env): Spool {
  return new Spool(config.builder.spool ?? defaultSpoolDir(env));
}

export function serverOf(config: Config): string {
  if (!config.builder.server) {
    throw new QuorumError('no-server', 'no server configured: pass --server URL, set NIX_QUORUM_SERVER, or set builder.server in the config file', { field: 'builder.server' });
  }
  return config.builder.server;
}

/** The builder's signing key; every way this can fail says which setting to fix. */
export function builderKey(config: Config): SecretKey {
  const file = config.builder.keyFile;
  if (!file) {
    throw new QuorumError(
      'no-key',
      'no builder key configured: set NIX_QUORUM_KEY_FILE (or builder.keyFile in the config file, or --key-file) to a secret key file; create one with `nix-quorum keygen NAME --secret FILE --public FILE` and register the public key on the server',
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
