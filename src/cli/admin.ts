import type { Command } from 'commander';
import { existsSync, readFileSync } from 'node:fs';
import { addBuilder, revokeBuilder } from '../app/builders.js';
import { deletePolicy, listPolicies, setPolicy } from '../app/policies.js';
import { loadConfig, type Config } from '../config.js';
import { DataDirLock, dataPaths, readAdminToken, requireLedger } from '../dataDir.js';
import { QuorumError } from '../errors.js';
import { httpJson } from '../http/client.js';
import { describeZodError } from '../ledger/attestation.js';
import { builderJson } from '../ledger/registry.js';
import { createLogger } from '../log.js';
import { parsePublicKey } from '../nix/keys.js';
import { policyInput } from '../quorum/policies.js';
import { openService } from '../service.js';
import { action } from './run.js';
import { formatList } from './table.js';

interface Target {
  data?: string;
  config?: string;
  server?: string;
  adminToken?: string;
}

/** Admin operations, done on a local data directory or through a server's admin API. */
interface Admin {
  addBuilder(publicKey: string): Promise<unknown>;
  listBuilders(): Promise<unknown>;
  revokeBuilder(name: string): Promise<unknown>;
  setPolicy(name: string, body: { threshold: number; builders: string[] | null; onConflict: 'block' | 'ignore' }): Promise<unknown>;
  deletePolicy(name: string): Promise<unknown>;
  listPolicies(): Promise<unknown>;
  close(): void;
}

function remoteAdmin(server: string, token: string | undefined): Admin {
  const headers = token ? { authorization: `Bearer ${token}` } : undefined;
  const call = (method: string, path: string, body?: unknown) => httpJson(new URL(path, server.endsWith('/') ? server : `${server}/`).href, { method, body, headers });
  return {
    addBuilder: (publicKey) => call('POST', 'api/v1/builders', { publicKey }),
    listBuilders: () => call('GET', 'api/v1/builders'),
    revokeBuilder: (name) => call('POST', `api/v1/builders/${encodeURIComponent(name)}/revoke`),
    setPolicy: (name, body) => call('PUT', `api/v1/policies/${encodeURIComponent(name)}`, body),
    deletePolicy: (name) => call('DELETE', `api/v1/policies/${encodeURIComponent(name)}`),
    listPolicies: () => call('GET', 'api/v1/policies'),
    close() {},
  };
}

/** The use cases of src/app/ on a ledger this process opened (and holds while it runs). */
function localAdmin(config: Config): Admin {
  const service = openService(config, createLogger('warn'));
  // Decisions that reached quorum get their cache Sig after the change: wait for it before exiting.
  const settled = async <T>(value: T) => {
    await service.decisions.signaturesStored();
    return value;
  };
  return {
    addBuilder: async (publicKey) => builderJson(addBuilder(service, parsePublicKey(publicKey)).builder),
    listBuilders: async () => ({ builders: service.registry.list().filter((b) => b.addedLeaf !== null).map(builderJson) }),
    revokeBuilder: (name) => settled(builderJson(revokeBuilder(service, name))),
    setPolicy: (name, body) => {
      const parsed = policyInput.safeParse({ name, ...body });
      if (!parsed.success) throw new QuorumError('bad-policy', describeZodError(parsed.error), { field: String(parsed.error.issues[0]?.path[0] ?? '') });
      return settled(setPolicy(service, parsed.data));
    },
    deletePolicy: async (name) => {
      deletePolicy(service, name);
      return { deleted: name };
    },
    listPolicies: async () => ({ policies: listPolicies(service) }),
    close: () => service.close(),
  };
}

/** How long an admin command waits for a server that holds the directory to say where it listens (it may be starting). */
const SERVER_FILE_WAIT_MS = 10_000;

/**
 * A data directory a running server holds is changed through that server, so the change takes
 * effect in it at once (its caches, its group commit and its checkpoints are its own).
 */
async function runningServer(dataDir: string): Promise<{ url: string; token: string } | undefined> {
  const paths = dataPaths(dataDir);
  for (const started = Date.now(); DataDirLock.held(dataDir); await new Promise((r) => setTimeout(r, 100))) {
    if (existsSync(paths.server)) {
      const { url } = JSON.parse(readFileSync(paths.server, 'utf8')) as { url: string };
      return { url, token: readAdminToken(paths.adminToken) };
    }
    if (Date.now() - started > SERVER_FILE_WAIT_MS) {
      throw new QuorumError('data-dir-locked', `the data directory ${dataDir} is held by another process that is not a listening server (an admin command still running?): try again`, { field: 'data' });
    }
  }
  return undefined;
}

