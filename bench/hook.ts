/**
 * Benchmark: what `nix-quorum hook` adds to each build, against a no-op shell hook in the same run.
 *
 *   npm run build && node dist/bench/hook.js [--tiny 30] [--big 5] [--big-bytes 1073741824] [--cli dist/src/cli/main.js]
 *
 * Builds fresh derivations (a salt per sample) into two chroot stores, one per hook, alternating
 * between them: --tiny samples with a one-line output and --big samples with a --big-bytes output.
 * Nix runs each post-build-hook synchronously and waits for it, so the hook's cost is the hook's
 * own wall time; both hooks are wrapped in the same shell timer, which appends nanoseconds per run.
 * Prints median and p95 per hook and size, what our hook adds over the no-op, and how that added
 * cost for the big output compares with the tiny one (the hook must not read NARs: ratio ~1).
 * Checks that our hook queued one spool entry per build, so the figures are of the working path.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { formatSecretKey, generateSecretKey } from '../src/nix/keys.js';
import { CLI_PATH } from './common.js';

interface Options {
  tiny: number;
  big: number;
  bigBytes: number;
  cli: string;
}

function parseArgs(argv: string[]): Options {
  const options: Options = { tiny: 30, big: 5, bigBytes: 1024 * 1024 * 1024, cli: CLI_PATH };
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i], argv[i + 1]];
    if (value === undefined) throw new Error(`${flag} needs a value`);
    if (flag === '--tiny') options.tiny = positiveInt(flag, value);
    else if (flag === '--big') options.big = positiveInt(flag, value);
    else if (flag === '--big-bytes') options.bigBytes = positiveInt(flag, value);
    else if (flag === '--cli') options.cli = resolve(value);
    else throw new Error(`unknown option ${flag}; use --tiny N, --big N, --big-bytes BYTES, --cli PATH`);
  }
  return options;
}

function positiveInt(flag: string, value: string): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n <= 0) throw new Error(`${flag} must be a positive integer, got ${value}`);
  return n;
}

const shellQuote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

type Hook = 'noop' | 'quorum';
type Size = 'tiny' | 'big';

/** A hook script timed by the same shell wrapper whatever it runs. */
function writeTimedHook(file: string, timings: string, body: string[]): string {
  writeFileSync(file, ['#!/bin/sh', 'start=$(date +%s%N)', ...body, 'end=$(date +%s%N)', `echo $((end - start)) >> ${shellQuote(timings)}`, 'exit 0', ''].join('\n'));
  chmodSync(file, 0o755);
  return file;
}

function derivationFile(dir: string, salt: string, bytes: number | null): string {
  const script = bytes === null ? `/bin/echo ${salt} > $out` : `/usr/bin/head -c ${bytes} /dev/zero > $out`;
  const file = join(dir, `${salt}.nix`);
  writeFileSync(file, `derivation { name = "bench-${salt}"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" ${JSON.stringify(script)} ]; }\n`);
  return file;
}

function build(store: string, file: string, hook: string): void {
  const { NIX_CONFIG: _, ...env } = process.env;
  const r = spawnSync(
    'nix-build',
    ['--store', store, '--option', 'sandbox', 'true', '--option', 'build-users-group', '', '--option', 'substituters', '', '--option', 'extra-sandbox-paths', '/bin /lib /lib64 /usr', '--option', 'post-build-hook', hook, '--no-out-link', file],
    { env: { ...env, NIX_REMOTE: 'local' }, encoding: 'utf8' },
  );
  if (r.status !== 0) throw new Error(`nix-build ${file} failed: ${r.stderr}`);
  if (/nix-quorum hook: ERROR/.test(r.stderr)) throw new Error(`the hook failed, the figures would be of the error path: ${r.stderr}`);
}

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!;
}

const ms = (ns: number) => (ns / 1e6).toFixed(1);

function main(): void {
  const options = parseArgs(process.argv.slice(2));
  const dir = mkdtempSync(join(tmpdir(), 'nq-bench-hook-'));
  try {
    const keyFile = join(dir, 'builder.secret');
    writeFileSync(keyFile, formatSecretKey(generateSecretKey('bench-builder-1')), { mode: 0o600 });
    const spool = join(dir, 'spool');
    const timings = (hook: Hook, size: Size) => join(dir, `timings-${hook}-${size}`);
    const hookFor = (hook: Hook, size: Size) =>
      writeTimedHook(
        join(dir, `hook-${hook}-${size}.sh`),
        timings(hook, size),
        hook === 'noop' ? [':'] : [`NIX_QUORUM_KEY_FILE=${shellQuote(keyFile)} NIX_QUORUM_SPOOL=${shellQuote(spool)} ${shellQuote(process.execPath)} ${shellQuote(options.cli)} hook`],
      );
    const samples: Array<[Size, number]> = [
      ['tiny', options.tiny],
      ['big', options.big],
    ];
    let quorumBuilds = 0;
    for (const [size, count] of samples) {
      for (let i = 0; i < count; i++) {
        // Alternate which hook goes first, so drift in machine load hits both alike.
        const order: Hook[] = i % 2 === 0 ? ['noop', 'quorum'] : ['quorum', 'noop'];
        for (const hook of order) {
          const file = derivationFile(dir, `${hook}-${size}-${i}`, size === 'big' ? options.bigBytes : null);
          build(join(dir, `store-${hook}`), file, hookFor(hook, size));
          if (hook === 'quorum') quorumBuilds++;
          // A GiB output per sample adds up: drop it once measured.
          if (size === 'big') spawnSync('nix-store', ['--store', join(dir, `store-${hook}`), '--gc'], { env: { ...process.env, NIX_REMOTE: 'local' }, stdio: 'ignore' });
        }
        process.stderr.write('.');
      }
    }
    process.stderr.write('\n');
    const queued = readdirSync(spool).filter((f) => f.endsWith('.json')).length;
    if (queued !== quorumBuilds) throw new Error(`the hook queued ${queued} entries for ${quorumBuilds} builds`);

    const stats = (hook: Hook, size: Size) => {
      const values = readFileSync(timings(hook, size), 'utf8').trim().split('\n').map(Number).sort((a, b) => a - b);
      return { n: values.length, median: quantile(values, 0.5), p95: quantile(values, 0.95) };
    };
    console.log(`post-build-hook wall time per build (${options.tiny} tiny, ${options.big} x ${options.bigBytes} bytes; Node ${process.version})`);
    console.log('| output | hook | samples | median ms | p95 ms |');
    console.log('| --- | --- | --- | --- | --- |');
    const added: Record<Size, number> = { tiny: 0, big: 0 };
    for (const [size] of samples) {
      const noop = stats('noop', size);
      const quorum = stats('quorum', size);
      console.log(`| ${size} | no-op sh | ${noop.n} | ${ms(noop.median)} | ${ms(noop.p95)} |`);
      console.log(`| ${size} | nix-quorum | ${quorum.n} | ${ms(quorum.median)} | ${ms(quorum.p95)} |`);
      added[size] = quorum.median - noop.median;
      console.log(`| ${size} | **added** | | **${ms(quorum.median - noop.median)}** | ${ms(quorum.p95 - noop.p95)} |`);
    }
    console.log(`added median, big / tiny: ${(added.big / added.tiny).toFixed(2)} (1.00 = independent of NAR size)`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main();
