import type { Command } from 'commander';
import { openClient, startClient } from '../client/client.js';
import { loadClientConfig } from '../client/config.js';
import { checkReport } from '../client/report.js';
import { QuorumError } from '../errors.js';
import { createLogger } from '../log.js';
import { parseHashPart, type HashPart } from '../nix/storePath.js';
import { clientNixConf } from '../substituter/clientConfig.js';
import { action, runUntilSignalled } from './run.js';
import { renderTable } from './table.js';

const repeat = (v: string, all: string[] = []) => [...all, v];
const whole = (v: string) => Number(v);

interface ClientOptions {
  config?: string;
  listen?: string;
  state?: string;
  ledger?: string[];
  logKey?: string;
  builder?: string[];
  threshold?: number;
  onConflict?: string;
  witness?: string[];
  witnessThreshold?: number;
  logLevel?: string;
  check?: string;
  json?: boolean;
}

/** A store path, its base name, or its hash part: the hash part. */
function hashPartOfArg(text: string): HashPart {
  const base = text.startsWith('/nix/store/') ? text.slice('/nix/store/'.length) : text;
  return parseHashPart(base.slice(0, 32), 'PATH');
}

export function registerClient(program: Command): void {
  program
    .command('client')
    .description('a local verifying substituter: Nix substitutes only what your own k-of-n builder keys agree on, proved by a log whose checkpoints your witnesses cosigned; trusts no server')
    .option('--config <file>', 'JSON config file: {"ledgers", "logKey", "builders", "threshold", "onConflict", "witnesses", "witnessThreshold"}; flags override it')
    .option('--listen <host:port>', 'address Nix reaches the client at (config listen; default 127.0.0.1:37515)')
    .option('--state <dir>', 'state directory: client key, newest verified checkpoint, evidence (config state; default ~/.local/state/nix-quorum/client)')
    .option('--ledger <url>', 'a nix-quorum server or mirror, asked in the order given (config ledgers; repeat)', repeat)
    .option('--log-key <vkey>', "the ledger's checkpoint key, pinned out of band (config logKey)")
    .option('--builder <name:base64>', 'a builder key you trust (config builders; repeat)', repeat)
    .option('--threshold <k>', 'how many of your builders must agree (config threshold)', whole)
    .option('--on-conflict <block|ignore>', 'block: any of your builders disagreeing withholds the path (config onConflict; default block)')
    .option('--witness <vkey>', 'a witness whose cosignatures count (config witnesses; repeat)', repeat)
    .option('--witness-threshold <m>', 'how many of the witnesses must cosign (config witnessThreshold; default all)', whole)
    .option('--log-level <level>', 'debug, info, warn or error (config logLevel; default info)')
    .option('--check <path>', 'verify one store path (or hash part), print the verdict and every step, exit 1 if it would be refused')
    .option('--json', 'with --check: print the report as JSON')
    .action(action(async (opts: ClientOptions) => {
      const flags: Record<string, unknown> = {};
      const set = (key: string, value: unknown) => {
        if (value !== undefined) flags[key] = value;
      };
      set('listen', opts.listen);
      set('state', opts.state);
      set('ledgers', opts.ledger);
      set('logKey', opts.logKey);
      set('builders', opts.builder);
      set('threshold', opts.threshold);
      set('onConflict', opts.onConflict);
      set('witnesses', opts.witness);
      set('witnessThreshold', opts.witnessThreshold);
      set('logLevel', opts.logLevel);
      if (opts.json && !opts.check) throw new QuorumError('bad-config', '--json goes with --check PATH', { field: 'json' });
      const config = loadClientConfig({ file: opts.config, flags });
      if (opts.check) return check(config, hashPartOfArg(opts.check), opts.json ?? false);
      const running = await startClient(config);
      runUntilSignalled(
        [
          `nix-quorum client on ${running.url}, verifying ${config.ledgers.join(', ')}`,
          `  client key:   ${running.publicKey}${running.state.created ? ` (new, in ${config.stateDir}/client-key.public)` : ''}`,
          `  policy:       ${config.threshold} of ${[...config.builders.keys()].join(', ')} (onConflict ${config.onConflict})${config.trust.witnesses ? `; checkpoints cosigned by ${config.trust.witnesses.threshold} of ${config.trust.witnesses.witnesses.map((w) => w.name).join(', ')}` : ''}`,
          'Point Nix at it in nix.conf (and trust no other key for these paths):',
          ...clientNixConf(running.url, running.publicKey).map((line) => `  ${line}`),
        ],
        () => running.close(),
      );
    }));
}

async function check(config: ReturnType<typeof loadClientConfig>, hashPart: HashPart, json: boolean): Promise<void> {
  const core = openClient(config, createLogger(json ? 'error' : 'warn'));
  try {
    const report = checkReport(await core.resolver.resolve(hashPart));
    if (report.verdict !== 'substitute') process.exitCode = 1;
    if (json) {
      process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
      return;
    }
    const lines = [
      `${report.verdict === 'substitute' ? 'SUBSTITUTE' : 'REFUSE'}: ${hashPart}${report.ledger ? ` (verified from ${report.ledger})` : ''}`,
      renderTable(report.steps, [
        { header: 'step', value: (s) => s.step, align: 'right' },
        { header: 'check', value: (s) => s.name },
        { header: 'result', value: (s) => (s.ok ? 'ok' : 'FAILED') },
        { header: 'detail', value: (s) => s.detail },
      ]).trimEnd(),
      ...report.skipped.map((s) => `skipped ${s.ledger}: ${s.code}${s.step ? ` at step ${s.step}` : ''}: ${s.message}`),
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
  } finally {
    core.close();
  }
}
