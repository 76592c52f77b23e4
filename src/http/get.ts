import http, { type IncomingMessage } from 'node:http';
import https from 'node:https';
import { QuorumError } from '../errors.js';

/**
 * Keep-alive agents for one remote party (a ledger), at most `maxSockets` requests per host at a
 * time (more wait in the agent's queue). Bare node:http rather than fetch: bodies arrive as Node
 * streams that can be bounded and piped as they are, and a process that never loads undici is
 * about 30 MiB smaller (docs/benchmarks.md, "Client").
 */
export function keepAliveAgents(maxSockets: number): { http: http.Agent; https: https.Agent; destroy(): void } {
  const agents = { http: new http.Agent({ keepAlive: true, maxSockets }), https: new https.Agent({ keepAlive: true, maxSockets }) };
  return { ...agents, destroy: () => (agents.http.destroy(), agents.https.destroy()) };
}

/**
 * One GET (or HEAD) whose response is handed over unread once its headers are in: the caller reads
 * or discards the body. `timeoutMs` bounds the whole exchange, waiting in the agent's queue included.
 */
export function httpGet(url: URL, options: { agents: ReturnType<typeof keepAliveAgents>; timeoutMs: number; head?: boolean }): Promise<IncomingMessage> {
  const secure = url.protocol === 'https:';
  return new Promise((resolve, reject) => {
    const req = (secure ? https : http).request(url, { method: options.head ? 'HEAD' : 'GET', agent: secure ? options.agents.https : options.agents.http, signal: AbortSignal.timeout(options.timeoutMs) }, resolve);
    // `on`, not `once`: a timeout racing a socket error can emit twice, and an unheard one would crash.
    req.on('error', reject);
    req.end();
  });
}

/** Reads a whole body as text; one larger than `maxBytes` is 'bad-response' (a hostile server's endless answer costs no more than that). */
export async function readText(res: IncomingMessage, maxBytes: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of res as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > maxBytes) {
      res.destroy();
      throw new QuorumError('bad-response', `the answer is larger than ${maxBytes} bytes`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}
