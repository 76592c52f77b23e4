import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { signRaw, verifyRaw, type PublicKey, type SecretKey } from '../nix/keys.js';

export interface SignatureCheck {
  key: PublicKey;
  message: Buffer;
  signature: Buffer;
}

/**
 * Ed25519 off the main thread: verifying attestations (about 110 µs each) and the cache key's
 * signatures of paths that reached quorum (about 50 µs each). Ingest is bound by those plus SQLite
 * work on the one thread that owns the database; doing them in workers lets both run at once.
 * Small batches are done inline, where a round trip to a worker would cost more.
 * The worker is plain CommonJS evaluated from a string so it runs the same from dist/ and under vitest.
 * A batch travels as one transferred buffer (verify: key, signature, message length, message per
 * check; sign: seed, then message length and message per message): structured-cloning three Buffers
 * per check cost the main thread as much as a third of a verify.
 */
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { createPrivateKey, createPublicKey, sign, verify } = require('node:crypto');
const SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');
const PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
const keys = new Map();
function verifyAll(buf, count) {
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
  return ok;
}
function signAll(buf, count) {
  const key = createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, buf.subarray(0, 32)]), format: 'der', type: 'pkcs8' });
  const out = new Uint8Array(64 * count);
  let at = 32;
  for (let i = 0; i < count; i++) {
    const length = buf.readUInt32LE(at);
    out.set(sign(null, buf.subarray(at + 4, at + 4 + length), key), 64 * i);
    at += 4 + length;
  }
  return out;
}
parentPort.on('message', ({ id, op, packed, count }) => {
  const result = (op === 'sign' ? signAll : verifyAll)(Buffer.from(packed), count);
  parentPort.postMessage({ id, result }, [result.buffer]);
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

export class SignaturePool {
  private readonly workers: Worker[] = [];
  private readonly pending = new Map<number, (result: Uint8Array) => void>();
  private nextId = 0;
  private nextWorker = 0;

  constructor(size = defaultPoolSize()) {
    for (let i = 0; i < size; i++) {
      const worker = new Worker(WORKER_SOURCE, { eval: true });
      worker.on('message', ({ id, result }: { id: number; result: Uint8Array }) => {
        this.pending.get(id)?.(result);
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
    const ok = await this.post('verify', packChecks(checks.filter((_, i) => sized[i])));
    let k = 0;
    return sized.map((s) => s && ok[k++] === 1);
  }

  /** Raw 64-byte signatures of `messages` by `key`, in order. */
  async sign(key: SecretKey, messages: string[]): Promise<Buffer[]> {
    if (messages.length < INLINE_BELOW || this.workers.length === 0) return messages.map((m) => signRaw(key, m));
    const sigs = Buffer.from((await this.post('sign', packMessages(key.seed, messages))).buffer);
    return messages.map((_, i) => sigs.subarray(64 * i, 64 * (i + 1)));
  }

  private post(op: 'verify' | 'sign', [packed, count]: [ArrayBuffer, number]): Promise<Uint8Array> {
    const id = this.nextId++;
    const worker = this.workers[this.nextWorker++ % this.workers.length]!;
    return new Promise((resolve) => {
      this.pending.set(id, resolve);
      worker.ref();
      worker.postMessage({ id, op, packed, count }, [packed]);
    });
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}

function packChecks(checks: SignatureCheck[]): [ArrayBuffer, number] {
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
  return [buf.buffer as ArrayBuffer, checks.length];
}

function packMessages(seed: Buffer, messages: string[]): [ArrayBuffer, number] {
  const encoded = messages.map((m) => Buffer.from(m));
  let size = 32;
  for (const m of encoded) size += 4 + m.length;
  const buf = Buffer.from(new ArrayBuffer(size));
  buf.set(seed, 0);
  let at = 32;
  for (const m of encoded) {
    buf.writeUInt32LE(m.length, at);
    buf.set(m, at + 4);
    at += 4 + m.length;
  }
  return [buf.buffer as ArrayBuffer, messages.length];
}
