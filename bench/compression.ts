/**
 * Benchmark: compression of NARs at rest. Ratio and single-core speed of every method and a range
 * of levels we offer (Node's zlib), against `xz -6` (what `nix copy` and cache.nixos.org use),
 * measured on the same bytes in the same run.
 *
 *   npm run build && node dist/bench/compression.js [--per-input-mib 32] [--input DIR]... [--levels 'gzip:1,6,9;br:1,4,5,6,9,11'] [--runs 3]
 *
 * The sample is real NAR data: `nix-store --dump` of each --input (default /usr/bin: ELF
 * executables, /usr/lib/python3.11: scripts and bytecode, /usr/include: C headers), the first
 * --per-input-mib MiB of each, concatenated. Everything runs from memory so the disk is not
 * measured; each figure is the fastest of --runs runs (one run for anything slower than 20 s). Prints a Markdown table: ratio (NAR bytes / compressed bytes), size relative to xz -6,
 * compression and decompression MB/s (of NAR bytes), and compression speed relative to xz -6.
 */
import { spawn, spawnSync } from 'node:child_process';
import { cpus } from 'node:os';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { parseArgs } from 'node:util';
import { COMPRESSION_LEVELS, compressStream, decompressStream, type CompressionMethod } from '../src/blobstore/compression.js';

const { values } = parseArgs({
  options: {
    'per-input-mib': { type: 'string', default: '32' },
    input: { type: 'string', multiple: true },
    levels: { type: 'string', default: 'gzip:1,6,9;br:1,4,5,6,9,11' },
    runs: { type: 'string', default: '3' },
  },
});
const runs = Number(values.runs);
/** Repeats stop once a measurement has taken this long in total: slow levels are run once. */
const BUDGET_SECONDS = 20;
const MiB = 1024 * 1024;
const perInput = Number(values['per-input-mib']) * MiB;
const inputs = values.input?.length ? values.input : ['/usr/bin', '/usr/lib/python3.11', '/usr/include'];
const levels = values.levels.split(';').map((spec) => {
  const [method, list] = spec.split(':') as [Exclude<CompressionMethod, 'none'>, string];
  if (!(method in COMPRESSION_LEVELS)) throw new Error(`--levels: unknown method ${method}`);
  return { method, levels: list.split(',').map(Number) };
});

/** The first `limit` bytes of `nix-store --dump path`. */
async function dumpPrefix(path: string, limit: number): Promise<Buffer> {
  // stderr is ignored: stopping early makes nix-store complain about the broken pipe.
  const child = spawn('nix-store', ['--dump', path], { stdio: ['ignore', 'pipe', 'ignore'] });
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of child.stdout as AsyncIterable<Buffer>) {
    chunks.push(chunk);
    total += chunk.length;
    if (total >= limit) break;
  }
  child.kill();
  if (total === 0) throw new Error(`nix-store --dump ${path} produced nothing`);
  return Buffer.concat(chunks).subarray(0, limit);
}

/** Streams `data` through `transform` in 1 MiB chunks; returns output bytes and seconds. */
async function timed(data: Buffer, transform: NodeJS.ReadWriteStream): Promise<{ output: Buffer; seconds: number }> {
  const chunks: Buffer[] = [];
  const start = process.hrtime.bigint();
  await pipeline(
    Readable.from(
      (function* () {
        for (let offset = 0; offset < data.length; offset += MiB) yield data.subarray(offset, offset + MiB);
      })(),
    ),
    transform,
    new Writable({
      write(chunk: Buffer, _encoding, done) {
        chunks.push(chunk);
        done();
      },
    }),
  );
  return { output: Buffer.concat(chunks), seconds: Number(process.hrtime.bigint() - start) / 1e9 };
}

function timedCommand(command: string, args: string[], input: Buffer): { output: Buffer; seconds: number } {
  const start = process.hrtime.bigint();
  const result = spawnSync(command, args, { input, maxBuffer: 2 * sample.length + MiB });
  if (result.status !== 0) throw new Error(`${command} ${args.join(' ')} failed: ${result.stderr}`);
  return { output: result.stdout, seconds: Number(process.hrtime.bigint() - start) / 1e9 };
}

/** The fastest of up to --runs repetitions (the machine may be shared; the best run is the least disturbed). */
async function fastest(measure: () => Promise<{ output: Buffer; seconds: number }> | { output: Buffer; seconds: number }): Promise<{ output: Buffer; seconds: number }> {
  let best = await measure();
  let spent = best.seconds;
  for (let run = 1; run < runs && spent < BUDGET_SECONDS; run++) {
    const next = await measure();
    spent += next.seconds;
    if (next.seconds < best.seconds) best = next;
  }
  return best;
}

interface Row {
  name: string;
  size: number;
  compressSeconds: number;
  decompressSeconds: number;
}

const sample = Buffer.concat(await Promise.all(inputs.map((input) => dumpPrefix(input, perInput))));
const mb = sample.length / 1e6;
console.error(`sample: ${(sample.length / MiB).toFixed(1)} MiB of NAR from ${inputs.join(', ')}`);

const xzPacked = await fastest(() => timedCommand('xz', ['-6', '-T1', '-c'], sample));
const xzUnpacked = await fastest(() => timedCommand('xz', ['-d', '-T1', '-c'], xzPacked.output));
if (!xzUnpacked.output.equals(sample)) throw new Error('xz did not round-trip');
const peer: Row = { name: 'xz -6 (peer: nix copy default, CLI)', size: xzPacked.output.length, compressSeconds: xzPacked.seconds, decompressSeconds: xzUnpacked.seconds };

const rows: Row[] = [];
for (const { method, levels: list } of [{ method: 'none' as const, levels: [undefined] }, ...levels]) {
  for (const level of list) {
    const packed = await fastest(() => timed(sample, compressStream(method, level)));
    const unpacked = await fastest(() => timed(packed.output, decompressStream(method)));
    if (!unpacked.output.equals(sample)) throw new Error(`${method} ${level} did not round-trip`);
    const row = { name: level === undefined ? method : `${method} ${level}`, size: packed.output.length, compressSeconds: packed.seconds, decompressSeconds: unpacked.seconds };
    rows.push(row);
    console.error(`  ${row.name}: done`);
  }
}

const fmt = (n: number, digits = 1) => n.toFixed(digits);
console.log(
  `Sample: ${fmt(sample.length / MiB)} MiB of NAR (${inputs.map((input) => `${input} first ${values['per-input-mib']} MiB`).join(', ')}); ` +
    `CPU: ${cpus()[0]?.model ?? 'unknown'} (${cpus().length} cores), one core per stream, fastest of ${runs} runs; Node ${process.version}.\n`,
);
console.log('| method | ratio | size vs xz -6 | compress MB/s | vs xz -6 | decompress MB/s |');
console.log('|---|---:|---:|---:|---:|---:|');
for (const row of [...rows, peer]) {
  const compressRate = mb / row.compressSeconds;
  console.log(
    `| ${row.name} | ${fmt(sample.length / row.size, 2)} | ${fmt(row.size / peer.size, 2)}× | ${fmt(compressRate)} | ${fmt(compressRate / (mb / peer.compressSeconds), 2)}× | ${fmt(mb / row.decompressSeconds)} |`,
  );
}
