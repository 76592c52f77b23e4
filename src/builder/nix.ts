import { execFile, spawn, type ChildProcessByStdio } from 'node:child_process';
import type { Readable } from 'node:stream';
import { QuorumError } from '../errors.js';
import { parseNarHash, type NarHash } from '../nix/hash.js';
import { parseDrvPath, parseStorePath, type StorePath } from '../nix/storePath.js';

/**
 * The builder side reads Nix's own database through Nix's CLI, never by rehashing: Nix already
 * knows each output's narHash, narSize, references and deriver.
 *
 * `store` is the store URI to pass as `--store`, or null for whatever Nix's environment says
 * (NIX_REMOTE, NIX_CONFIG, nix.conf). Environment variables are always passed through unchanged,
 * so inside a post-build-hook Nix's `NIX_CONFIG` (which may carry `store = …`) keeps applying.
 */
export interface NixStore {
  store: string | null;
  env?: NodeJS.ProcessEnv;
}

/** Nix commands on a slow disk take ~10 ms; a minute means something is stuck (e.g. a held lock). */
const NIX_TIMEOUT_MS = 60_000;

/**
 * The store a post-build-hook runs against: Nix passes its whole configuration in NIX_CONFIG
 * (`key = value` lines, later lines win), including `store = …` when building into a chroot store.
 */
export function storeFromNixConfig(nixConfig: string | undefined): string | null {
  let store: string | null = null;
  for (const raw of (nixConfig ?? '').split('\n')) {
    const line = raw.replace(/#.*$/, '').trim();
    const m = /^store\s*=\s*(.*)$/.exec(line);
    if (m) store = m[1]!.trim() || null;
  }
  return store;
}

/**
 * The store to read, and no substituters: we only ever read what this store holds, and for a path
 * it lacks Nix 2.8 would otherwise try to substitute it (waiting on the network) before saying so.
 */
function storeArgs(target: NixStore): string[] {
  return [...(target.store === null ? [] : ['--store', target.store]), '--option', 'substituters', ''];
}

/** `nix …` with the new CLI enabled for this call only, so a NIX_CONFIG from Nix stays intact. */
function nixArgs(target: NixStore, args: string[]): string[] {
  return ['--extra-experimental-features', 'nix-command', ...storeArgs(target), ...args];
}

function runRaw(program: string, args: string[], target: NixStore): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    execFile(program, args, { env: target.env ?? process.env, timeout: NIX_TIMEOUT_MS, maxBuffer: 256 * 1024 * 1024, encoding: 'buffer' }, (error, stdout, stderr) => {
      if (!error) return resolve(stdout);
      const spawnFailed = (error as NodeJS.ErrnoException).code === 'ENOENT';
      const detail = spawnFailed ? `${program} is not installed or not on PATH` : (stderr.toString('utf8').trim().split('\n').slice(-3).join(' | ') || error.message);
      reject(new QuorumError('nix-failed', `${program} ${args.join(' ').slice(0, 300)}: ${detail}`, { cause: error }));
    });
  });
}

async function run(program: string, args: string[], target: NixStore): Promise<string> {
  return (await runRaw(program, args, target)).toString('utf8');
}

function parseJson(text: string, what: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new QuorumError('nix-failed', `${what} printed invalid JSON: ${(e as Error).message}`);
  }
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** What Nix's database records about a valid store path. */
export interface PathInfo {
  path: StorePath;
  narHash: NarHash;
  narSize: number;
  /** Full store paths, sorted. */
  references: StorePath[];
  deriver: StorePath | null;
}

/** Paths per Nix call, far below the kernel's limit on command-line length even for long names. */
const PATHS_PER_CALL = 2000;

/** Runs `call` on slices of `paths` one after another and concatenates the parsed answers. */
async function inSlices<T>(paths: readonly StorePath[], call: (slice: StorePath[]) => Promise<T[]>): Promise<T[]> {
  const out: T[] = [];
  for (let i = 0; i < paths.length; i += PATHS_PER_CALL) out.push(...(await call(paths.slice(i, i + PATHS_PER_CALL))));
  return out;
}

/**
 * `nix path-info --json`: one entry per path, null for a path the store does not hold. For a .drv,
 * Nix 2.8 answers about the derivation's outputs instead (see buildOutputs); ask invalidPaths
 * whether a .drv itself is there.
 */
