/*
 * The NIX_QUORUM_* environment variables, apart from the config schema (config.ts): the post-build
 * hook reads its settings from them without loading zod.
 */

/** The variable that sets each config setting (a dotted path into the config). */
const CONFIG_ENV = {
  dataDir: 'NIX_QUORUM_DATA',
  listen: 'NIX_QUORUM_LISTEN',
  publicUrl: 'NIX_QUORUM_PUBLIC_URL',
  logLevel: 'NIX_QUORUM_LOG_LEVEL',
  'builder.server': 'NIX_QUORUM_SERVER',
  'builder.keyFile': 'NIX_QUORUM_KEY_FILE',
  'builder.spool': 'NIX_QUORUM_SPOOL',
  'builder.store': 'NIX_QUORUM_STORE',
} as const;

export type EnvSetting = keyof typeof CONFIG_ENV;

/** A setting's value from the environment; an empty variable counts as unset. */
export function envSetting(env: NodeJS.ProcessEnv, setting: EnvSetting): string | undefined {
  return env[CONFIG_ENV[setting]] || undefined;
}

/** The config file to read: --config, else NIX_QUORUM_CONFIG; none if both are unset or empty. */
export function configFile(flag: string | undefined, env: NodeJS.ProcessEnv): string | undefined {
  return (flag ?? env.NIX_QUORUM_CONFIG) || undefined;
}

export type Json = { [k: string]: unknown };

function setPath(target: Json, path: string[], value: unknown): void {
  let node = target;
  for (const key of path.slice(0, -1)) {
    node[key] = typeof node[key] === 'object' && node[key] !== null ? node[key] : {};
    node = node[key] as Json;
  }
  node[path[path.length - 1]!] = value;
}

/** The settings the environment sets, shaped like the config file. */
export function envInput(env: NodeJS.ProcessEnv): Json {
  const input: Json = {};
  for (const setting of Object.keys(CONFIG_ENV) as EnvSetting[]) {
    const value = envSetting(env, setting);
    if (value !== undefined) setPath(input, setting.split('.'), value);
  }
  return input;
}
