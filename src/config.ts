import cron from 'node-cron';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { z } from 'zod';
import { blobStoreConfig } from './blobstore/config.js';
import { configFile, envInput, type Json } from './configEnv.js';
import { QuorumError } from './errors.js';
import { parseNoteVerifierKey } from './ledger/checkpoint.js';
import { parseCosignerVerifier } from './witness/cosignature.js';

export const hostPort = z
  .string()
  .regex(/^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.\-]+):[0-9]{1,5}$/, 'listen must be HOST:PORT, e.g. 127.0.0.1:8080')
  .transform((s) => {
    const i = s.lastIndexOf(':');
    return { host: s.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(s.slice(i + 1)) };
  })
  .refine((a) => a.port <= 65535, 'listen port must be at most 65535');

/** A text that `parse` accepts; its error is the zod issue. */
export const parsedBy = (parse: (text: string) => unknown) =>
  z.string().superRefine((text, ctx) => {
    try {
      parse(text);
    } catch (error) {
      ctx.addIssue({ code: 'custom', message: (error as Error).message });
    }
  });
export const witnessVkey = parsedBy((t) => parseCosignerVerifier(t, 'vkey'));
export const logVkey = parsedBy((t) => parseNoteVerifierKey(t, 'vkey'));

// Checked here, with the parser that will run it: node-cron would otherwise throw, with a stack, once the server is half started.
const cronExpr = z.string().superRefine((text, ctx) => {
  if (!cron.validate(text)) ctx.addIssue({ code: 'custom', message: `${JSON.stringify(text.slice(0, 100))} is not a cron expression: it needs five or six fields, e.g. "*/5 * * * *"` });
});

/**
 * One schema for the config file, the environment and the flags (merged in that order, later wins).
 * Every field has a default, so `nix-quorum serve` runs with no configuration at all.
 */
