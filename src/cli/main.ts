#!/usr/bin/env node
import { Command } from 'commander';
import { registerAdmin } from './admin.js';
import { registerKeygen } from './keygen.js';
import { registerNar } from './nar.js';
import { registerServe } from './serve.js';
import { registerVerify } from './verify.js';

const program = new Command('nix-quorum')
  .description('A Nix binary cache that serves a store path only once a quorum of independent builders agree on it,\nbacked by an append-only, verifiable ledger.')
  .version('0.1.0')
  .showHelpAfterError('(run with --help for usage)');

registerServe(program);
registerKeygen(program);
registerAdmin(program);
registerNar(program);
registerVerify(program);

await program.parseAsync(process.argv);
