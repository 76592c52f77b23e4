import { closeSync, fsyncSync, mkdirSync, openSync, readdirSync, renameSync, statSync, unlinkSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { writeFileDurable } from '../dataDir.js';
import { QuorumError } from '../errors.js';
import { statementText, type Attestation } from '../ledger/statement.js';
import { sha256 } from '../nix/hash.js';
import { hashPartOf } from '../nix/storePath.js';
import { attestationJson } from './attest.js';

/**
 * The builder's durable queue: one JSON file per signed output, written by the post-build-hook and
 * removed by the agent once the server acknowledged it. The directory is the whole state, so the
 * hook never waits on the network and the agent survives restarts.
 *
 * Entry file `<hashPart>-<16 hex of the statement's hash>.json`:
 *   {"version":1,"attestation":{…submitted JSON…},"store":"<store URI>"|null,"createdAt":"<ISO time>"}
 * `store` is where the agent reads the NAR from (null: Nix's default). The name depends only on what
 * was signed, so attesting the same output twice rewrites one file instead of queueing two.
 * Entries are read back with readSpoolEntry (spoolEntry.ts); files that fail to parse are moved to
 * `quarantine/` next to a `.reason` file.
 */
export interface SpoolEntry {
  name: string;
  attestation: Attestation;
  store: string | null;
}

export const QUARANTINE_DIR = 'quarantine';
/** A temp file this old was left by a hook killed before its rename. */
const STALE_TEMP_MS = 60 * 60 * 1000;

/** Where the spool lives unless configured: system-wide for root (the Nix daemon's hook), else per user. */
export function defaultSpoolDir(env: NodeJS.ProcessEnv = process.env): string {
  if (process.getuid?.() === 0) return '/var/lib/nix-quorum/spool';
  return join(env.XDG_STATE_HOME || join(homedir(), '.local', 'state'), 'nix-quorum', 'spool');
}

function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

export class Spool {
  constructor(readonly dir: string) {}

  /** Durably queues a signed attestation (temp file, fsync, rename, fsync dir); returns the entry name. */
  add(attestation: Attestation, store: string | null): string {
    const digest = sha256(`${statementText(attestation)}\n${attestation.builder}`).toString('hex').slice(0, 16);
    const name = `${hashPartOf(attestation.outPath)}-${digest}.json`;
    const body = { version: 1, attestation: attestationJson(attestation), store, createdAt: new Date().toISOString() };
    try {
      writeFileDurable(join(this.dir, name), `${JSON.stringify(body)}\n`, 0o600);
    } catch (e) {
      throw new QuorumError('spool-unwritable', `cannot write to the spool ${this.dir}: ${(e as Error).message}; create it writable for this user or set NIX_QUORUM_SPOOL / builder.spool`, { cause: e });
    }
    return name;
  }

  /** Names of queued entries, sorted; a missing spool is an empty one. Every `*.json` counts, so a stray file gets quarantined, not ignored. */
  list(): string[] {
    return this.names().filter((n) => n.endsWith('.json')).sort();
  }

  /** Forgets an acknowledged entry; removing one that is already gone (another drain won) is fine. */
  remove(name: string): void {
    try {
      unlinkSync(join(this.dir, name));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      return;
    }
    fsyncDir(this.dir);
  }

  /** Moves an entry the agent can never submit out of the way, with the reason beside it. */
  quarantine(name: string, reason: string): string {
    const dir = join(this.dir, QUARANTINE_DIR);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    writeFileDurable(join(dir, `${name}.reason`), `${reason}\n`, 0o600);
    renameSync(join(this.dir, name), join(dir, name));
    fsyncDir(dir);
    fsyncDir(this.dir);
    return join(dir, name);
  }

  /** Deletes temp files of hooks that were killed between write and rename. */
  removeStaleTemp(now = Date.now()): void {
    for (const name of this.names()) {
      if (!/\.json\.tmp-[0-9]+$/.test(name)) continue;
      const file = join(this.dir, name);
      try {
        if (now - statSync(file).mtimeMs > STALE_TEMP_MS) unlinkSync(file);
      } catch {
        // Renamed or removed meanwhile: nothing to clean.
      }
    }
  }

  private names(): string[] {
    try {
      return readdirSync(this.dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw new QuorumError('spool-unreadable', `cannot read the spool ${this.dir}: ${(e as Error).message}`, { cause: e });
    }
  }
}