export const configSchema = z
  .object({
    dataDir: z.string().min(1).default('./data'),
    listen: hostPort.default({ host: '127.0.0.1', port: 8080 }),
    /** The URL clients reach the server at (behind a reverse proxy, the proxy's): printed nix.conf lines and absolute URLs use it. */
    publicUrl: z
      .url({ protocol: /^https?$/, error: 'publicUrl must be the http(s) URL clients use to reach the server, e.g. https://quorum.example.org' })
      .refine((u) => !/[?#]/.test(u), 'publicUrl must not have a query or fragment')
      .transform((u) => u.replace(/\/+$/, ''))
      .optional(),
    logLevel: z.enum(['debug', 'info', 'warn', 'error']).default('info'),
    /** Run as a mirror: a verified read-only replica of the ledger at `url` (src/mirror/). */
    follow: z
      .object({
        url: z.url('follow.url must be the URL of the nix-quorum server to mirror'),
        logKey: logVkey,
        witnesses: z.array(witnessVkey).default([]),
        witnessThreshold: z.number().int().min(1).optional(),
        pollMs: z.number().int().min(100).max(3_600_000).default(1000),
        // A catch-up of at least this many leaves, and of at least as many as the mirror holds, is applied in bulk (src/mirror/follower.ts).
        bulkCatchUp: z.number().int().min(1).default(50_000),
      })
      .strict()
      .optional(),
    quorum: z
      // The default policy's threshold when a ledger is created (2 if unset); later, `policy set default` changes it.
      .object({ defaultThreshold: z.number().int().min(1, 'quorum.defaultThreshold must be at least 1').optional() })
      .strict()
      .default({}),
    ledger: z
      .object({
        origin: z.string().regex(/^[^\s+]+$/, 'ledger.origin must be one token without spaces or "+"').optional(),
        checkpointIntervalMs: z.number().int().min(0).default(1000),
        checkpointCron: cronExpr.default('*/5 * * * *'),
        maxAttestationsPerRequest: z.number().int().min(1).max(100_000).default(1000),
        // A submission's body is refused (413) past this many bytes, before any of it is parsed.
        maxRequestBytes: z.number().int().min(64 * 1024).max(1024 ** 3).default(8 * 1024 ** 2),
        // Distinct statements one key may log about one output path; past it, 'too-many-statements'.
        maxStatementsPerPath: z.number().int().min(1).max(1000).default(8),
        // Witnesses that cosign each checkpoint (c2sp.org/tlog-witness); see src/witness/submitter.ts.
        witnesses: z.array(z.object({ url: z.url('ledger.witnesses[].url must be the URL of a witness (its add-checkpoint prefix)'), vkey: witnessVkey }).strict()).default([]),
        witnessTimeoutMs: z.number().int().min(100).default(5000),
        witnessRetryMaxMs: z.number().int().min(100).default(30_000),
      })
      .strict()
      .default({ checkpointIntervalMs: 1000, checkpointCron: '*/5 * * * *', maxAttestationsPerRequest: 1000, maxRequestBytes: 8 * 1024 ** 2, maxStatementsPerPath: 8, witnesses: [], witnessTimeoutMs: 5000, witnessRetryMaxMs: 30_000 }),
    http: z
      .object({
        // Requests without an Authorization header one client address may have in flight on the API and pages (not the substituter).
        maxConcurrentPerClient: z.number().int().min(1).max(10_000).default(16),
      })
      .strict()
      .default({ maxConcurrentPerClient: 16 }),
    substituter: z
      .object({
        priority: z.number().int().min(0).default(40),
        narinfoCacheEntries: z.number().int().min(0).default(100_000),
      })
      .strict()
      .default({ priority: 40, narinfoCacheEntries: 100_000 }),
    blobStore: blobStoreConfig.default({ type: 'fs' }),
    upstreams: z.array(z.url('upstreams must be URLs of Nix binary caches')).default([]),
    compression: z.enum(['none', 'br', 'gzip']).default('br'),
    gc: z
      .object({
        cron: cronExpr.default('17 3 * * *'),
        retentionDays: z.number().min(0).default(30),
      })
      .strict()
      .default({ cron: '17 3 * * *', retentionDays: 30 }),
    witness: z
      .object({
        name: z.string().regex(/^[^\s+]+$/, 'witness.name must be one token without spaces or "+", e.g. witness.example.org/w1').optional(),
        logs: z
          .array(
            z
              .object({
                origin: z.string().regex(/^[^\p{Cc}]+$/u, 'witness.logs[].origin must be a non-empty single line, the first line of the log\'s checkpoints'),
                vkey: logVkey,
              })
              .strict(),
          )
          .default([]),
      })
      .strict()
      .default({ logs: [] }),
    builder: z
      .object({
        server: z.url('builder.server must be the URL of a nix-quorum server').optional(),
        keyFile: z.string().optional(),
        spool: z.string().optional(),
        store: z.string().optional(),
        agentCron: cronExpr.default('*/1 * * * *'),
        concurrency: z.number().int().min(1).max(64).default(4),
      })
      .strict()
      .default({ agentCron: '*/1 * * * *', concurrency: 4 }),
  })
  .strict();

export type Config = z.output<typeof configSchema>;
export type ConfigInput = z.input<typeof configSchema>;

function merge(base: Json, over: Json): Json {
  const out: Json = { ...base };
  for (const [k, v] of Object.entries(over)) {
    out[k] = typeof v === 'object' && v !== null && !Array.isArray(v) && typeof out[k] === 'object' && out[k] !== null ? merge(out[k] as Json, v as Json) : v;
  }
  return out;
}

/** Formats zod issues as "path: message" lines that say what to fix and where it came from. */
export function describeIssues(error: z.ZodError, source: string): string {
  return error.issues.map((i) => `${source}: ${i.path.length ? i.path.join('.') : '(top level)'}: ${i.message}`).join('; ');
}

/**
 * Loads the configuration: file (JSON, from --config or NIX_QUORUM_CONFIG), then environment, then
 * flags (already shaped like the schema, e.g. {dataDir, listen}). Throws QuorumError 'bad-config'.
 */
export function loadConfig(options: { file?: string; env?: NodeJS.ProcessEnv; flags?: Json } = {}): Config {
  const env = options.env ?? process.env;
  const file = configFile(options.file, env);
  let fromFile: Json = {};
  if (file) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (e) {
      throw new QuorumError('bad-config', `cannot read config file ${file}: ${(e as Error).message}`, { field: 'config' });
    }
    try {
      fromFile = JSON.parse(text) as Json;
    } catch (e) {
      throw new QuorumError('bad-config', `config file ${file} is not valid JSON: ${(e as Error).message}`, { field: 'config' });
    }
    const fileCheck = configSchema.safeParse(fromFile);
    if (!fileCheck.success) throw new QuorumError('bad-config', describeIssues(fileCheck.error, `config file ${file}`), { field: 'config' });
  }
  const merged = merge(merge(fromFile, envInput(env)), options.flags ?? {});
  const parsed = configSchema.safeParse(merged);
  if (!parsed.success) throw new QuorumError('bad-config', describeIssues(parsed.error, 'configuration (file, NIX_QUORUM_* environment and flags)'), { field: 'config' });
  return { ...parsed.data, dataDir: resolve(parsed.data.dataDir) };
}
