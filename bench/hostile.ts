import { randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { percentile } from './common.js';

/**
 * Hostile clients, for test/hardening and bench/abuse: requests that a server must refuse cheaply,
 * sent on raw sockets so the client never waits for the server to read what it sends.
 */

export interface RawAnswer {
  /** The status line's code, or 0 when the connection closed without one. */
  status: number;
  /** Milliseconds until the status line arrived. */
  answeredMs: number;
  /** Milliseconds until the server closed the connection (or gave up on it). */
  closedMs: number;
  /** Body bytes the client got onto the wire before the answer or the close. */
  sent: number;
}

/**
 * Sends a request whose body is `bodyBytes` bytes of `fill` (or random), 64 KiB at a time, as fast
 * as the socket takes them, until the server answers and closes, or everything is sent.
 */
export function rawRequest(url: string, options: { method: string; path: string; headers: Record<string, string>; bodyBytes: number; fill?: Buffer }): Promise<RawAnswer> {
  const { hostname, port } = new URL(url);
  const started = performance.now();
  return new Promise((resolve) => {
    const socket = connect(Number(port), hostname);
    let head = '';
    let status = 0;
    let answeredMs = 0;
    let sent = 0;
    let done = false;
    const chunk = options.fill ?? randomBytes(64 * 1024);
    const finish = () => {
      if (done) return;
      done = true;
      resolve({ status, answeredMs, closedMs: performance.now() - started, sent });
    };
    const pump = () => {
      while (!done && sent < options.bodyBytes && !socket.destroyed) {
        const n = Math.min(chunk.length, options.bodyBytes - sent);
        sent += n;
        if (!socket.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return socket.once('drain', pump);
      }
    };
    socket.on('data', (d: Buffer) => {
      if (status !== 0) return;
      head += d.toString('latin1');
      const m = /^HTTP\/1\.1 (\d{3}) /.exec(head);
      if (m) {
        status = Number(m[1]);
        answeredMs = performance.now() - started;
      }
    });
    socket.on('error', finish);
    socket.on('close', finish);
    // A server that neither answers nor closes: given up on (closedMs then says so).
    socket.setTimeout(120_000, () => socket.destroy());
    const lines = [`${options.method} ${options.path} HTTP/1.1`, `Host: ${hostname}:${port}`, ...Object.entries(options.headers).map(([k, v]) => `${k}: ${v}`), '', ''];
    socket.write(lines.join('\r\n'));
    pump();
  });
}

/** Narinfo requests by an honest client, one after another, until `stop` resolves; the latencies in ms. */
export async function honestNarinfos(url: string, hashParts: readonly string[], stop: Promise<unknown>): Promise<{ count: number; p50: number; p99: number; failures: number }> {
  let stopped = false;
  void stop.finally(() => (stopped = true));
  const ms: number[] = [];
  let failures = 0;
  for (let i = 0; !stopped; i++) {
    const t = performance.now();
    try {
      const res = await fetch(`${url}/${hashParts[i % hashParts.length]}.narinfo`);
      await res.text();
      if (res.status !== 200) failures++;
    } catch {
      failures++;
    }
    ms.push(performance.now() - t);
  }
  ms.sort((a, b) => a - b);
  return { count: ms.length, p50: percentile(ms, 50), p99: percentile(ms, 99), failures };
}

/** Peak resident memory of a process in MiB (Linux VmHWM). */
export async function peakRssMiB(pid: number): Promise<number> {
  const { readFileSync } = await import('node:fs');
  const m = /^VmHWM:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}
