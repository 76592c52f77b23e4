import type { Command } from 'commander';
import { startServer } from '../serve.js';
import { loadConfig } from '../config.js';
import { dataPaths } from '../dataDir.js';
import { formatPublicKey } from '../nix/keys.js';
import { action, runUntilSignalled } from './run.js';

export function registerServe(program: Command): void {
  program
    .command('serve')
    .description('run every server role: ledger, substituter, NAR store, web pages (embedded SQLite + filesystem by default)')
    .option('--data <dir>', 'data directory (default ./data; env NIX_QUORUM_DATA)')
    .option('--config <file>', 'JSON config file (env NIX_QUORUM_CONFIG)')
    .option('--listen <host:port>', 'address to listen on (default 127.0.0.1:8080; env NIX_QUORUM_LISTEN)')
    .action(action(async (opts: { data?: string; config?: string; listen?: string }) => {
      const flags: Record<string, unknown> = {};
      if (opts.data) flags.dataDir = opts.data;
      if (opts.listen) flags.listen = opts.listen;
      const config = loadConfig({ file: opts.config, flags });
      const running = await startServer(config);
      const { url, service } = running;
      runUntilSignalled(
        [
          `nix-quorum serving on ${url}`,
          `  admin token:  ${dataPaths(config.dataDir).adminToken}`,
          `  log key:      ${service.noteVerifierText}`,
          'Clients add to nix.conf:',
          `  extra-substituters = ${url}`,
          `  extra-trusted-public-keys = ${formatPublicKey(service.cacheKey.publicKey)}`,
        ],
        () => running.close(),
      );
    }));
}
