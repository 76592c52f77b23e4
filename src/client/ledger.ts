import type { IncomingMessage } from 'node:http';
import { z } from 'zod';
import { QuorumError } from '../errors.js';
import { httpGet, keepAliveAgents, readText } from '../http/get.js';
import { describeZodError } from '../ledger/attestation.js';
import { strictBase64 } from '../ledger/checkpoint.js';
import type { HashPart } from '../nix/storePath.js';

/** Requests one client has in flight to one ledger: below its unauthenticated per-address limit (http.maxConcurrentPerClient, 16). */
const MAX_IN_FLIGHT = 8;
const TIMEOUT_MS = 10_000;
const NAR_TIMEOUT_MS = 30 * 60_000;
/** Above the largest answer the schemas below admit (100,000 registry proofs): a larger one is refused unread. */
const MAX_ANSWER_BYTES = 256 << 20;

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
/** Entries as a page numbers them; a leaf's bytes are whatever its base64 decodes to, then checked against the tree. */
const entriesResponse = z.object({ entries: z.array(z.object({ index: z.number(), leaf: z.string() })).max(1000) });

/**
 * One ledger (a server or a mirror) as the client, or a mirror its primary, asks it: nothing it
 * answers is trusted, only parsed (here) and then verified (src/verification/). A ledger that is down, slow or malformed
 * throws QuorumError 'unavailable' or 'bad-response', and the client asks the next one.
 */
export class Ledger {
  private readonly agents = keepAliveAgents(MAX_IN_FLIGHT);
  /** The last request found it down (no answer or an unreadable one, 5xx or 429) and none answered since: Nix is not sent there. */
  failing = false;

  constructor(
    readonly url: string,
    private readonly maxAnswerBytes = MAX_ANSWER_BYTES,
  ) {}

  proofs(hashPart: HashPart, cosigned: number): Promise<ProofsResponse> {
    return this.json(`api/v1/paths/${hashPart}/proofs${cosigned > 0 ? `?cosigned=${cosigned}` : ''}`, proofsResponse);
  }

  async consistency(first: number, second: number): Promise<Buffer[]> {
    const body = await this.json(`api/v1/log/proof/consistency?first=${first}&second=${second}`, consistencyResponse);
    if (body.first !== first || body.second !== second) throw new QuorumError('bad-response', `${this.url} answered a consistency proof from ${body.first} to ${body.second}, asked for ${first} to ${second}`);
    return body.hashes.map((h) => Buffer.from(h, 'base64'));
  }

  /** A page of the log's entries from `start`, below `end` (a ledger may answer fewer). */
  async entries(start: number, end: number): Promise<Array<{ index: number; leaf: string }>> {
    return (await this.json(`api/v1/log/entries?start=${start}&end=${end}`, entriesResponse)).entries;
  }

  checkpoint(cosigned: number): Promise<string> {
    return this.request(`api/v1/log/checkpoint${cosigned > 0 ? `?cosigned=${cosigned}` : ''}`);
  }

  /** Fetches a file of the ledger (a NAR) and hands the response over: the caller reads and checks the body. */
  async fetch(url: string, head = false): Promise<IncomingMessage> {
    try {
      const res = await httpGet(new URL(url), { agents: this.agents, timeoutMs: NAR_TIMEOUT_MS, head });
      this.failing = isDown(res.statusCode ?? 0);
      return res;
    } catch (error) {
      this.failing = true;
      throw error;
    }
  }

  close(): void {
    this.agents.destroy();
  }

  private async json<T extends z.ZodType>(path: string, schema: T): Promise<z.output<T>> {
    const text = await this.request(path);
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      throw new QuorumError('bad-response', `${this.url}${path} did not answer JSON`);
    }
    const parsed = schema.safeParse(body);
    if (!parsed.success) throw new QuorumError('bad-response', `${this.url}${path}: ${describeZodError(parsed.error)}`);
    return parsed.data;
  }

  /** The body of a 2xx answer; anything else is the ledger's failure, never a verification result. */
  private async request(path: string): Promise<string> {
    let res: IncomingMessage;
    let text: string;
    try {
      res = await httpGet(new URL(path, this.url), { agents: this.agents, timeoutMs: TIMEOUT_MS });
      text = await readText(res, this.maxAnswerBytes);
    } catch (error) {
      this.failing = true;
      if (error instanceof QuorumError) throw new QuorumError(error.code, `${this.url}${path}: ${error.message}`);
      throw new QuorumError('unavailable', `cannot reach ${this.url}: ${(error as Error).message}`, { cause: error });
    }
    const status = res.statusCode ?? 0;
    this.failing = isDown(status);
    if (status < 200 || status > 299) {
      throw new QuorumError(isDown(status) ? 'unavailable' : 'refused', `${this.url}${path} answered ${status} ${text.slice(0, 300)}`, { remoteCode: `http-${status}` });
    }
    return text;
  }
}

function isDown(status: number): boolean {
  return status >= 500 || status === 429 || status === 0;
}
