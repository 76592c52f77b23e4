import { QuorumError } from '../errors.js';
import type { KeyDirectory, Policy } from '../quorum/evaluate.js';
import type { PolicyEntry, RegistryEntry } from './leaf.js';
import { keyIdOf, registryProblem, type RegisteredBuilder, type RegistryLookup } from './registryRules.js';

/** A policy as the log states it, with the leaf that stated it. */
export interface StatedPolicy extends Policy {
  leaf: number;
  at: number;
}

/**
 * The registry and the policies a log states, replayed leaf by leaf. The server rebuilds its tables
 * from it at start, and every verifier (verify, mirrors, the client) replays the log with it, so all
 * of them derive the same state from the same leaves.
 */
export class LogState implements RegistryLookup, KeyDirectory {
  private readonly names = new Map<string, RegisteredBuilder>();
  private readonly keys = new Map<string, RegisteredBuilder>();
  readonly policies = new Map<string, StatedPolicy>();

  byName(name: string): RegisteredBuilder | undefined {
    return this.names.get(name);
  }

  byKey(keyId: string): RegisteredBuilder | undefined {
    return this.keys.get(keyId);
  }

  builders(): RegisteredBuilder[] {
    return [...this.names.values()];
  }

  activeKey(name: string): string | undefined {
    const b = this.names.get(name);
    return b && b.revokedLeaf === null ? b.keyId : undefined;
  }

  activeKeys(): Iterable<string> {
    return this.builders()
      .filter((b) => b.revokedLeaf === null)
      .map((b) => b.keyId);
  }

  /** Applies the registry leaf at `index`; a leaf that breaks the identity rule is refused, naming it. */
  applyRegistry(index: number, entry: RegistryEntry): void {
    const problem = registryProblem(this, entry);
    if (problem) throw new QuorumError('not-derivable', `leaf ${index}: ${problem.message}`, { field: `leaf ${index}` });
    if (entry.action === 'add') {
      const builder: RegisteredBuilder = { name: entry.name, publicKey: entry.publicKey, keyId: keyIdOf(entry.publicKey), addedLeaf: index, addedAt: entry.at, revokedLeaf: null, revokedAt: null };
      this.names.set(builder.name, builder);
      this.keys.set(builder.keyId, builder);
    } else {
      const builder = this.names.get(entry.name)!;
      builder.revokedLeaf = index;
      builder.revokedAt = entry.at;
    }
  }

  /** Applies the policy leaf at `index`: the latest leaf of a name is its policy; threshold 0 deletes it. */
  applyPolicy(index: number, entry: PolicyEntry): void {
    if (entry.threshold === 0) {
      if (!this.policies.delete(entry.name)) throw new QuorumError('not-derivable', `leaf ${index}: deletes policy ${entry.name}, which does not exist`, { field: `leaf ${index}` });
      return;
    }
    this.policies.set(entry.name, {
      name: entry.name,
      threshold: entry.threshold,
      onConflict: entry.onConflict,
      builders: entry.builders === '*' ? null : new Set(entry.builders),
      leaf: index,
      at: entry.at,
    });
  }
}
