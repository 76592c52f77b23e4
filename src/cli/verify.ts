import type { Command } from 'commander';
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { writeFileDurable } from '../dataDir.js';
import { QuorumError } from '../errors.js';
import { auditLog, type AuditState } from '../ledger/audit.js';
import { progressBar } from './progress.js';
import { action } from './run.js';

const stateSchema = z.object({ origin: z.string(), verifierKey: z.string(), size: z.number().int().min(0), rootHash: z.string() });

function stateFile(server: string, explicit?: string): string {
  if (explicit) return explicit;
  const base = process.env.XDG_STATE_HOME ?? join(homedir(), '.local', 'state');
  return join(base, 'nix-quorum', 'verify', `${encodeURIComponent(server)}.json`);
}

function readState(file: string): AuditState | undefined {
  if (!existsSync(file)) return undefined;
  const parsed = stateSchema.safeParse(JSON.parse(readFileSync(file, 'utf8')));
  if (!parsed.success) throw new QuorumError('bad-state', `${file} is not a verify state file: delete it to start over (you lose the fork check against the last run)`);
  return parsed.data;
}

export function registerVerify(program: Command): void {
  program
    .command('verify')
    .description('audit a ledger: every builder signature, the tree against the signed checkpoint, and consistency with the last checkpoint this machine saw')
    .requiredOption('--server <url>', 'the nix-quorum server (env NIX_QUORUM_SERVER)', process.env.NIX_QUORUM_SERVER)
    .option('--log-key <vkey>', 'pin the log key (C2SP vkey, from GET /api/v1/log/key out of band); default: the key remembered from the last run, or trust on first use')
    .option('--state <file>', 'where the last verified checkpoint is remembered (default ~/.local/state/nix-quorum/verify/<server>.json)')
    .option('--json', 'print the report as JSON')
    .action(action(async (opts: { server: string; logKey?: string; state?: string; json?: boolean }) => {
      const file = stateFile(opts.server, opts.state);
      const previous = readState(file);
      const bar = await progressBar('verify', 'entries');
      let report;
      try {
        report = await auditLog(opts.server, { verifierKey: opts.logKey, previous, onProgress: (done, total) => bar.update(done, total) });
      } finally {
        bar.stop();
      }
      writeFileDurable(file, `${JSON.stringify(report.state, null, 2)}\n`);
      if (opts.json) {
        process.stdout.write(`${JSON.stringify({ ok: true, origin: report.checkpoint.origin, size: report.checkpoint.size, rootHash: report.state.rootHash, previous: report.previous ?? null, equivocations: report.equivocations }, null, 2)}\n`);
        return;
      }
      const lines = [
        `ok: ${report.checkpoint.origin}: ${report.verifiedEntries} entries verified, root ${report.state.rootHash}`,
        report.previous ? `consistent with the checkpoint seen before (size ${report.previous.size})` : `first run: remembering this checkpoint in ${file}`,
        ...report.equivocations.map((e) => `evidence: ${e.builder} signed different contents for ${e.outPath} (entries ${e.leaves.join(', ')})`),
      ];
      process.stdout.write(`${lines.join('\n')}\n`);
    }));
}
