/**
 * Benchmark: `nix-quorum nar hash DIR` against `nix hash path DIR` on the same tree, same run.
 *
 *   npm run build && node dist/bench/nar-hash.js [--size-mb 1024] [--runs 3] [--cli dist/src/cli/main.js]
 *
 * Builds a tree of about --size-mb MiB in a temp dir (three quarters in four big files, the
 * rest in 0-32 KiB files, 100 per directory, plus executables and symlinks), runs each
 * contender once to warm the page cache, then --runs times in turn, and prints median and best
 * wall times, peak RSS (from /usr/bin/time, else our own child's resource usage) and the ratio
 * our speed / Nix's speed from the medians (goal >= 0.8). Contenders: nix, cli (the command
 * above), lib (hashPath in a bare Node process, i.e. without the CLI's start-up). All must
 * print the same hash.
 */
import { spawnSync } from 'node:child_process';
import { createCipheriv } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseNarHash } from '../src/nix/hash.js';

const MIB = 1024 * 1024;
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

interface Options {
  sizeMb: number;
  runs: number;
  cli: string;
}

function parseArgs(argv: string[]): Options {
  const options: Options = { sizeMb: 1024, runs: 3, cli: join(repoRoot, 'dist/src/cli/main.js') };
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i], argv[i + 1]];
    if (value === undefined) throw new Error(`${flag} needs a value`);
    if (flag === '--size-mb') options.sizeMb = positiveInt(flag, value);
    else if (flag === '--runs') options.runs = positiveInt(flag, value);
    else if (flag === '--cli') options.cli = resolve(value);
    else throw new Error(`unknown option ${flag}; use --size-mb N, --runs N, --cli PATH`);
  }
  if (options.runs < 2) throw new Error('--runs must be at least 2');
  return options;
}

