#!/usr/bin/env node
import type { Command } from 'commander';

/**
 * Each command's module is imported only when that command runs: `hook` runs once per build and
 * `nar hash` is benchmarked against Nix, so neither may pay for loading express, SQLite or the S3 SDK.
 * Help (no command, or an unknown one) loads them all.
 */
type Register = (program: Command) => void;
const serve = async (): Promise<Register> => (await import('./serve.js')).registerServe;
const admin = async (): Promise<Register> => (await import('./admin.js')).registerAdmin;
const builder = async (): Promise<Register> => (await import('./builder.js')).registerBuilder;
const COMMANDS: Record<string, () => Promise<Register>> = {
  serve,
  keygen: async () => (await import('./keygen.js')).registerKeygen,
  builder: admin,
  policy: admin,
  hook: builder,
  agent: builder,
  flush: builder,
  submit: builder,
  status: builder,
  verify: async () => (await import('./verify.js')).registerVerify,
  nar: async () => (await import('./nar.js')).registerNar,
  gc: async () => (await import('./gc.js')).registerGc,
  witness: async () => (await import('./witness.js')).registerWitness,
  client: async () => (await import('./client.js')).registerClient,
};

async function runCommander(): Promise<void> {
  const { Command } = await import('commander');
  const program = new Command('nix-quorum')
    .description('A Nix binary cache that serves a store path only once a quorum of independent builders agree on it, backed by an append-only, verifiable ledger.')
    .version('0.1.0')
    .showHelpAfterError('(run with --help for usage)');
  const wanted = process.argv[2];
  const load = wanted !== undefined ? COMMANDS[wanted] : undefined;
  for (const register of new Set(await Promise.all(load ? [load()] : Object.values(COMMANDS).map((l) => l())))) register(program);
  await program.parseAsync(process.argv);
}

/*
 * Nix runs the hook once per build, and the README's hook script calls a bare `nix-quorum hook`
 * (settings in NIX_QUORUM_*): that exact call skips loading commander, a tenth of the hook's run
 * time. With any argument (a flag, --help) commander parses as for every command.
 */
if (process.argv.length === 3 && process.argv[2] === 'hook') await (await import('./builder.js')).hookCommand({});
else await runCommander();
