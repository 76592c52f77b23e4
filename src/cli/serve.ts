import type { Command } from 'commander';
import { startServer } from '../serve.js';
import { loadConfig } from '../config.js';
import { QuorumError } from '../errors.js';
import { dataPaths } from '../dataDir.js';
import { formatPublicKey } from '../nix/keys.js';
import { clientNixConf, clientUrl } from '../substituter/clientConfig.js';
import { action, runUntilSignalled } from './run.js';

export function registerServe(program: Command): void {
  program
    .command('serve')
    .description('run every server role: ledger, substituter, NAR store, web pages (embedded SQLite + filesystem by default)')
    .option('--data <dir>', 'data directory (default ./data; env NIX_QUORUM_DATA)')
    .option('--config <file>', 'JSON config file (env NIX_QUORUM_CONFIG)')
    .option('--listen <host:port>', 'address to listen on (default 127.0.0.1:8080; env NIX_QUORUM_LISTEN)')
    .option('--public-url <url>', 'the URL clients use, e.g. https://quorum.example.org behind a reverse proxy; printed nix.conf lines use it (config publicUrl, env NIX_QUORUM_PUBLIC_URL)')
    .option('--follow <url>', 'run as a mirror: a verified read-only replica of the ledger at this URL (config follow.url)')
    .option('--log-key <vkey>', "with --follow: the followed log's verifier key, pinned (C2SP vkey; config follow.logKey)")
    .option('--witness <vkey>', 'with --follow: a witness whose cosignatures count (repeat for several; config follow.witnesses)', (v: string, all: string[] = []) => [...all, v])
    .option('--witness-threshold <m>', 'with --follow: how many of the witnesses must cosign each checkpoint (default: all given)', (v) => Number(v))
    .action(action(async (opts: { data?: string; config?: string; listen?: string; publicUrl?: string; follow?: string; logKey?: string; witness?: string[]; witnessThreshold?: number }) => {
      const flags: Record<string, unknown> = {};
      if (opts.data) flags.dataDir = opts.data;
      if (opts.listen) flags.listen = opts.listen;
      if (opts.publicUrl) flags.publicUrl = opts.publicUrl;
      if (opts.follow || opts.logKey || opts.witness || opts.witnessThreshold !== undefined) {
        if (!opts.follow || !opts.logKey) throw new QuorumError('bad-config', '--follow URL and --log-key VKEY go together: a mirror verifies the log it follows under a key you pinned', { field: 'follow' });
        flags.follow = { url: opts.follow, logKey: opts.logKey, witnesses: opts.witness ?? [], ...(opts.witnessThreshold !== undefined ? { witnessThreshold: opts.witnessThreshold } : {}) };
      }
      const config = loadConfig({ file: opts.config, flags });
      const running = await startServer(config);
      const { url, service } = running;
      const client = clientUrl(config.publicUrl, { host: config.listen.host, port: Number(new URL(url).port) });
      runUntilSignalled(
        [
          `nix-quorum serving on ${url}${config.follow ? `, a read-only mirror of ${config.follow.url}` : ''}`,
          `  admin token:  ${dataPaths(config.dataDir).adminToken}`,
          `  log key:      ${service.noteVerifierText}`,
          `Clients add to nix.conf${client.guessed ? ` (${client.url} is a guess: set publicUrl or --public-url to the URL clients use)` : ''}:`,
          ...clientNixConf(client.url, formatPublicKey(service.cacheKey.publicKey)).map((line) => `  ${line}`),
        ],
        () => running.close(),
      );
    }));
}
