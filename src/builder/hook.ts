import { QuorumError } from '../errors.js';
import { parseDrvPath, parseStorePath, type StorePath } from '../nix/storePath.js';
import { storeFromNixConfig } from './nix.js';
import { buildOutputs } from './outputs.js';
import type { BuilderFlags } from './settings.js';

export interface HookResult {
  drvPath: StorePath;
  store: string | null;
  entries: Array<{ name: string; outPath: StorePath; outputName: string }>;
}

/** DRV_PATH and OUT_PATHS as Nix sets them for a post-build-hook (OUT_PATHS is empty on Nix 2.8). */
export function hookInput(env: NodeJS.ProcessEnv): { drvPath: StorePath; outPaths: StorePath[] } {
  if (!env.DRV_PATH) {
    throw new QuorumError('bad-hook-env', 'DRV_PATH is not set: `nix-quorum hook` is meant to run as Nix\'s post-build-hook (nix.conf: post-build-hook = /path/to/script running it)', { field: 'DRV_PATH' });
  }
  const drvPath = parseDrvPath(env.DRV_PATH, 'DRV_PATH');
  const outPaths = (env.OUT_PATHS ?? '').split(/\s+/).filter(Boolean).map((p) => parseStorePath(p, 'OUT_PATHS'));
  return { drvPath, outPaths };
}

/**
 * The post-build-hook's work, which must stay cheap and independent of NAR size: read what Nix's
 * database says about each output, sign, and queue one durable spool entry per output. No network
 * and no NAR reading: the agent does both later.
 *
 * The Nix calls do not depend on our configuration, only on the store, which Nix itself named in
 * NIX_CONFIG (or --store did): they start first and run while the settings and the signing code
 * load. Only if the settings name another store are they asked again.
 */
export async function runHook(env: NodeJS.ProcessEnv, flags: BuilderFlags): Promise<HookResult> {
  const { drvPath, outPaths } = hookInput(env);
  const early = flags.store ?? storeFromNixConfig(env.NIX_CONFIG);
  const reading = buildOutputs(drvPath, outPaths, { store: early, env });
  reading.catch(() => undefined); // Awaited below, or dropped when the config names another store.
  const [{ hookConfig, builderKey, spoolOf, storeOf }, { signOutput }] = await Promise.all([import('./settings.js'), import('./attest.js')]);
  const config = await hookConfig(flags, env);
  const key = builderKey(config, env);
  const spool = spoolOf(config, env);
  const store = storeOf(flags, config, env);
  const outputs = await (store === early ? reading : buildOutputs(drvPath, outPaths, { store, env })).catch((error: unknown) => {
    if (!(error instanceof QuorumError && /is not a valid store path/.test(error.message))) throw error;
    throw new QuorumError(
      'wrong-store',
      `${error.message}. The hook is reading ${store ? `the store ${store}` : "Nix's default store"}, not the one that built ${drvPath}. ` +
        'Nix 2.8 passes its store setting to the hook in NIX_CONFIG only if NIX_CONFIG was unset where the build started; ' +
        'set NIX_QUORUM_STORE (or builder.store, or --store) in the hook script to the store you build into',
      { field: 'builder.store' },
    );
  });
  const entries = outputs.map((output) => ({ name: spool.add(signOutput(output, key), store), outPath: output.outPath, outputName: output.outputName }));
  return { drvPath, store, entries };
}
