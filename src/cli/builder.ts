import type { Command } from 'commander';
import { QuorumError } from '../errors.js';
import type { BuilderFlags } from '../builder/settings.js';
import { progressBar } from './progress.js';
import { action, runUntilSignalled } from './run.js';

/*
 * Builder-side commands. Each action imports its implementation on demand: the post-build-hook runs
 * once per build, so it must not pay for loading the agent, progress bars or HTTP code it never uses.
 */

type Flag = 'server' | 'keyFile' | 'spool' | 'store';

const FLAG_HELP: Record<Flag, [string, string]> = {
  server: ['--server <url>', 'nix-quorum server URL (env NIX_QUORUM_SERVER, config builder.server)'],
  keyFile: ['--key-file <file>', 'builder secret key, as made by `nix-quorum keygen` (env NIX_QUORUM_KEY_FILE, config builder.keyFile; default /etc/nix-quorum/builder.secret for root, else ~/.config/nix-quorum/builder.secret)'],
  spool: ['--spool <dir>', 'spool directory (env NIX_QUORUM_SPOOL, config builder.spool; default /var/lib/nix-quorum/spool for root, else ~/.local/state/nix-quorum/spool)'],
  store: ['--store <store>', 'Nix store to read from (default: NIX_CONFIG\'s store = … inside a post-build-hook, else env NIX_QUORUM_STORE / config builder.store, else Nix\'s default)'],
};

function withFlags(cmd: Command, flags: Flag[]): Command {
  cmd.option('--config <file>', 'JSON config file (env NIX_QUORUM_CONFIG)');
  for (const f of flags) cmd.option(...FLAG_HELP[f]);
  return cmd;
}

/**
 * What the hook prints when it could not queue: loud, with the fix, and the command that catches up
 * afterwards. The store is worked out without the config, which may be what failed.
 */
function hookFailureText(error: unknown, env: NodeJS.ProcessEnv, store: string | null): string {
  const message = error instanceof QuorumError ? error.message : ((error as Error)?.stack ?? String(error));
  const drv = env.DRV_PATH || '<DRV_PATH>';
  const storeArg = store ? ` --store ${store}` : '';
  return [
    '',
    `nix-quorum hook: ERROR: the outputs of ${drv} were NOT attested.`,
    `nix-quorum hook: ${message}`,
    'nix-quorum hook: the build itself succeeded and Nix goes on. Once fixed, attest these outputs with:',
    `nix-quorum hook:   nix-quorum submit --upload${storeArg} $(nix-store${storeArg} -q --outputs ${drv})`,
    '',
  ].join('\n');
}

/** `nix-quorum hook`: exit status 0 whatever happens, so the build loop goes on; a failure is told on stderr. */
export async function hookCommand(opts: BuilderFlags): Promise<void> {
  try {
    const { runHook } = await import('../builder/hook.js');
    await runHook(process.env, opts);
  } catch (error) {
    const { storeFromNixConfig } = await import('../builder/nix.js');
    process.stderr.write(hookFailureText(error, process.env, opts.store ?? storeFromNixConfig(process.env.NIX_CONFIG)));
  }
  process.exitCode = 0;
}

