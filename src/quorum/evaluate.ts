/**
 * The quorum rule of design.md, as a pure function: the materialised decisions must always equal this.
 */
import { contentKey } from '../ledger/statement.js';

export interface Policy {
  name: string;
  /** Key names that count; `null` means "every active builder" (the default policy unless set). */
  builders: ReadonlySet<string> | null;
  threshold: number;
  onConflict: 'block' | 'ignore';
}

/** One attestation of a path, reduced to what the rule looks at. */
export interface Vote {
  /** The signing key (keyIdOf), never the name: one key is one vote, whatever names point at it. */
  key: string;
  narHash: string;
  narSize: number;
  /** Full store paths, sorted, joined by ','. */
  refs: string;
}

export type DecisionStatus = 'quorum' | 'pending' | 'blocked';

export interface Decision {
  status: DecisionStatus;
  /** The content that reached quorum (status 'quorum'), else null. */
  content: { narHash: string; narSize: number; refs: string } | null;
  /** Keys (key ids) behind the leading content, sorted. */
  agreeing: string[];
  /** Trusted keys that attested another content than the leading one, sorted. */
  dissenting: string[];
  /** Trusted keys that signed two different contents; they count for neither. */
  equivocating: string[];
  /** Trusted keys that have not attested the path. */
  missing: string[];
  threshold: number;
  trusted: number;
  reason: string;
}


/** The registry as the rule needs it: a name's key, and every key that counts. */
export interface KeyDirectory {
  /** The key id of an active (registered, unrevoked) builder of that name, else undefined. */
  activeKey(name: string): string | undefined;
  /** The key ids of every active builder. */
  activeKeys(): Iterable<string>;
}

/**
 * 1. The denominator: the keys of the policy's builders ("every active builder" for a null set),
 * less revoked ones (revocation removes votes everywhere), counted once per key.
 */
export function trustedKeys(policy: Pick<Policy, 'builders'>, keys: KeyDirectory): Set<string> {
  if (policy.builders === null) return new Set(keys.activeKeys());
  const trusted = new Set<string>();
  for (const name of policy.builders) {
    const key = keys.activeKey(name);
    if (key !== undefined) trusted.add(key);
  }
  return trusted;
}

/**
 * @param trustedSet the keys that count (trustedKeys)
 * @param votes every attestation of one output path, from any key
 * @param label how a key is named in the reason (its builder's name)
 */
export function evaluate(policy: Pick<Policy, 'threshold' | 'onConflict'>, trustedSet: ReadonlySet<string>, votes: readonly Vote[], label: (key: string) => string = (k) => k): Decision {
  const trusted = [...trustedSet].sort();

  // 2. Each trusted key's distinct contents for this path.
  const contentsByKey = new Map<string, Map<string, Vote>>();
  for (const v of votes) {
    if (!trustedSet.has(v.key)) continue;
    const contents = contentsByKey.get(v.key) ?? new Map<string, Vote>();
    contents.set(contentKey(v), v);
    contentsByKey.set(v.key, contents);
  }

  // 3. A key that signed two contents counts for neither; the others vote for their one content.
  const equivocating: string[] = [];
  const tally = new Map<string, { vote: Vote; keys: string[] }>();
  for (const [key, contents] of contentsByKey) {
    if (contents.size > 1) {
      equivocating.push(key);
      continue;
    }
    const [content, vote] = contents.entries().next().value!;
    const entry = tally.get(content) ?? { vote, keys: [] };
    entry.keys.push(key);
    tally.set(content, entry);
  }
  equivocating.sort();

  // 4. The leading content: most keys; ties broken by content text so the result is deterministic.
  const ranked = [...tally.entries()].sort((a, b) => b[1].keys.length - a[1].keys.length || (a[0] < b[0] ? -1 : 1));
  const leader = ranked[0];
  const agreeing = leader ? [...leader[1].keys].sort() : [];
  const leaderKey = leader?.[0];
  const dissenting = trusted.filter((k) => {
    const contents = contentsByKey.get(k);
    return contents !== undefined && !equivocating.includes(k) && !contents.has(leaderKey!);
  });
  const missing = trusted.filter((k) => !contentsByKey.has(k));
  // One literal, not a spread of shared fields: spreading cost three times the rest of this function.
  const decision = (status: DecisionStatus, content: Decision['content'], reason: string): Decision => ({
    status,
    content,
    agreeing,
    dissenting,
    equivocating,
    missing,
    threshold: policy.threshold,
    trusted: trusted.length,
    reason,
  });

  // 5. Under "block", any trusted key attesting a different content (including an equivocating key,
  //    which by definition attested a content other than the leader's) blocks the path.
  const disagreement = ranked.length > 1 || equivocating.length > 0;
  if (policy.onConflict === 'block' && disagreement) {
    return decision('blocked', null, blockedReason(ranked.length, dissenting.map(label).sort(), equivocating.map(label).sort()));
  }

  // 6. Quorum: at least k distinct keys agree; with "ignore", a second content also reaching k makes it ambiguous.
  const reaching = ranked.filter(([, e]) => e.keys.length >= policy.threshold);
  if (reaching.length === 1 && leader) {
    const { narHash, narSize, refs } = leader[1].vote;
    return decision('quorum', { narHash, narSize, refs }, `${agreeing.length} of ${trusted.length} trusted keys agree (threshold ${policy.threshold})`);
  }
  if (reaching.length > 1) {
    return decision('pending', null, `ambiguous: ${reaching.length} different contents each reach the threshold ${policy.threshold}`);
  }
  return decision('pending', null, `${agreeing.length} of ${trusted.length} trusted keys agree; ${policy.threshold} needed`);
}

function blockedReason(contents: number, dissenting: string[], equivocating: string[]): string {
  const parts: string[] = [];
  if (contents > 1) parts.push(`trusted keys attest ${contents} different contents${dissenting.length ? ` (dissenting: ${dissenting.join(', ')})` : ''}`);
  if (equivocating.length) parts.push(`equivocating keys: ${equivocating.join(', ')}`);
  return `blocked (onConflict: block): ${parts.join('; ')}`;
}
