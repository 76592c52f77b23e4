import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { PROJECT_ROOT } from '../../src/paths.js';
import { chrootBuildFlags, nix, nixEnv } from './nix.js';
import { CLI, runAsync, type Ran } from './server.js';

export interface ClosureSpec {
  /** Chain d0 … d<count-1>, each referencing the one before (at least 2). */
  count: number;
  /**
   * Mixed into every derivation. Different salts give different store paths (independent tests);
   * the same salt gives the same derivations, e.g. for several builders building one closure.
   */
  salt: string;
  /** Add `noise`: an output holding the build time and random bytes, different on every build. */
  nonReproducible?: boolean;
  /** Add `big`: an output holding one file of this many zero bytes. */
  bigBytes?: number;
}

export interface Closure {
  /** The .nix file: an attribute set of derivations, so `nix-build FILE` builds them all. */
  file: string;
  /** Attribute names: d0 …, `split` (outputs out and dev), then `noise` and `big` if asked for. */
  attrs: string[];
}

const nixString = (s: string) => JSON.stringify(s).replace(/\$\{/g, '\\${');

/**
 * Writes a .nix file of small derivations with references between them: a chain d0 → … → d<n-1>,
 * and `split`, a two-output derivation whose `dev` references d0 and whose `out` references `dev`
 * and the chain's end.
 * Builders run with an empty PATH, so scripts call /bin and /usr/bin tools by full path.
 */
export function writeClosure(dir: string, spec: ClosureSpec): Closure {
  if (spec.count < 2) throw new Error('a closure needs at least 2 chained derivations');
  const attrs: string[] = [];
  const lines = [
    'let',
    `  salt = ${nixString(spec.salt)};`,
    '  mk = name: script: derivation { inherit name salt; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" script ]; };',
    '  d0 = mk "nq-d0" "/bin/mkdir $out && /bin/echo d0 $salt > $out/data";',
  ];
  attrs.push('d0');
  for (let i = 1; i < spec.count; i++) {
    lines.push(`  d${i} = mk "nq-d${i}" "/bin/mkdir -p $out/sub && /bin/echo \${d${i - 1}} > $out/sub/ref && /bin/echo d${i} $salt > $out/data";`);
    attrs.push(`d${i}`);
  }
  const last = `d${spec.count - 1}`;
  lines.push(
    '  split = derivation {',
    '    name = "nq-split"; inherit salt; system = builtins.currentSystem; builder = "/bin/sh"; outputs = [ "out" "dev" ];',
    `    args = [ "-c" "/bin/mkdir $out $dev && /bin/echo \${d0} > $dev/ref && /bin/echo $dev \${${last}} > $out/refs && /bin/ln -s refs $out/link" ];`,
    '  };',
  );
  attrs.push('split');
  if (spec.nonReproducible) {
    lines.push('  noise = mk "nq-noise" "/bin/mkdir $out && /bin/date +%s%N > $out/time && /usr/bin/head -c 32 /dev/urandom > $out/random";');
    attrs.push('noise');
  }
  if (spec.bigBytes !== undefined) {
    lines.push(`  big = mk "nq-big" "/bin/mkdir $out && /usr/bin/head -c ${Math.floor(spec.bigBytes)} /dev/zero > $out/blob";`);
    attrs.push('big');
  }
  lines.push('in {', ...attrs.map((a) => `  inherit ${a};`), '}', '');
  const file = join(dir, `closure-${spec.salt.replace(/[^A-Za-z0-9]/g, '_')}.nix`);
  writeFileSync(file, lines.join('\n'));
  return { file, attrs };
}

const shellQuote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/** The README's hook script (examples/nix-quorum-hook.sh): every test build runs it. */
export const EXAMPLE_HOOK = join(PROJECT_ROOT, 'examples', 'nix-quorum-hook.sh');

/** A directory holding `nix-quorum`, running this checkout's build, to put on PATH (tests run after `npm run build`). */
export function cliBinDir(dir: string): string {
  const bin = join(dir, 'cli-bin');
  mkdirSync(bin, { recursive: true });
  writeFileSync(join(bin, 'nix-quorum'), `#!/bin/sh\nexec ${shellQuote(process.execPath)} ${shellQuote(CLI)} "$@"\n`, { mode: 0o755 });
  return bin;
}

/**
 * A post-build-hook that runs the README's hook script with the given environment (e.g.
 * NIX_QUORUM_KEY_FILE, NIX_QUORUM_SPOOL) and this checkout's CLI first on PATH. Nix runs hooks with
 * its own environment, which already carries `store = …` in NIX_CONFIG for a chroot store.
 */
export function writeHookScript(file: string, env: Record<string, string>): string {
  const exports = Object.entries(env).map(([k, v]) => `export ${k}=${shellQuote(v)}`);
  const bin = cliBinDir(dirname(file));
  writeFileSync(file, ['#!/bin/sh', ...exports, `export PATH=${shellQuote(bin)}:"$PATH"`, `exec /bin/sh ${shellQuote(EXAMPLE_HOOK)}`, ''].join('\n'));
  chmodSync(file, 0o755);
  return file;
}

export interface BuildResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/**
 * `nix-build` of `file` into the chroot store `store`, with `hook` as post-build-hook if given.
 * Runs without NIX_CONFIG unless `env` sets one: Nix 2.8 hands its settings (among them
 * `store = …`) to the hook in NIX_CONFIG only when the caller's environment has none.
 */
export function chrootBuild(store: string, file: string, options: { hook?: string; args?: string[]; env?: NodeJS.ProcessEnv } = {}): BuildResult {
  const args = ['--store', store, ...chrootBuildFlags, '--no-out-link', ...(options.hook ? ['--option', 'post-build-hook', options.hook] : []), ...(options.args ?? []), file];
  const { NIX_CONFIG: _, ...env } = nixEnv;
  const r = spawnSync('nix-build', args, { env: { ...env, ...options.env }, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Every output path (all outputs of every derivation) of `file`, as the chroot store `store` instantiates it. */
export function closureOutputs(store: string, file: string): { drvs: string[]; outputs: string[] } {
  const drvs = nix('nix-instantiate', ['--store', store, file]).split('\n').filter(Boolean);
  const outputs = nix('nix-store', ['--store', store, '-q', '--outputs', ...drvs]).split('\n').filter(Boolean);
  return { drvs, outputs: [...new Set(outputs)].sort() };
}

/**
 * `nix-store -r` into the client store `clientStore`, substituting only from `url` and trusting only
 * `cacheKey`; Nix checks every NAR hash. Nix remembers "not in this cache" per user for an hour;
 * these clients ask again at once.
 */
export function substitute(clientStore: string, url: string, cacheKey: string, paths: string[]): Promise<Ran> {
  return runAsync(
    'nix-store',
    ['--store', clientStore, '-r', ...paths, '--option', 'substituters', url, '--option', 'trusted-public-keys', cacheKey, '--option', 'build-users-group', '', '--option', 'narinfo-cache-negative-ttl', '0', '--max-jobs', '0'],
    nixEnv,
  );
}
