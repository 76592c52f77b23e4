import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { z } from 'zod';
import { describeIssues, hostPort, logVkey, parsedBy, witnessVkey } from '../config.js';
import type { Json } from '../configEnv.js';
import { QuorumError } from '../errors.js';
import { parseNoteVerifierKey } from '../ledger/checkpoint.js';
import { keyIdOf } from '../ledger/registryRules.js';
import { parsePublicKey, type PublicKey } from '../nix/keys.js';
import { parseWitnessPolicy, type WitnessPolicy } from '../witness/verifyCosigned.js';
import type { LogTrust } from '../verification/checkpoint.js';

/** The client's state directory when none is given: $XDG_STATE_HOME/nix-quorum/client. */
export function defaultStateDir(env: NodeJS.ProcessEnv = process.env): string {
  return join(env.XDG_STATE_HOME || join(homedir(), '.local', 'state'), 'nix-quorum', 'client');
}

/**
 * `nix-quorum client` settings (design.md): a JSON file, then flags (every key is also a flag).
 * Everything it trusts is here and nowhere else: the log key, the builder keys, the witnesses.
 */
export const clientConfigSchema = z
  .object({
    ledgers: z.array(z.url({ protocol: /^https?$/, error: 'ledgers must be http(s) URLs of nix-quorum servers or mirrors' })).min(1, 'ledgers: give at least one nix-quorum server or mirror URL'),
    logKey: logVkey,
    builders: z.array(parsedBy((t) => parsePublicKey(t, 'builder'))).min(1, 'builders: pin at least one builder key, "name:base64"'),
    threshold: z.number().int().min(1, 'threshold must be at least 1'),
    onConflict: z.enum(['block', 'ignore']).default('block'),
    witnesses: z.array(witnessVkey).default([]),
    witnessThreshold: z.number().int().min(1).optional(),
    listen: hostPort.default({ host: '127.0.0.1', port: 37515 }),
    state: z.string().min(1).optional(),
    logLevel: z.enum(['debug', 'info', 'warn', 'error']).default('info'),
  })
  .strict()
  .superRefine((c, ctx) => {
    if (c.threshold > c.builders.length) ctx.addIssue({ code: 'custom', path: ['threshold'], message: `threshold ${c.threshold} exceeds the ${c.builders.length} builders pinned: nothing could ever be substituted` });
    if (c.witnessThreshold !== undefined && c.witnessThreshold > c.witnesses.length) ctx.addIssue({ code: 'custom', path: ['witnessThreshold'], message: `witnessThreshold ${c.witnessThreshold} exceeds the ${c.witnesses.length} witnesses given` });
  });

export type ClientConfigInput = z.input<typeof clientConfigSchema>;

/** The parsed settings: typed keys, the state directory resolved. */
export interface ClientConfig {
  ledgers: string[];
  trust: LogTrust;
  /** Pinned builder keys by name; one key may be pinned once. */
  builders: ReadonlyMap<string, PublicKey>;
  threshold: number;
  onConflict: 'block' | 'ignore';
  listen: { host: string; port: number };
  stateDir: string;
  logLevel: 'debug' | 'info' | 'warn' | 'error';
}

export function loadClientConfig(options: { file?: string; flags?: Json; env?: NodeJS.ProcessEnv } = {}): ClientConfig {
  let fromFile: Json = {};
  if (options.file) {
    try {
      fromFile = JSON.parse(readFileSync(options.file, 'utf8')) as Json;
    } catch (e) {
      throw new QuorumError('bad-config', `cannot read the client config file ${options.file}: ${(e as Error).message}`, { field: 'config' });
    }
  }
  const parsed = clientConfigSchema.safeParse({ ...fromFile, ...options.flags });
  if (!parsed.success) throw new QuorumError('bad-config', describeIssues(parsed.error, options.file ? `client config (${options.file} and flags)` : 'client config (flags)'), { field: String(parsed.error.issues[0]?.path[0] ?? 'config') });
  const c = parsed.data;
  const logKey = parseNoteVerifierKey(c.logKey, 'logKey');
  const witnesses: WitnessPolicy | null = c.witnesses.length > 0 ? parseWitnessPolicy(c.witnesses, c.witnessThreshold, 'witnesses') : null;
  const builders = new Map<string, PublicKey>();
  const keys = new Set<string>();
  for (const [i, text] of c.builders.entries()) {
    const key = parsePublicKey(text, `builders[${i}]`);
    // One key is one builder: pinned under two names it would vote twice.
    if (builders.has(key.name) || keys.has(keyIdOf(key.raw))) throw new QuorumError('bad-config', `builders[${i}]: ${key.name} is pinned twice (by name or by key); each builder once`, { field: 'builders' });
    builders.set(key.name, key);
    keys.add(keyIdOf(key.raw));
  }
  return {
    ledgers: c.ledgers.map((u) => (u.endsWith('/') ? u : `${u}/`)),
    // The log's key name is its origin (src/service.ts): the origin is pinned with the key.
    trust: { logKey, origin: logKey.name, witnesses },
    builders,
    threshold: c.threshold,
    onConflict: c.onConflict,
    listen: c.listen,
    stateDir: resolve(c.state ?? defaultStateDir(options.env)),
    logLevel: c.logLevel,
  };
}
