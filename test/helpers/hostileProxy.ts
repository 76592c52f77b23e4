import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/** What a hostile proxy does with one answer of the real server: the body (and type) it sends instead, or undefined to pass it on. */
export type Rewrite = (path: string, body: Buffer, type: string) => { body: Buffer | string; status?: number; type?: string } | undefined | Promise<{ body: Buffer | string; status?: number; type?: string } | undefined>;

export interface HostileProxy {
  url: string;
  /** What the proxy does from now on (tests switch attacks on one proxy). */
  rewrite: Rewrite;
  close(): Promise<void>;
}

/**
 * A hostile server for a test: an HTTP proxy in front of a real nix-quorum server that rewrites
 * its answers (a tampered narinfo, a replaced checkpoint, proofs against another tree). Answers
 * are buffered whole: test answers are small.
 */
export async function hostileProxy(target: string, rewrite: Rewrite = () => undefined): Promise<HostileProxy> {
  const proxy: { rewrite: Rewrite } = { rewrite };
  const server: Server = createServer((req, res) => {
    void (async () => {
      const upstream = await fetch(new URL(req.url ?? '/', target), { method: req.method, redirect: 'manual' });
      const body = Buffer.from(await upstream.arrayBuffer());
      const type = upstream.headers.get('content-type') ?? 'application/octet-stream';
      const changed = await proxy.rewrite((req.url ?? '/').split('?')[0]!, body, type);
      const out = changed ? Buffer.from(changed.body) : body;
      res.writeHead(changed?.status ?? upstream.status, { 'content-type': changed?.type ?? type, 'content-length': out.length, ...(upstream.headers.get('location') ? { location: upstream.headers.get('location')! } : {}) });
      res.end(req.method === 'HEAD' ? undefined : out);
    })().catch(() => res.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    get rewrite() {
      return proxy.rewrite;
    },
    set rewrite(r: Rewrite) {
      proxy.rewrite = r;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