export function registerBuilder(program: Command): void {
  withFlags(
    program
      .command('hook')
      .summary('Nix post-build-hook: sign the outputs of $DRV_PATH and queue them in the spool')
      .description(
        'Nix post-build-hook: sign each output of $DRV_PATH (narHash, narSize and references from Nix\'s database) and queue it ' +
          'in the durable spool for the agent. No network and no NAR reading, so it costs the same for any output size. ' +
          'It always exits 0 so the build loop goes on; when it cannot queue, it says why and how to catch up on stderr.',
      ),
    ['keyFile', 'spool', 'store'],
  ).action(hookCommand);

  withFlags(
    program
      .command('agent')
      .summary('deliver the spool to the server, continuously')
      .description(
        'Deliver the spool to the server until stopped: drain now, whenever the hook queues an entry, on the schedule ' +
          'builder.agentCron, and with exponential backoff while the server is down. For each entry: upload the NAR unless ' +
          'the server or an upstream cache has it, submit the attestation, then remove the entry. Safe to kill at any time.',
      ),
    ['server', 'keyFile', 'spool'],
  ).action(action(async (opts: BuilderFlags) => {
    const [{ builderConfig, builderKey, serverOf, spoolOf }, { startAgent }, { QuorumClient }, { createLogger }, { default: cron }] = await Promise.all([
      import('../builder/settings.js'),
      import('../builder/agent.js'),
      import('../builder/remote.js'),
      import('../log.js'),
      import('node-cron'),
    ]);
    const config = await builderConfig(opts);
    if (!cron.validate(config.builder.agentCron)) throw new QuorumError('bad-config', `builder.agentCron ${JSON.stringify(config.builder.agentCron)} is not a cron expression (five or six fields, e.g. "*/5 * * * *")`, { field: 'builder.agentCron' });
    const agent = startAgent({
      spool: spoolOf(config),
      client: new QuorumClient(serverOf(config)),
      key: builderKey(config),
      upstreams: config.upstreams,
      concurrency: config.builder.concurrency,
      retry: { attempts: 2, baseDelayMs: 500, maxDelayMs: 5_000 },
      backoff: { baseDelayMs: 1_000, maxDelayMs: 5 * 60_000 },
      logger: createLogger(config.logLevel),
      cron: config.builder.agentCron,
    });
    runUntilSignalled([], () => agent.stop());
  }));

  withFlags(
    program
      .command('flush')
      .summary('drain the spool once and exit')
      .description('Drain the spool once, as the agent would, and exit: status 1 if entries remain undelivered. Shows a progress bar on a terminal.'),
    ['server', 'keyFile', 'spool'],
  ).action(action(async (opts: BuilderFlags) => {
    const [{ builderConfig, builderKey, serverOf, spoolOf }, { drain }, { QuorumClient }, { createLogger }] = await Promise.all([
      import('../builder/settings.js'),
      import('../builder/drain.js'),
      import('../builder/remote.js'),
      import('../log.js'),
    ]);
    const config = await builderConfig(opts);
    const spool = spoolOf(config);
    const bar = await progressBar('flush');
    const report = await drain({
      spool,
      client: new QuorumClient(serverOf(config)),
      key: builderKey(config),
      upstreams: config.upstreams,
      concurrency: config.builder.concurrency,
      retry: { attempts: 3, baseDelayMs: 500, maxDelayMs: 5_000 },
      // The summary below says what happened; per-entry logs would tear the progress bar.
      logger: createLogger('error', () => undefined),
      onProgress: (settled, total) => bar.update(settled, total),
    }).finally(() => bar.stop());
    const lines = [`nix-quorum flush: delivered ${report.delivered}, undelivered ${report.failed.length}, quarantined ${report.quarantined.length} (spool ${spool.dir})`];
    for (const f of report.failed) lines.push(`  undelivered ${f.entry}: ${f.error}`);
    for (const q of report.quarantined) lines.push(`  quarantined ${q.entry} (moved to ${spool.dir}/quarantine/): ${q.reason}`);
    process.stderr.write(`${lines.join('\n')}\n`);
    if (report.failed.length > 0) process.exitCode = 1;
  }));

  withFlags(
    program
      .command('submit')
      .summary('attest existing store paths directly')
      .description(
        'Attest store paths that already exist (built before the hook was set up, or by hand): find each path\'s deriver and ' +
          'output name in Nix\'s database, sign, and submit directly to the server. Exit status 1 if any path failed.',
      )
      .argument('<paths...>', 'store paths (build outputs)')
      .option('--closure', 'also attest everything the paths reference (nix-store -qR); sources without a deriver are skipped')
      .option('--upload', 'upload NARs the server (or an upstream cache) does not have yet before submitting, and the build logs Nix kept after'),
    ['server', 'keyFile', 'store'],
  ).action(action(async (paths: string[], opts: BuilderFlags & { closure?: boolean; upload?: boolean }) => {
    const [{ builderConfig, builderKey, serverOf, storeOf }, { submitPaths }, { QuorumClient }, { createLogger }, { parseStorePath }] = await Promise.all([
      import('../builder/settings.js'),
      import('../builder/submit.js'),
      import('../builder/remote.js'),
      import('../log.js'),
      import('../nix/storePath.js'),
    ]);
    const config = await builderConfig(opts);
    const bar = await progressBar('submit');
    const outcomes = await submitPaths({
      paths: paths.map((p) => parseStorePath(p, 'path')),
      closure: Boolean(opts.closure),
      upload: Boolean(opts.upload),
      store: storeOf(opts, config),
      key: builderKey(config),
      client: new QuorumClient(serverOf(config)),
      upstreams: config.upstreams,
      concurrency: config.builder.concurrency,
      logger: createLogger(process.stderr.isTTY ? 'error' : config.logLevel),
      onProgress: (settled, total) => bar.update(settled, total),
    }).finally(() => bar.stop());
    const count = (s: string) => outcomes.filter((o) => o.status === s).length;
    const lines = outcomes.filter((o) => o.detail).map((o) => `  ${o.status} ${o.path}: ${o.detail}`);
    lines.unshift(`nix-quorum submit: ${['accepted', 'duplicate', 'conflict', 'rejected', 'error', 'skipped'].map((s) => `${s} ${count(s)}`).join(', ')}`);
    process.stderr.write(`${lines.join('\n')}\n`);
    if (count('rejected') + count('error') > 0) process.exitCode = 1;
  }));

  withFlags(
    program
      .command('status')
      .summary('quorum status of a store path, per policy')
      .description(
        'Show whether the server serves a store path: the decision per quorum policy with its reason, whether the substituter ' +
          'really serves it (and if not, why: e.g. its NAR was never uploaded), and the attestations behind it.',
      )
      .argument('<path>', 'store path, its base name, or its 32-character hash part')
      .option('--json', 'print the server\'s JSON answer, each decision with served and notServedBecause'),
    ['server'],
  ).action(action(async (path: string, opts: BuilderFlags & { json?: boolean }) => {
    const [{ builderConfig, serverOf }, { QuorumClient }, { hashPartOfArgument, parsePathStatus, servingOf, statusJson }, { formatPathStatus }] = await Promise.all([
      import('../builder/settings.js'),
      import('../builder/remote.js'),
      import('../builder/status.js'),
      import('./status.js'),
    ]);
    const hashPart = hashPartOfArgument(path);
    const client = new QuorumClient(serverOf(await builderConfig(opts)));
    const status = parsePathStatus(await client.path(hashPart));
    const serving = await servingOf(client, status);
    process.stdout.write(opts.json ? `${JSON.stringify(statusJson(status, serving), null, 2)}\n` : formatPathStatus(status, serving));
  }));
}