export async function pathInfos(paths: readonly StorePath[], target: NixStore): Promise<Map<StorePath, PathInfo | null>> {
  const result = new Map<StorePath, PathInfo | null>();
  const items = await inSlices(paths, async (slice) => {
    const parsed = parseJson(await run('nix', nixArgs(target, ['path-info', '--json', ...slice]), target), 'nix path-info --json');
    if (!Array.isArray(parsed)) throw new QuorumError('nix-failed', 'nix path-info --json did not print an array');
    return parsed as unknown[];
  });
  for (const item of items) {
    if (!isObject(item)) throw new QuorumError('nix-failed', 'nix path-info --json printed a non-object entry');
    const path = parseStorePath(String(item.path), 'nix path-info path');
    if (item.valid === false) {
      result.set(path, null);
      continue;
    }
    const narSize = item.narSize;
    if (typeof narSize !== 'number' || !Number.isSafeInteger(narSize) || narSize <= 0) {
      throw new QuorumError('nix-failed', `nix path-info reports no usable narSize for ${path}`);
    }
    const references = Array.isArray(item.references) ? item.references.map((r) => parseStorePath(String(r), 'nix path-info references')) : [];
    result.set(path, {
      path,
      narHash: parseNarHash(String(item.narHash), 'nix path-info narHash'),
      narSize,
      references: [...new Set(references)].sort(),
      deriver: typeof item.deriver === 'string' && item.deriver !== '' ? parseDrvPath(item.deriver, 'nix path-info deriver') : null,
    });
  }
  return result;
}

/** Output name -> output path, per derivation, as the .drv files in the store declare them. */
export async function derivationOutputs(drvPaths: readonly StorePath[], target: NixStore): Promise<Map<StorePath, Map<string, StorePath>>> {
  const result = new Map<StorePath, Map<string, StorePath>>();
  const entries = await inSlices(drvPaths, async (slice) => {
    const parsed = parseJson(await run('nix', nixArgs(target, ['show-derivation', ...slice]), target), 'nix show-derivation');
    if (!isObject(parsed)) throw new QuorumError('nix-failed', 'nix show-derivation did not print an object');
    return Object.entries(parsed);
  });
  for (const [drv, body] of entries) {
    const outputs = new Map<string, StorePath>();
    const declared = isObject(body) && isObject(body.outputs) ? body.outputs : {};
    for (const [name, output] of Object.entries(declared)) {
      // Floating content-addressed outputs have no path until built; they are not in 2.8's default feature set.
      if (isObject(output) && typeof output.path === 'string') outputs.set(name, parseStorePath(output.path, `${drv} output ${name}`));
    }
    result.set(parseDrvPath(drv, 'nix show-derivation'), outputs);
  }
  return result;
}

/** The paths (any kind, .drv files too) that the store does not hold. */
export async function invalidPaths(paths: readonly StorePath[], target: NixStore): Promise<Set<StorePath>> {
  const invalid = await inSlices(paths, async (slice) => {
    const out = await run('nix-store', [...storeArgs(target), '--check-validity', '--print-invalid', ...slice], target);
    return out.split('\n').filter(Boolean).map((p) => parseStorePath(p, 'nix-store --check-validity'));
  });
  return new Set(invalid);
}

/** `nix-store -qR`: the closure of `paths`, each path once. */
export async function closure(paths: readonly StorePath[], target: NixStore): Promise<StorePath[]> {
  if (paths.length === 0) return [];
  const out = await run('nix-store', [...storeArgs(target), '-qR', ...paths], target);
  return out.split('\n').filter(Boolean).map((p) => parseStorePath(p, 'nix-store -qR'));
}

export type NarDumpProcess = ChildProcessByStdio<null, Readable, Readable>;

/**
 * The NAR of a store path as a stream, read through the store (`nix store dump-path`). Not
 * `nix-store --dump`: in Nix 2.8 that reads the path from the real filesystem and ignores --store,
 * so it cannot read a chroot store.
 */
export function spawnNarDump(path: StorePath, target: NixStore): NarDumpProcess {
  return spawn('nix', nixArgs(target, ['store', 'dump-path', path]), {
    env: target.env ?? process.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

/**
 * The build log Nix kept of a derivation (`nix-store --read-log`, which reads the store's own log
 * directory and asks no substituter), or null when there is none (e.g. keep-build-log = false).
 */
export async function readBuildLog(drvPath: StorePath, target: NixStore): Promise<Buffer | null> {
  try {
    return await runRaw('nix-store', [...storeArgs(target), '--read-log', drvPath], target);
  } catch (error) {
    if (error instanceof QuorumError && /is not available/.test(error.message)) return null;
    throw error;
  }
}
