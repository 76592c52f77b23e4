import type { Command } from 'commander';
import { existsSync } from 'node:fs';
import { writeFileDurable } from '../dataDir.js';
import { QuorumError } from '../errors.js';
import { formatPublicKey, formatSecretKey, generateSecretKey } from '../nix/keys.js';
import { action } from './run.js';

export function registerKeygen(program: Command): void {
  program
    .command('keygen')
    .description('generate a Nix-compatible Ed25519 key pair (same format as nix-store --generate-binary-cache-key)')
    .argument('<name>', 'key name, e.g. builder1.example.org-1')
    .requiredOption('--secret <file>', 'where to write the secret key (mode 0600)')
    .requiredOption('--public <file>', 'where to write the public key')
    .option('--force', 'overwrite existing files')
    .action(action((name: string, opts: { secret: string; public: string; force?: boolean }) => {
      for (const file of [opts.secret, opts.public]) {
        if (existsSync(file) && !opts.force) throw new QuorumError('exists', `${file} already exists: pass --force to overwrite it`);
      }
      const key = generateSecretKey(name);
      writeFileDurable(opts.secret, formatSecretKey(key), 0o600);
      writeFileDurable(opts.public, formatPublicKey(key.publicKey), 0o644);
      process.stdout.write(`${formatPublicKey(key.publicKey)}\n`);
    }));
}
