import { keyIdOf } from '../ledger/registryRules.js';
import type { RegistryEntry } from '../ledger/leaf.js';
import type { Attestation } from '../ledger/statement.js';
import type { TlogProof } from '../ledger/tlogProof.js';
import type { Checkpoint } from '../ledger/checkpoint.js';
import type { PublicKey } from '../nix/keys.js';
import { hashPartOf, type HashPart, type StorePath } from '../nix/storePath.js';
import { evaluate, trustedKeys, type Decision, type KeyDirectory, type Vote } from '../quorum/evaluate.js';
import { VerificationError } from '../verification/errors.js';
import { decodeVerifiedLeaf, readProof, verifyIncluded } from '../verification/inclusion.js';
import { revokedKeys } from '../verification/revocations.js';
import { signatureJob, signatureValid } from '../verification/signature.js';
import type { ProofsResponse } from './ledger.js';

/** The user's own policy: the builder keys pinned by name, k of them, and what a disagreement does. */
export interface ClientPolicy {
  builders: ReadonlyMap<string, PublicKey>;
  threshold: number;
  onConflict: 'block' | 'ignore';
}

/** What the verified attestations say about the hash part. */
export interface PathVerdict {
  /** The output path the decision is about (null: nothing attested it). */
  outPath: StorePath | null;
  decision: Decision | null;
  /** The content at quorum, from the verified attestations; null unless the decision is 'quorum'. */
  content: { narHash: string; narSize: number; references: StorePath[]; deriver: StorePath | null } | null;
  /** Pinned builders (by name) whose signed, included attestations count. */
  counted: string[];
  /** Attestations that are not votes, and why (unknown name, bad signature, another path). */
  ignored: string[];
  /** Pinned builders whose key the log revoked. */
  revoked: string[];
}

/** The proofs of one answer, parsed, and the one checkpoint note they all carry (null: no proofs). */
export function proofsOf(response: ProofsResponse): { note: string | null; attestations: Array<{ leaf: Buffer; proof: TlogProof }>; registry: Array<{ leaf: Buffer; proof: TlogProof }> } {
  const read = (entries: ProofsResponse['attestations']) => entries.map((e) => ({ leaf: Buffer.from(e.leaf, 'base64'), proof: readProof(e.proof) }));
  const attestations = read(response.attestations);
  const registry = read(response.registry);
  const note = attestations[0]?.proof.checkpoint ?? null;
  // One checkpoint for every proof of an answer: proofs against different trees cannot be weighed together,
  // and a checkpoint other than the one verified in step 1 would not bind them to anything.
  if (note !== null && ![...attestations, ...registry].every((e) => e.proof.checkpoint === note)) {
    throw new VerificationError('inclusion', 'bad-proof', 'the proofs of this answer are against different checkpoints');
  }
  return { note, attestations, registry };
}

/**
 * Steps 3 to 6 of one answer, after its checkpoint passed steps 1 and 2: each leaf is included in
 * that checkpoint's tree and decodes; each attestation is a vote only if it is signed by the key the
 * USER pinned for its name (a key the log registered under that name counts for nothing here, nor
 * does a name the user did not pin); revocations the log states for pinned keys remove them; the
 * user's policy is evaluated by the server's own quorum function.
 */
export function verifyPath(hashPart: HashPart, proofs: ReturnType<typeof proofsOf>, checkpoint: Checkpoint, policy: ClientPolicy): PathVerdict {
  const included = (e: { leaf: Buffer; proof: TlogProof }) => {
    verifyIncluded(e.leaf, e.proof, checkpoint);
    return decodeVerifiedLeaf(e.proof.index, e.leaf);
  };
  const registry: RegistryEntry[] = proofs.registry.flatMap((e) => {
    const leaf = included(e);
    return leaf.kind === 'builder' ? [leaf.entry] : [];
  });
  const pinnedRaw = new Map([...policy.builders].map(([name, key]) => [name, key.raw]));
  const revokedSet = revokedKeys(registry, pinnedRaw);
  const active = new Map([...policy.builders].filter(([, key]) => !revokedSet.has(keyIdOf(key.raw))));
  const nameOfKey = new Map([...policy.builders].map(([name, key]) => [keyIdOf(key.raw), name]));
  const directory: KeyDirectory = {
    activeKey: (name) => {
      const key = active.get(name);
      return key && keyIdOf(key.raw);
    },
    activeKeys: () => [...active.values()].map((k) => keyIdOf(k.raw)),
  };

  const ignored: string[] = [];
  const votes = new Map<StorePath, Array<Vote & { attestation: Attestation; index: number }>>();
  for (const e of proofs.attestations) {
    const leaf = included(e);
    if (leaf.kind !== 'attestation') {
      ignored.push(`entry ${e.proof.index}: a ${leaf.kind} leaf, not an attestation`);
      continue;
    }
    const a = leaf.attestation;
    const key = policy.builders.get(a.builder);
    if (hashPartOf(a.outPath) !== hashPart) ignored.push(`entry ${e.proof.index}: about ${a.outPath}, another path`);
    else if (!key) ignored.push(`entry ${e.proof.index}: by ${a.builder}, a name you did not pin`);
    else if (!signatureValid(signatureJob(a, key))) ignored.push(`entry ${e.proof.index}: signed as ${a.builder}, but not by the key you pinned for that name`);
    else {
      const list = votes.get(a.outPath) ?? [];
      list.push({ key: keyIdOf(key.raw), narHash: a.narHash, narSize: a.narSize, refs: a.references.join(','), attestation: a, index: e.proof.index });
      votes.set(a.outPath, list);
    }
  }

  const trusted = trustedKeys({ builders: new Set(policy.builders.keys()) }, directory);
  const label = (key: string) => nameOfKey.get(key) ?? key;
  const decided = [...votes].map(([outPath, list]) => ({ outPath, list, decision: evaluate(policy, trusted, list, label) }));
  const chosen = decided.find((d) => d.decision.status === 'quorum') ?? decided[0];
  const revoked = [...policy.builders].filter(([, key]) => revokedSet.has(keyIdOf(key.raw))).map(([name]) => name);
  if (!chosen) return { outPath: null, decision: null, content: null, counted: [], ignored, revoked };
  const { outPath, list, decision } = chosen;
  const counted = [...new Set(list.filter((v) => trusted.has(v.key)).map((v) => label(v.key)))].sort();
  if (decision.status !== 'quorum' || !decision.content) return { outPath, decision, content: null, counted, ignored, revoked };
  const { narHash, narSize, refs } = decision.content;
  const agreeing = list.filter((v) => decision.agreeing.includes(v.key) && v.narHash === narHash && v.narSize === narSize && v.refs === refs).sort((x, y) => x.index - y.index);
  return {
    outPath,
    decision,
    content: { narHash, narSize, references: agreeing[0]!.attestation.references, deriver: agreeing[0]!.attestation.drvPath },
    counted,
    ignored,
    revoked,
  };
}
