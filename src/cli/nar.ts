import type { Command } from 'commander';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import { dumpNar, hashPath } from '../nix/nar/index.js';
import { action } from './run.js';

export function registerNar(program: Command): void {
  const nar = program.command('nar').description('NAR bytes and hashes of filesystem paths, exactly as Nix computes them');
  nar
    .command('dump')
    .description('write the NAR serialisation of PATH to stdout (like nix-store --dump)')
    .argument('<path>', 'file, directory or symlink')
    .action(action(async (path: string) => {
      await pipeline(Readable.from(dumpNar(path)), process.stdout);
    }));
  nar
    .command('hash')
    .description('print the NAR hash of PATH as sha256:<nix32> (like nix hash path --base32, with the type)')
    .argument('<path>', 'file, directory or symlink')
    .option('--size', 'also print the NAR size in bytes')
    .action(action(async (path: string, opts: { size?: boolean }) => {
      const { narHash, narSize } = await hashPath(path);
      process.stdout.write(opts.size ? `${narHash} ${narSize}\n` : `${narHash}\n`);
    }));
}
