import type { Command } from 'commander';
import { loadConfig } from '../config.js';
import { QuorumError } from '../errors.js';
import { createLogger } from '../log.js';
import { builderJson } from '../ledger/registry.js';
import { parsePublicKey } from '../nix/keys.js';
import { policyInput, policyJson, requirePolicy } from '../quorum/policies.js';
import { describeZodError } from '../ledger/attestation.js';
import { openService } from '../service.js';
import { httpJson } from '../http/client.js';
import { action } from './run.js';

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
    listPolicies: () => call('GET', 'api/v1/policies'),
    close() {},
  };
}

function localAdmin(target: Target): Admin {
  const config = loadConfig({ file: target.config, flags: target.data ? { dataDir: target.data } : {} });
  const service = openService(config, createLogger('warn'));
  return {
    addBuilder: async (publicKey) => builderJson(service.registry.add(parsePublicKey(publicKey))),
    listBuilders: async () => ({ builders: service.registry.list().map(builderJson) }),
    // Decisions that reached quorum get their cache Sig after the change: wait for it before exiting.
    revokeBuilder: async (name) => {
      const revoked = service.registry.revoke(name);
      await service.decisions.signaturesStored();
      return builderJson(revoked);
    },
    setPolicy: async (name, body) => {
      const parsed = policyInput.safeParse({ name, ...body });
      if (!parsed.success) throw new QuorumError('bad-policy', describeZodError(parsed.error));
      const p = parsed.data;
      service.decisions.setPolicy({ name: p.name, threshold: p.threshold, onConflict: p.onConflict, builders: p.builders === null ? null : new Set(p.builders) });
      await service.decisions.signaturesStored();
      return policyJson(requirePolicy(service.decisions.getPolicies(), name));
    },
    listPolicies: async () => ({ policies: service.decisions.getPolicies().map(policyJson) }),
    close: () => service.close(),
  };
}

function adminFor(opts: Target): Admin {
  const server = opts.server ?? process.env.NIX_QUORUM_SERVER;
  if (server && !opts.data) return remoteAdmin(server, opts.adminToken ?? process.env.NIX_QUORUM_ADMIN_TOKEN);
  return localAdmin(opts);
}

function withTarget(cmd: Command): Command {
  return cmd
    .option('--data <dir>', 'act on this local data directory (default ./data)')
    .option('--config <file>', 'config file (JSON) of the local server')
    .option('--server <url>', 'act through this server\'s admin API (env NIX_QUORUM_SERVER)')
    .option('--admin-token <token>', 'admin token for --server (env NIX_QUORUM_ADMIN_TOKEN)');
}

async function run(opts: Target, fn: (admin: Admin) => Promise<unknown>): Promise<void> {
  const admin = adminFor(opts);
  try {
    process.stdout.write(`${JSON.stringify(await fn(admin), null, 2)}\n`);
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
  withTarget(builder.command('list').description('list builder keys')).action(action((opts: Target) => run(opts, (a) => a.listBuilders())));
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
  withTarget(policy.command('list').description('list policies')).action(action((opts: Target) => run(opts, (a) => a.listPolicies())));
}
