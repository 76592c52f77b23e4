import { z } from 'zod';
import { QuorumError } from '../errors.js';
import { describeZodError } from '../ledger/attestation.js';
import { strictBase64 } from '../ledger/checkpoint.js';
import type { HashPart } from '../nix/storePath.js';

/** Requests one client has in flight to one ledger: below its unauthenticated per-address limit (http.maxConcurrentPerClient, 16). */
const MAX_IN_FLIGHT = 8;
const TIMEOUT_MS = 10_000;

const base64 = z.string().refine((s) => strictBase64(s) !== undefined, 'must be standard base64');
const proved = z.object({ leaf: base64, proof: z.string().max(1 << 20) });

/** GET /api/v1/paths/<hashPart>/proofs, as far as the client reads it: everything in it is checked before it counts. */
export const proofsResponse = z.object({
  attestations: z.array(proved).max(10_000),
  registry: z.array(proved).max(100_000),
  nar: z.object({ narHash: z.string(), url: z.string().max(4096), compression: z.string().regex(/^[a-z0-9]{1,16}$/), fileHash: z.string().max(200), fileSize: z.number().int().min(0) }).nullable(),
});
export type ProofsResponse = z.output<typeof proofsResponse>;

const consistencyResponse = z.object({ first: z.number(), second: z.number(), hashes: z.array(base64).max(128) });

/**
 * One ledger (a server or a mirror) as the client asks it: nothing it answers is trusted, only
 * parsed (here) and then verified (src/verification/). A ledger that is down, slow or malformed
 * throws QuorumError 'unavailable' or 'bad-response', and the client asks the next one.
 */
export class Ledger {
  private inFlight = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(readonly url: string) {}

  proofs(hashPart: HashPart, cosigned: number): Promise<ProofsResponse> {
    return this.json(`api/v1/paths/${hashPart}/proofs${cosigned > 0 ? `?cosigned=${cosigned}` : ''}`, proofsResponse);
  }

  async consistency(first: number, second: number): Promise<Buffer[]> {
    const body = await this.json(`api/v1/log/proof/consistency?first=${first}&second=${second}`, consistencyResponse);
    if (body.first !== first || body.second !== second) throw new QuorumError('bad-response', `${this.url} answered a consistency proof from ${body.first} to ${body.second}, asked for ${first} to ${second}`);
    return body.hashes.map((h) => Buffer.from(h, 'base64'));
  }

  checkpoint(cosigned: number): Promise<string> {
    return this.request(`api/v1/log/checkpoint${cosigned > 0 ? `?cosigned=${cosigned}` : ''}`, async (res) => res.text());
  }

  /** Fetches a file of the ledger (a NAR) and hands the response over: the caller reads and checks the body. */
  fetch(url: string, head = false): Promise<Response> {
    return this.limited(() => fetch(url, { method: head ? 'HEAD' : 'GET', signal: AbortSignal.timeout(30 * 60_000) }));
  }

  private json<T extends z.ZodType>(path: string, schema: T): Promise<z.output<T>> {
    return this.request(path, async (res) => {
      let body: unknown;
      try {
        body = await res.json();
      } catch {
        throw new QuorumError('bad-response', `${this.url}${path} did not answer JSON`);
      }
      const parsed = schema.safeParse(body);
      if (!parsed.success) throw new QuorumError('bad-response', `${this.url}${path}: ${describeZodError(parsed.error)}`);
      return parsed.data;
    });
  }

  private request<T>(path: string, read: (res: Response) => Promise<T>): Promise<T> {
    return this.limited(async () => {
      let res: Response;
      try {
        res = await fetch(new URL(path, this.url), { signal: AbortSignal.timeout(TIMEOUT_MS) });
      } catch (error) {
        throw new QuorumError('unavailable', `cannot reach ${this.url}: ${(error as Error).message}`, { cause: error });
      }
      if (!res.ok) {
        const text = (await res.text().catch(() => '')).slice(0, 300);
        throw new QuorumError(res.status >= 500 || res.status === 429 ? 'unavailable' : 'refused', `${this.url}${path} answered ${res.status} ${text}`, { remoteCode: `http-${res.status}` });
      }
      return read(res);
    });
  }

  private async limited<T>(run: () => Promise<T>): Promise<T> {
    while (this.inFlight >= MAX_IN_FLIGHT) await new Promise<void>((resolve) => this.waiting.push(resolve));
    this.inFlight++;
    try {
      return await run();
    } finally {
      this.inFlight--;
      this.waiting.shift()?.();
    }
  }
}