async function adminFor(opts: Target): Promise<Admin> {
  const server = opts.server ?? process.env.NIX_QUORUM_SERVER;
  if (server && !opts.data) return remoteAdmin(server, opts.adminToken ?? process.env.NIX_QUORUM_ADMIN_TOKEN);
  const config = loadConfig({ file: opts.config, flags: opts.data ? { dataDir: opts.data } : {} });
  requireLedger(config.dataDir);
  const running = await runningServer(config.dataDir);
  if (running) {
    process.stderr.write(`nix-quorum: ${config.dataDir} is served by ${running.url}: changing it through that server\n`);
    return remoteAdmin(running.url, running.token);
  }
  return localAdmin(config);
}

function withTarget(cmd: Command): Command {
  return cmd
    .option('--data <dir>', 'act on this data directory (default ./data); through its server if one runs on it')
    .option('--config <file>', 'config file (JSON) of the local server')
    .option('--server <url>', 'act through this server\'s admin API (env NIX_QUORUM_SERVER)')
    .option('--admin-token <token>', 'admin token for --server (env NIX_QUORUM_ADMIN_TOKEN)');
}

async function run(opts: Target, fn: (admin: Admin) => Promise<unknown>, render: (answer: unknown) => string = (answer) => `${JSON.stringify(answer, null, 2)}\n`): Promise<void> {
  const admin = await adminFor(opts);
  try {
    process.stdout.write(render(await fn(admin)));
  } finally {
    admin.close();
  }
}

export function registerAdmin(program: Command): void {
  const builder = program.command('builder').description('manage the builder keys whose attestations count');
  withTarget(builder.command('add').description('register a builder key').argument('<name>', 'the key name (must match the public key\'s name)').argument('<public-key>', 'Nix public key name:base64'))
    .action(action(async (name: string, publicKey: string, opts: Target) => {
      if (parsePublicKey(publicKey).name !== name) throw new QuorumError('bad-key', `the public key is named ${parsePublicKey(publicKey).name}, not ${name}: key names are part of every signature`);
      await run(opts, (a) => a.addBuilder(publicKey));
    }));
  withTarget(builder.command('list').description('list builder keys (a table; --json for scripts)').option('--json', 'print the JSON answer as is'))
    .action(action((opts: Target & { json?: boolean }) => run(opts, (a) => a.listBuilders(), (answer) => {
      const { builders } = answer as { builders: Array<{ name: string; publicKey: string; active: boolean; addedAt: string; revokedAt: string | null }> };
      return formatList(builders, [
        { header: 'name', value: (b) => b.name },
        { header: 'status', value: (b) => (b.active ? 'active' : `revoked ${b.revokedAt}`) },
        { header: 'added', value: (b) => b.addedAt },
        { header: 'public key', value: (b) => b.publicKey },
      ], { json: opts.json, value: answer, empty: 'no builders registered' });
    })));
  withTarget(builder.command('revoke').description('revoke a builder key: its votes stop counting everywhere at once').argument('<name>', 'key name'))
    .action(action((name: string, opts: Target) => run(opts, (a) => a.revokeBuilder(name))));

  const policy = program.command('policy').description('manage quorum policies (k of a set of builder keys)');
  withTarget(
    policy
      .command('set')
      .description('create or change a policy; decisions are recomputed at once')
      .argument('<name>', 'policy name; "default" is served at the cache root')
      .requiredOption('--threshold <k>', 'how many distinct keys must agree', (v) => Number(v))
      .option('--builders <names>', 'comma-separated key names (default: every active builder)')
      .option('--on-conflict <mode>', 'block: any disagreeing trusted key blocks the path; ignore: only the quorum counts', 'block'),
  ).action(action((name: string, opts: Target & { threshold: number; builders?: string; onConflict: string }) =>
    run(opts, (a) => a.setPolicy(name, { threshold: opts.threshold, builders: opts.builders ? opts.builders.split(',').map((s) => s.trim()).filter(Boolean) : null, onConflict: opts.onConflict as 'block' | 'ignore' })),
  ));
  withTarget(policy.command('delete').description('delete a policy: its paths are no longer served under /policy/<name>/').argument('<name>', 'policy name'))
    .action(action((name: string, opts: Target) => run(opts, (a) => a.deletePolicy(name))));
  withTarget(policy.command('list').description('list policies (a table; --json for scripts); a policy that revocations left without enough keys is flagged impossible').option('--json', 'print the JSON answer as is'))
    .action(action((opts: Target & { json?: boolean }) => run(opts, (a) => a.listPolicies(), (answer) => {
      const { policies } = answer as { policies: Array<{ name: string; threshold: number; onConflict: string; builders: string[] | string; impossible?: string }> };
      return formatList(policies, [
        { header: 'name', value: (p) => p.name },
        { header: 'threshold', value: (p) => p.threshold, align: 'right' },
        { header: 'on conflict', value: (p) => p.onConflict },
        { header: 'builders', value: (p) => (Array.isArray(p.builders) ? p.builders.join(',') : p.builders) },
        { header: 'note', value: (p) => (p.impossible ? `IMPOSSIBLE: ${p.impossible}` : '') },
      ], { json: opts.json, value: answer, empty: 'no policies' });
    })));
}