function positiveInt(flag: string, value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${flag} must be a positive integer, got ${value}`);
  return n;
}

/** Deterministic incompressible bytes (AES-CTR keystream), fast enough for a GiB. */
function makeBytes(seed: number): (size: number) => Buffer {
  const key = Buffer.alloc(16);
  key.writeUInt32LE(seed, 0);
  const cipher = createCipheriv('aes-128-ctr', key, Buffer.alloc(16));
  return (size) => cipher.update(Buffer.alloc(size));
}

function buildTree(root: string, sizeMb: number): { files: number; bytes: number } {
  const bytesOf = makeBytes(sizeMb);
  const total = sizeMb * MIB;
  const bigEach = Math.floor((total * 3) / 4 / 4);
  let files = 0;
  let bytes = 0;
  mkdirSync(join(root, 'big'));
  for (let i = 0; i < 4; i++) {
    const file = join(root, 'big', `blob-${i}.bin`);
    writeFileSync(file, '');
    for (let done = 0; done < bigEach; done += 64 * MIB) {
      writeFileSync(file, bytesOf(Math.min(64 * MIB, bigEach - done)), { flag: 'a' });
    }
    files++;
    bytes += bigEach;
  }
  // Small files: sizes cycle through 0..32 KiB (odd sizes exercise padding), 100 per directory.
  let dir = '';
  for (let i = 0; bytes < total; i++) {
    if (i % 100 === 0) {
      dir = join(root, 'share', `d${String(Math.floor(i / 100)).padStart(4, '0')}`);
      mkdirSync(dir, { recursive: true });
      symlinkSync('../../big/blob-0.bin', join(dir, 'link'));
    }
    const size = Math.min((i * 7919) % (32 * 1024 + 1), total - bytes);
    const file = join(dir, `f${i}`);
    writeFileSync(file, bytesOf(size));
    if (i % 10 === 0) chmodSync(file, 0o755);
    files++;
    bytes += size;
  }
  return { files, bytes };
}

interface Run {
  seconds: number;
  maxRssKb: number | undefined;
  output: string;
}

const haveGnuTime = existsSync('/usr/bin/time');

/** Runs a command and measures wall time and, where possible, its peak RSS. */
function timed(cmd: string, args: string[], env: NodeJS.ProcessEnv, rssFile: string): Run {
  let argv = [cmd, ...args];
  if (haveGnuTime) argv = ['/usr/bin/time', '-f', '%M', '-o', rssFile, ...argv];
  else if (cmd === process.execPath) {
    // No GNU time: let our own Node child report its peak RSS (kilobytes) on exit.
    const script = `import fs from 'node:fs'; process.on('exit', () => fs.writeFileSync(${JSON.stringify(rssFile)}, String(process.resourceUsage().maxRSS)));`;
    argv = [cmd, '--import', `data:text/javascript,${encodeURIComponent(script)}`, ...args];
  }
  const started = process.hrtime.bigint();
  const child = spawnSync(argv[0]!, argv.slice(1), { env, encoding: 'utf8', maxBuffer: MIB });
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  if (child.status !== 0) throw new Error(`${argv.join(' ')} failed (${child.status}): ${child.stderr}`);
  let maxRssKb: number | undefined;
  if (existsSync(rssFile)) {
    maxRssKb = Number(readFileSync(rssFile, 'utf8').trim().split('\n').pop());
    rmSync(rssFile);
  }
  return { seconds, maxRssKb, output: child.stdout.trim() };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

function main(): void {
  const options = parseArgs(process.argv.slice(2));
  if (!existsSync(options.cli)) throw new Error(`${options.cli} does not exist; run npm run build first`);
  const work = mkdtempSync(join(tmpdir(), 'nq-bench-nar-'));
  try {
    const tree = join(work, 'tree');
    mkdirSync(tree);
    const rssFile = join(work, 'rss');
    const built = buildTree(tree, options.sizeMb);
    console.log(`tree: ${built.files} files, ${(built.bytes / MIB).toFixed(0)} MiB in ${tree}`);

    const nixEnv = { ...process.env, NIX_REMOTE: 'local', NIX_CONFIG: 'experimental-features = nix-command' };
    // "lib" calls hashPath in a bare Node process: the same work as the CLI without its start-up
    // (loading every subcommand's modules), which the CLI's own figure includes.
    const library = pathToFileURL(join(repoRoot, 'dist/src/nix/nar/index.js')).href;
    const libScript = `const { hashPath } = await import(${JSON.stringify(library)}); console.log((await hashPath(process.argv[1])).narHash);`;
    const contenders: Record<'nix' | 'cli' | 'lib', () => Run> = {
      nix: () => timed('nix', ['hash', 'path', '--base32', '--type', 'sha256', tree], nixEnv, rssFile),
      cli: () => timed(process.execPath, [options.cli, 'nar', 'hash', tree], process.env, rssFile),
      lib: () => timed(process.execPath, ['--input-type=module', '-e', libScript, tree], process.env, rssFile),
    };
    const names = Object.keys(contenders) as (keyof typeof contenders)[];
    // Warm-up (page cache, Nix's and Node's own files), then alternate so drift hits all alike.
    const hashes = names.map((name) => contenders[name]().output);
    const narHash = parseNarHash(`sha256:${hashes[0]}`);
    for (const [i, name] of names.entries()) {
      const hash = i === 0 ? narHash : parseNarHash(hashes[i]!);
      if (hash !== narHash) throw new Error(`${name} printed ${hash}, nix printed ${narHash}`);
    }
    console.log(`narHash: ${narHash} (identical)`);

    const runs: Record<string, Run[]> = { nix: [], cli: [], lib: [] };
    for (let i = 0; i < options.runs; i++) for (const name of names) runs[name]!.push(contenders[name]());
    const medians = new Map<string, number>();
    for (const name of names) {
      const list = runs[name]!;
      const seconds = list.map((r) => r.seconds);
      const rss = list.map((r) => r.maxRssKb).filter((v): v is number => v !== undefined);
      const rssText = rss.length > 0 ? `${(Math.max(...rss) / 1024).toFixed(1)} MiB peak RSS` : 'peak RSS not measurable here';
      const med = median(seconds);
      medians.set(name, med);
      console.log(
        `${name.padEnd(4)} median ${med.toFixed(3)} s  best ${Math.min(...seconds).toFixed(3)} s  ` +
          `(${(built.bytes / MIB / med).toFixed(0)} MiB/s)  ${rssText}  runs: ${seconds.map((x) => x.toFixed(3)).join(' ')}`,
      );
    }
    const nixMedian = medians.get('nix')!;
    console.log(`ratio cli (our speed / nix speed): ${(nixMedian / medians.get('cli')!).toFixed(2)}  (goal >= 0.80)`);
    console.log(`ratio lib (hashPath without CLI start-up): ${(nixMedian / medians.get('lib')!).toFixed(2)}`);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

main();
