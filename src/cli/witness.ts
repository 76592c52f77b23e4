import { InvalidArgumentError, type Command } from 'commander';
import { loadConfig } from '../config.js';
import { createLogger } from '../log.js';
import { startWitness } from '../witness/server.js';
import { action, runUntilSignalled } from './run.js';

/** `--log ORIGIN=VKEY`: the origin may hold '=' (it is a URL-ish string); the vkey never does before its base64. */
function logFlag(value: string, previous: Array<{ origin: string; vkey: string }>): Array<{ origin: string; vkey: string }> {
  const at = value.lastIndexOf('=', value.search(/\+[0-9a-f]{8}\+/));
  if (at <= 0) throw new InvalidArgumentError('it must be ORIGIN=VKEY, e.g. quorum.example.org/log=quorum.example.org/log+1a2b3c4d+AU…');
  return [...previous, { origin: value.slice(0, at), vkey: value.slice(at + 1) }];
}

export function registerWitness(program: Command): void {
  program
    .command('witness')
    .description('run a C2SP tlog-witness: cosign checkpoints of the configured logs only if each extends the last one it cosigned (POST /add-checkpoint)')
    .option('--data <dir>', 'data directory: witness.sqlite and the key DATA/witness-key.{secret,vkey} (default ./data; env NIX_QUORUM_DATA)')
    .option('--config <file>', 'JSON config file, key "witness": {"name", "logs": [{"origin", "vkey"}]} (env NIX_QUORUM_CONFIG)')
    .option('--listen <host:port>', 'address to listen on (default 127.0.0.1:8080; env NIX_QUORUM_LISTEN)')
    .option('--name <name>', 'the witness key name on first start, e.g. witness.example.org/w1 (default nix-quorum-witness-<random>)')
    .option('--log <origin=vkey>', 'a log to witness: its checkpoint origin line and its C2SP vkey (GET /api/v1/log/key); repeat for more logs; replaces witness.logs of the config file', logFlag, [])
    .action(action(async (opts: { data?: string; config?: string; listen?: string; name?: string; log: Array<{ origin: string; vkey: string }> }) => {
      const flags: Record<string, unknown> = {};
      if (opts.data) flags.dataDir = opts.data;
      if (opts.listen) flags.listen = opts.listen;
      const witness: Record<string, unknown> = {};
      if (opts.name) witness.name = opts.name;
      if (opts.log.length > 0) witness.logs = opts.log;
      if (Object.keys(witness).length > 0) flags.witness = witness;
      const config = loadConfig({ file: opts.config, flags });
      const running = await startWitness(config, createLogger(config.logLevel));
      runUntilSignalled(
        [
          `nix-quorum witness on ${running.url}`,
          `  witness key:  ${running.vkey}`,
          ...config.witness.logs.map((l) => `  witnessing:   ${l.origin}`),
          'Ledgers add to their config:',
          `  "ledger": {"witnesses": [{"url": "${running.url}", "vkey": "${running.vkey}"}]}`,
        ],
        () => running.close(),
      );
    }));
}
