import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { verifyRaw, type PublicKey } from '../nix/keys.js';

export interface SignatureCheck {
  key: PublicKey;
  message: Buffer;
  signature: Buffer;
}

/**
 * Ed25519 verification off the main thread. Ingest is bound by verification (about 140 µs each)
 * plus SQLite work on the one thread that owns the database; verifying in workers lets both run
 * at once. Small batches are verified inline, where a round trip to a worker would cost more.
 * The worker is plain CommonJS evaluated from a string so it runs the same from dist/ and under vitest.
 */
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { createPublicKey, verify } = require('node:crypto');
const SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');
const keys = new Map();
parentPort.on('message', ({ id, checks }) => {
  const ok = checks.map(({ key, message, signature }) => {
    const raw = Buffer.from(key);
    const hex = raw.toString('hex');
    let object = keys.get(hex);
    if (!object) {
      object = createPublicKey({ key: Buffer.concat([SPKI_PREFIX, raw]), format: 'der', type: 'spki' });
      keys.set(hex, object);
    }
    return signature.length === 64 && verify(null, message, object, signature);
  });
  parentPort.postMessage({ id, ok });
});
`;

const INLINE_BELOW = 8;

export class VerifyPool {
  private readonly workers: Worker[] = [];
  private readonly pending = new Map<number, (ok: boolean[]) => void>();
  private nextId = 0;
  private nextWorker = 0;

  constructor(size = Math.max(1, availableParallelism() - 1)) {
    for (let i = 0; i < size; i++) {
      const worker = new Worker(WORKER_SOURCE, { eval: true });
      worker.on('message', ({ id, ok }: { id: number; ok: boolean[] }) => {
        this.pending.get(id)?.(ok);
        this.pending.delete(id);
        // An idle pool must not keep the process alive; a busy one must, until its answers arrive.
        if (this.pending.size === 0) for (const w of this.workers) w.unref();
      });
      worker.unref();
      this.workers.push(worker);
    }
  }

  async verify(checks: SignatureCheck[]): Promise<boolean[]> {
    if (checks.length < INLINE_BELOW || this.workers.length === 0) return checks.map((c) => verifyRaw(c.key, c.message, c.signature));
    const id = this.nextId++;
    const worker = this.workers[this.nextWorker++ % this.workers.length]!;
    return new Promise((resolve) => {
      this.pending.set(id, resolve);
      worker.ref();
      worker.postMessage({ id, checks: checks.map((c) => ({ key: c.key.raw, message: c.message, signature: c.signature })) });
    });
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}
