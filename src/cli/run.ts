import { QuorumError } from '../errors.js';
import { asStorageFull } from '../faults/storageFull.js';
import { dropFailedWrites } from '../log.js';

/**
 * Wraps a command action: a QuorumError (bad input, bad config, server refusal) and a failure of the
 * machine rather than of the code (a full disk, a folder that cannot be created: an error with a
 * system call) print one line and exit 1; anything else is a bug and keeps its stack.
 */
export function action<A extends unknown[]>(fn: (...args: A) => Promise<void> | void): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      await fn(...args);
    } catch (error) {
      const full = asStorageFull(error, 'writing the data directory');
      const known = error instanceof QuorumError ? error : full;
      if (known || isSystemError(error)) {
        process.stderr.write(`nix-quorum: ${oneLine((known ?? (error as Error)).message)}\n`);
        process.exit(1);
      }
      throw error;
    }
  };
}

/** Node's errors of a system call (open, mkdir, listen …) carry the call's name. */
function isSystemError(error: unknown): boolean {
  return error instanceof Error && typeof (error as NodeJS.ErrnoException).syscall === 'string';
}

function oneLine(message: string): string {
  return message.replace(/\s*\n\s*/g, '; ');
}

/** A long-running command: prints what its user needs to know, then runs until SIGINT or SIGTERM stops it cleanly. */
export function runUntilSignalled(lines: string[], stop: () => Promise<void>): void {
  dropFailedWrites(process.stdout);
  if (lines.length > 0) process.stdout.write(`${lines.join('\n')}\n`);
  const exit = () => {
    stop().then(() => process.exit(0), () => process.exit(1));
  };
  process.once('SIGINT', exit);
  process.once('SIGTERM', exit);
}
