import { z } from 'zod';
import { QuorumError } from '../errors.js';
import { describeZodError } from '../ledger/attestation.js';
import type { NarHash } from '../nix/hash.js';
import { parseHashPart, STORE_DIR, type HashPart } from '../nix/storePath.js';
import type { QuorumClient } from './remote.js';

/** Accepts `/nix/store/<hash>-<name>`, `<hash>-<name>` or the bare 32-character hash part. */
export function hashPartOfArgument(text: string): HashPart {
  const base = text.startsWith(`${STORE_DIR}/`) ? text.slice(STORE_DIR.length + 1) : text;
  return parseHashPart(base.slice(0, 32), 'path');
}

const names = z.array(z.string());
// Loose: --json prints the server's answer with every field it sent.
const decision = z.looseObject({
  policy: z.string(),
  status: z.string(),
  reason: z.string(),
  content: z.object({ narHash: z.string(), narSize: z.number() }).nullable(),
  agreeing: names,
  dissenting: names,
  equivocating: names,
  missing: names,
});
const pathStatus = z.looseObject({
  hashPart: z.string(),
  paths: z.array(
    z.looseObject({
      outPath: z.string(),
      attestations: z.array(z.looseObject({ leafIndex: z.number(), builder: z.string(), drvPath: z.string(), outputName: z.string(), narHash: z.string(), narSize: z.number() })),
      decisions: z.array(decision),
      conflicts: z.array(z.unknown()),
    }),
  ),
});

export type PathStatus = z.output<typeof pathStatus>;

/** Checks the server's answer once, so formatting can trust its shape. */
export function parsePathStatus(json: unknown): PathStatus {
  const parsed = pathStatus.safeParse(json);
  if (!parsed.success) throw new QuorumError('bad-response', `the server's /api/v1/paths answer has an unexpected shape: ${describeZodError(parsed.error)}`);
  return parsed.data;
}

/** Whether the substituter serves the path under a policy, and if not, why: what `status` adds to the decision. */
export interface Serving {
  served: boolean;
  /** Why not, with what to do about it. */
  why: string | null;
}

/** The key of `servingOf`'s map. */
export const servingKey = (outPath: string, policy: string) => `${outPath}\0${policy}`;

/**
 * Asks the substituter itself, as Nix would: a decision of "quorum" is served only once its NAR is
 * retrievable, so the answer is the narinfo's, and a miss with quorum is explained by whether the
 * server holds the NAR.
 */
export async function servingOf(client: QuorumClient, status: PathStatus): Promise<Map<string, Serving>> {
  const serving = new Map<string, Serving>();
  const hashPart = status.hashPart as HashPart;
  for (const p of status.paths) {
    for (const d of p.decisions) {
      const narinfo = await client.narinfo(d.policy, hashPart);
      let why: string | null = null;
      if (narinfo?.includes(`StorePath: ${p.outPath}\n`)) why = null;
      else if (d.status !== 'quorum' || !d.content) why = d.status === 'blocked' ? 'blocked' : 'no quorum yet';
      else if (!(await client.hasNar(d.content.narHash as NarHash))) why = `its NAR was never uploaded: on a builder that has the path, run \`nix-quorum submit --upload ${p.outPath}\``;
      else why = 'the substituter does not advertise it although its NAR is held (see the server log)';
      serving.set(servingKey(p.outPath, d.policy), { served: why === null, why });
    }
  }
  return serving;
}

/** The status with `served` and `notServedBecause` in each decision, for --json. */
export function statusJson(status: PathStatus, serving: Map<string, Serving>): unknown {
  return {
    ...status,
    paths: status.paths.map((p) => ({
      ...p,
      decisions: p.decisions.map((d) => {
        const s = serving.get(servingKey(p.outPath, d.policy));
        return { ...d, served: s?.served ?? null, notServedBecause: s?.why ?? null };
      }),
    })),
  };
}
