import { QuorumError } from '../errors.js';

/**
 * Wraps a command action: a QuorumError (bad input, bad config, server refusal) prints one clear
 * line and exits 1; anything else is a bug and keeps its stack.
 */
export function action<A extends unknown[]>(fn: (...args: A) => Promise<void> | void): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      await fn(...args);
    } catch (error) {
      if (error instanceof QuorumError) {
        process.stderr.write(`nix-quorum: ${error.message}\n`);
        process.exit(1);
      }
      throw error;
    }
  };
}

/** A long-running command: prints what its user needs to know, then runs until SIGINT or SIGTERM stops it cleanly. */
export function runUntilSignalled(lines: string[], stop: () => Promise<void>): void {
  if (lines.length > 0) process.stdout.write(`${lines.join('\n')}\n`);
  const exit = () => {
    stop().then(() => process.exit(0), () => process.exit(1));
  };
  process.once('SIGINT', exit);
  process.once('SIGTERM', exit);
}
