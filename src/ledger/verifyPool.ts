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
 * A batch travels as one transferred buffer (key, signature, message length, message per check):
 * structured-cloning three Buffers per check cost the main thread as much as a third of a verify.
 */
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { createPublicKey, verify } = require('node:crypto');
const SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');
const keys = new Map();
parentPort.on('message', ({ id, packed, count }) => {
  const buf = Buffer.from(packed);
  const ok = new Uint8Array(count);
  let at = 0;
  for (let i = 0; i < count; i++) {
    const raw = buf.subarray(at, at + 32);
    const signature = buf.subarray(at + 32, at + 96);
    const length = buf.readUInt32LE(at + 96);
    const message = buf.subarray(at + 100, at + 100 + length);
    at += 100 + length;
    const hex = raw.toString('hex');
    let object = keys.get(hex);
    if (!object) {
      object = createPublicKey({ key: Buffer.concat([SPKI_PREFIX, raw]), format: 'der', type: 'spki' });
      keys.set(hex, object);
    }
    ok[i] = verify(null, message, object, signature) ? 1 : 0;
  }
  parentPort.postMessage({ id, ok }, [ok.buffer]);
});
`;

const INLINE_BELOW = 8;

/**
 * One worker per core but the main thread's, except on two cores or fewer: there the main thread
 * idles while fsyncs run and between batches, and one worker per core ingested 5-10% faster
 * (bench/ingest).
 */
function defaultPoolSize(): number {
  const cores = availableParallelism();
  return cores <= 2 ? cores : cores - 1;
}

export class VerifyPool {
  private readonly workers: Worker[] = [];
  private readonly pending = new Map<number, (ok: boolean[]) => void>();
  private nextId = 0;
  private nextWorker = 0;

  constructor(size = defaultPoolSize()) {
    for (let i = 0; i < size; i++) {
      const worker = new Worker(WORKER_SOURCE, { eval: true });
      worker.on('message', ({ id, ok }: { id: number; ok: Uint8Array }) => {
        this.pending.get(id)?.(Array.from(ok, (b) => b === 1));
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
    // A signature that is not 64 bytes is invalid on its face (verifyRaw says the same); the packed
    // format has room for exactly 64.
    const sized = checks.map((c) => c.signature.length === 64);
    const ok = await this.post(checks.filter((_, i) => sized[i]));
    let k = 0;
    return sized.map((s) => s && ok[k++]!);
  }

  private post(checks: SignatureCheck[]): Promise<boolean[]> {
    const id = this.nextId++;
    const worker = this.workers[this.nextWorker++ % this.workers.length]!;
    const packed = pack(checks);
    return new Promise((resolve) => {
      this.pending.set(id, resolve);
      worker.ref();
      worker.postMessage({ id, packed, count: checks.length }, [packed]);
    });
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}

function pack(checks: SignatureCheck[]): ArrayBuffer {
  let size = 0;
  for (const c of checks) size += 100 + c.message.length;
  const buf = Buffer.from(new ArrayBuffer(size));
  let at = 0;
  for (const c of checks) {
    buf.set(c.key.raw, at);
    buf.set(c.signature, at + 32);
    buf.writeUInt32LE(c.message.length, at + 96);
    buf.set(c.message, at + 100);
    at += 100 + c.message.length;
  }
  return buf.buffer as ArrayBuffer;
}
