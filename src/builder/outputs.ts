import { QuorumError } from '../errors.js';
import type { StatementFields } from '../ledger/statement.js';
import type { StorePath } from '../nix/storePath.js';
import { derivationOutputs, invalidPaths, pathInfos, type NixStore } from './nix.js';

/** Everything an attestation states about one output, read from Nix's database. */
export type BuiltOutput = StatementFields;

function outputNames(declared: Map<string, StorePath>): Map<StorePath, string> {
  return new Map([...declared].map(([name, path]) => [path, name]));
}

/**
 * The outputs of a finished build, as a post-build-hook sees it. `outPaths` is Nix's OUT_PATHS;
 * Nix 2.8 passes it empty, and there `nix path-info DRV` answers for the derivation's outputs (2.8
 * reads a bare .drv installable as "all its outputs"). Both Nix calls only need DRV_PATH, so they
 * run side by side: the hook's cost is one Nix call, not two.
 */
export async function buildOutputs(drvPath: StorePath, outPaths: readonly StorePath[], target: NixStore): Promise<BuiltOutput[]> {
  const [derivations, infos] = await Promise.all([derivationOutputs([drvPath], target), pathInfos(outPaths.length > 0 ? outPaths : [drvPath], target)]);
  const declared = derivations.get(drvPath);
  if (!declared || declared.size === 0) throw new QuorumError('nix-failed', `nix show-derivation lists no outputs with a path for ${drvPath}`);
  const names = outputNames(declared);
  const wanted = outPaths.length > 0 ? outPaths : [...declared.values()];
  return wanted.map((outPath) => {
    const outputName = names.get(outPath);
    if (outputName === undefined) throw new QuorumError('nix-failed', `${outPath} is not an output of ${drvPath}`);
    const info = infos.get(outPath);
    if (!info) throw new QuorumError('nix-failed', `nix path-info has no valid ${outPath}${target.store ? ` in the store ${target.store}` : ''}: the build did not register it`);
    return { drvPath, outputName, outPath, narHash: info.narHash, narSize: info.narSize, references: info.references };
  });
}

export type PathResolution = { path: StorePath; output: BuiltOutput } | { path: StorePath; error: string; noDeriver: boolean };

/**
 * Existing store paths (for `submit`): each one's deriver from Nix's database, and which output of
 * that derivation it is, from the .drv's own output list. Three Nix calls for any number of paths.
 */
export async function resolvePaths(paths: readonly StorePath[], target: NixStore): Promise<PathResolution[]> {
  const isDrv = (p: StorePath) => p.endsWith('.drv');
  // Nix 2.8's path-info would answer for a .drv's outputs, so .drv files never reach it.
  const infos = await pathInfos(paths.filter((p) => !isDrv(p)), target);
  const derivers = [...new Set([...infos.values()].flatMap((i) => (i?.deriver ? [i.deriver] : [])))];
  const invalid = await invalidPaths(derivers, target);
  const present = derivers.filter((drv) => !invalid.has(drv));
  const declared = await derivationOutputs(present, target);
  return paths.map((path): PathResolution => {
    if (isDrv(path)) return { path, error: `${path} is a derivation, not a build output: attest its outputs (nix-store -q --outputs ${path})`, noDeriver: false };
    const info = infos.get(path);
    if (!info) return { path, error: `${path} is not in the store${target.store ? ` ${target.store}` : ''}`, noDeriver: false };
    if (!info.deriver) {
      return { path, error: `${path} has no known deriver (a source added to the store, or substituted without one): only build outputs can be attested`, noDeriver: true };
    }
    const outputs = declared.get(info.deriver);
    if (!outputs) {
      return { path, error: `${path}: its derivation ${info.deriver} is not in the store (garbage-collected?), so its output name is unknown; re-instantiate it (nix-instantiate) and retry`, noDeriver: false };
    }
    const outputName = outputNames(outputs).get(path);
    if (outputName === undefined) return { path, error: `${path} is not an output of its recorded deriver ${info.deriver}`, noDeriver: false };
    return { path, output: { drvPath: info.deriver, outputName, outPath: path, narHash: info.narHash, narSize: info.narSize, references: info.references } };
  });
}
