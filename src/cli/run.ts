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
