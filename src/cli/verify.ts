import type { Command } from 'commander';
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { writeFileDurable } from '../dataDir.js';
import { QuorumError } from '../errors.js';
import { auditLog, type AuditState } from '../ledger/audit.js';
import { parseWitnessPolicy } from '../witness/verifyCosigned.js';
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
    .description(
      'audit a ledger by replaying its log: the registry and policies from their leaves, every builder signature under the key the log bound its name to, ' +
        'the tree against the signed checkpoint, consistency with the last checkpoint this machine saw, and every decision the server serves against the quorum rule',
    )
    .requiredOption('--server <url>', 'the nix-quorum server (env NIX_QUORUM_SERVER)', process.env.NIX_QUORUM_SERVER)
    .option('--log-key <vkey>', 'pin the log key (C2SP vkey, from GET /api/v1/log/key out of band); default: the key remembered from the last run, or trust on first use')
    .option('--state <file>', 'where the last verified checkpoint is remembered (default ~/.local/state/nix-quorum/verify/<server>.json)')
    .option('--witness <vkey>', 'require cosignatures of this witness (C2SP vkey name+hex(keyid)+base64(0x04||key)); repeat for each witness', (v: string, all: string[]) => [...all, v], [])
    .option('--witness-threshold <m>', 'how many of the --witness keys must have cosigned the checkpoint (default: all of them)', (v: string) => Number(v))
    .option('--json', 'print the report as JSON')
    .action(action(async (opts: { server: string; logKey?: string; state?: string; witness: string[]; witnessThreshold?: number; json?: boolean }) => {
      const witnesses = opts.witness.length > 0 || opts.witnessThreshold !== undefined ? parseWitnessPolicy(opts.witness, opts.witnessThreshold) : undefined;
      const file = stateFile(opts.server, opts.state);
      const previous = readState(file);
      const bar = await progressBar('verify', 'entries');
      let report;
      try {
        report = await auditLog(opts.server, { verifierKey: opts.logKey, previous, witnesses, onProgress: (done, total) => bar.update(done, total) });
      } finally {
        bar.stop();
      }
      // The tree itself verified (history consistent): remembered even when what is served does not follow from it.
      writeFileDurable(file, `${JSON.stringify(report.state, null, 2)}\n`);
      const ok = report.problems.length === 0;
      if (!ok) process.exitCode = 1;
      if (opts.json) {
        const { checkpoint, state, previous, equivocations, problems, notes, replayed } = report;
        const cosignatures = report.cosignatures?.map((c) => ({ witness: c.witness.text, timestamp: c.timestamp })) ?? null;
        process.stdout.write(`${JSON.stringify({ ok, origin: checkpoint.origin, size: checkpoint.size, rootHash: state.rootHash, previous: previous ?? null, cosignatures, replayed, problems, notes, equivocations }, null, 2)}\n`);
        return;
      }
      const { builders, policies, attestations, decisions } = report.replayed;
      const lines = [
        `${ok ? 'ok' : 'FAILED'}: ${report.checkpoint.origin}: ${report.verifiedEntries} entries verified, root ${report.state.rootHash}`,
        `replayed ${builders} builders, ${policies} policies and ${attestations} attestations: ${decisions} paths with quorum`,
        report.previous ? `consistent with the checkpoint seen before (size ${report.previous.size})` : `first run: remembering this checkpoint in ${file}`,
        ...(report.cosignatures ? [`witnessed: cosigned by ${report.cosignatures.map((c) => `${c.witness.name} (${new Date(c.timestamp * 1000).toISOString()})`).join(', ')}; ${witnesses!.threshold} of ${witnesses!.witnesses.length} required`] : []),
        ...report.notes.map((n) => `note: ${n}`),
        ...report.equivocations.map((e) => `evidence: ${e.builder} signed different contents for ${e.outPath} (entries ${e.leaves.join(', ')})`),
        ...report.problems.map((p) => `problem: ${p}`),
      ];
      process.stdout.write(`${lines.join('\n')}\n`);
    }));
}
