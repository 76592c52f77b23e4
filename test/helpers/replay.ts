import { createPublicKey, verify, type KeyObject } from 'node:crypto';

/**
 * An auditor's replay of a nix-quorum log, written from design.md alone (none of src/): leaf kinds,
 * the identity rule, policies as their latest leaf, and the quorum rule. Tests hold the product's
 * replay (verify, the server's projection and decisions) against this one.
 */

export interface ReplayedLog {
  builders: Map<string, { key: string; revoked: boolean }>;
  policies: Map<string, { threshold: number; onConflict: string; builders: string[] | '*' }>;
  /** Per policy, the paths with quorum and their content `narHash;narSize;refs`. */
  quorum: Map<string, Map<string, string>>;
  problems: string[];
}

const SPKI = Buffer.from('302a300506032b6570032100', 'hex');

export function replayLeaves(leaves: Buffer[]): ReplayedLog {
  const builders = new Map<string, { key: string; revoked: boolean }>();
  const keysSeen = new Set<string>();
  const policies = new Map<string, { threshold: number; onConflict: string; builders: string[] | '*' }>();
  const problems: string[] = [];
  const votes: Array<{ name: string; outPath: string; content: string; statement: string; signature: Buffer; index: number }> = [];
  leaves.forEach((leaf, index) => {
    const text = leaf.toString('utf8');
    const f = text.split(';');
    if (f[0] === 'nix-quorum-builder-v1') {
      const [, action, name, key] = f as [string, string, string, string];
      if (action === 'add') {
        if (builders.has(name) || keysSeen.has(key)) problems.push(`leaf ${index}: ${name} or its key registered before`);
        else builders.set(name, { key, revoked: false });
        keysSeen.add(key);
      } else if (builders.has(name)) builders.get(name)!.revoked = true;
      else problems.push(`leaf ${index}: revokes unknown ${name}`);
    } else if (f[0] === 'nix-quorum-policy-v1') {
      const [, name, threshold, onConflict, set] = f as [string, string, string, string, string];
      if (threshold === '0') policies.delete(name);
      else policies.set(name, { threshold: Number(threshold), onConflict, builders: set === '*' ? '*' : set.split(',') });
    } else {
      const [statement, name, signature] = text.split('\n') as [string, string, string];
      const s = statement.split(';');
      votes.push({ name, outPath: s[3]!, content: `${s[4]};${s[5]};${s[6]}`, statement, signature: Buffer.from(signature, 'base64'), index });
    }
  });
  // Signatures under the key the name is bound to (anywhere in the log: upgraded ledgers register late).
  const keyObjects = new Map<string, KeyObject>();
  for (const v of votes) {
    const b = builders.get(v.name);
    if (!b) {
      problems.push(`leaf ${v.index}: ${v.name} never registered`);
      continue;
    }
    const key = keyObjects.get(b.key) ?? keyObjects.set(b.key, createPublicKey({ key: Buffer.concat([SPKI, Buffer.from(b.key, 'base64')]), format: 'der', type: 'spki' })).get(b.key)!;
    if (!verify(null, Buffer.from(v.statement), key, v.signature)) problems.push(`leaf ${v.index}: bad signature`);
  }
  const quorum = new Map<string, Map<string, string>>();
  for (const [name, p] of policies) {
    const trusted = new Set((p.builders === '*' ? [...builders.keys()] : p.builders).filter((b) => builders.has(b) && !builders.get(b)!.revoked).map((b) => builders.get(b)!.key));
    const byPath = new Map<string, Map<string, Set<string>>>();
    for (const v of votes) {
      const key = builders.get(v.name)?.key;
      if (key === undefined || !trusted.has(key)) continue;
      const perKey = byPath.get(v.outPath) ?? byPath.set(v.outPath, new Map()).get(v.outPath)!;
      (perKey.get(key) ?? perKey.set(key, new Set()).get(key)!).add(v.content);
    }
    const decided = new Map<string, string>();
    for (const [outPath, perKey] of byPath) {
      const counts = new Map<string, number>();
      const all = new Set<string>();
      for (const contents of perKey.values()) {
        for (const c of contents) all.add(c);
        if (contents.size === 1) for (const c of contents) counts.set(c, (counts.get(c) ?? 0) + 1);
      }
      if (p.onConflict === 'block' && all.size > 1) continue;
      const reaching = [...counts].filter(([, n]) => n >= p.threshold);
      if (reaching.length === 1) decided.set(outPath, reaching[0]![0]);
    }
    quorum.set(name, decided);
  }
  return { builders, policies, quorum, problems };
}

/** Every leaf of a server's log, fetched page by page. */
export async function fetchLeaves(url: string): Promise<Buffer[]> {
  const note = await (await fetch(`${url}/api/v1/log/checkpoint`)).text();
  const size = Number(note.split('\n')[1]);
  const leaves: Buffer[] = [];
  while (leaves.length < size) {
    const start = leaves.length;
    const { entries } = (await (await fetch(`${url}/api/v1/log/entries?start=${start}&end=${Math.min(size, start + 1000)}`)).json()) as { entries: Array<{ index: number; leaf: string }> };
    if (entries.length === 0 || entries[0]!.index !== start) throw new Error(`the entries page from ${start} starts at ${entries[0]?.index}`);
    leaves.push(...entries.map((e) => Buffer.from(e.leaf, 'base64')));
  }
  return leaves;
}

/** What a server says has quorum under a policy, as `narHash;narSize;refs` by path. */
export async function servedQuorum(url: string, policy: string): Promise<Map<string, string>> {
  const served = new Map<string, string>();
  for (let after = ''; ; ) {
    const page = (await (await fetch(`${url}/api/v1/decisions?policy=${policy}&after=${encodeURIComponent(after)}&limit=10000`)).json()) as {
      decisions: Array<{ outPath: string; narHash: string; narSize: number; references: string[] }>;
      next: string | null;
    };
    for (const d of page.decisions) served.set(d.outPath, `${d.narHash};${d.narSize};${d.references.join(',')}`);
    if (page.next === null) return served;
    after = page.next;
  }
}
