import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { availableParallelism } from 'node:os';
import type { Config } from '../config.js';
import { dataPaths, readOrCreate } from '../dataDir.js';
import { openDb } from '../db.js';
import { QuorumError } from '../errors.js';
import { listen } from '../http/listen.js';
import { parseNoteVerifierKey, type NoteVerifierKey } from '../ledger/checkpoint.js';
import { SignaturePool } from '../ledger/signaturePool.js';
import type { Logger } from '../log.js';
import { WalSync } from '../wal/sync.js';
import { checkDistinctFromLog, formatCosignerSigner, generateCosignerKey, parseCosignerSigner, type CosignerSigner } from './cosignature.js';
import { createWitnessMetrics, type WitnessMetrics } from './metrics.js';
import { Witness, type WitnessAnswer } from './witness.js';

/**
 * `nix-quorum witness`: a c2sp.org/tlog-witness over HTTP (bare node:http: four routes).
 *
 *   POST /add-checkpoint           the protocol
 *   GET  /<sha256 hex of origin>/checkpoint   the latest checkpoint cosigned, with our cosignature (monitoring)
 *   GET  /evidence?origin=&limit=&before=     refused checkpoints kept as evidence, newest first (JSON)
 *   GET  /metrics, /healthz
 */

/** Room for 63 proof lines and a checkpoint with dozens of signatures (even post-quantum ones). */
const MAX_BODY = 256 * 1024;
const MAX_EVIDENCE_PAGE = 100;

export interface RunningWitness {
  url: string;
  vkey: string;
  witness: Witness;
  close(): Promise<void>;
}

/** Opens the witness's data directory (creating its key on first start) and serves until close(). */
export async function startWitness(config: Config, logger: Logger): Promise<RunningWitness> {
  const paths = dataPaths(config.dataDir);
  mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  const signer = witnessKey(paths, config.witness.name);
  const logs = trustedLogs(config, signer);
  const db = openDb(paths.witnessDb);
  // Every write is followed by an fdatasync of the WAL on the thread pool before anything is answered
  // (WalSync): the durability of synchronous=FULL without blocking the event loop on the disk.
  db.pragma('synchronous = NORMAL');
  const walSync = new WalSync(`${paths.witnessDb}-wal`);
  const pool = new SignaturePool(poolSize());
  const metrics = createWitnessMetrics();
  const witness = new Witness(db, walSync, signer, logs, pool, metrics, logger);
  const byOriginHash = new Map([...logs.keys()].map((origin) => [createHash('sha256').update(origin).digest('hex'), origin]));

  const server = createServer((req, res) => {
    route(req, res, witness, byOriginHash, metrics).catch((error) => {
      if (error instanceof QuorumError && !res.headersSent) return sendError(res, error);
      logger.error('witness request failed', { err: error, url: req.url });
      if (!res.headersSent) sendError(res, new QuorumError('internal', 'internal error'));
      else res.destroy();
    });
  });
  await listen(server, config.listen.host, config.listen.port);
  const address = server.address() as AddressInfo;
  const url = `http://${address.family === 'IPv6' ? `[${address.address}]` : address.address}:${address.port}`;
  logger.info('witness listening', { url, vkey: signer.verifier.text, logs: [...logs.keys()] });
  return {
    url,
    vkey: signer.verifier.text,
    witness,
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closed;
      await pool.close();
      walSync.close();
      db.close();
    },
  };
}

/**
 * Verifying and signing in workers pays on a machine with cores to spare; on two cores, shared with
 * the logs that submit, the round trips cost more than they free: inline was 10% faster and used a
 * quarter less CPU per request (bench/witness, docs/benchmarks.md).
 */
function poolSize(): number {
  const cores = availableParallelism();
  return cores > 2 ? cores - 1 : 0;
}

/** DATA/witness-key.secret (0600) and .vkey (0644), made on first start under `name` (or a random one). */
function witnessKey(paths: ReturnType<typeof dataPaths>, name: string | undefined): CosignerSigner {
  const fresh = !existsSync(paths.witnessSecretKey);
  const signer = parseCosignerSigner(readOrCreate(paths.witnessSecretKey, () => formatCosignerSigner(generateCosignerKey(name ?? `nix-quorum-witness-${randomBytes(4).toString('hex')}`))), paths.witnessSecretKey);
  if (!fresh && name !== undefined && name !== signer.verifier.name) {
    throw new QuorumError('bad-config', `${paths.witnessSecretKey} is the key of witness ${signer.verifier.name}, not ${name}: drop --name, or use another data directory for a new witness`, { field: 'witness.name' });
  }
  const vkey = readOrCreate(paths.witnessVerifierKey, () => `${signer.verifier.text}\n`, 0o644);
  if (vkey !== signer.verifier.text) throw new QuorumError('bad-config', `${paths.witnessVerifierKey} does not match ${paths.witnessSecretKey}: delete the .vkey file to write it again`, { field: 'witness' });
  return signer;
}

function trustedLogs(config: Config, signer: CosignerSigner): Map<string, NoteVerifierKey[]> {
  if (config.witness.logs.length === 0) throw new QuorumError('bad-config', 'a witness needs at least one log to witness: --log ORIGIN=VKEY (or witness.logs in the config file)', { field: 'witness.logs' });
  const logs = new Map<string, NoteVerifierKey[]>();
  config.witness.logs.forEach(({ origin, vkey }, i) => {
    const key = parseNoteVerifierKey(vkey, `witness.logs[${i}].vkey`);
    checkDistinctFromLog(signer.verifier, key, `witness.logs[${i}].vkey`);
    logs.set(origin, [...(logs.get(origin) ?? []), key]);
  });
  return logs;
}

async function route(req: IncomingMessage, res: ServerResponse, witness: Witness, byOriginHash: Map<string, string>, metrics: WitnessMetrics): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://witness');
  if (url.pathname === '/add-checkpoint') {
    if (req.method !== 'POST') return sendError(res, new QuorumError('method-not-allowed', 'add-checkpoint takes POST'));
    const text = await readBody(req);
    if (text === undefined) return sendError(res, new QuorumError('too-large', `an add-checkpoint body is at most ${MAX_BODY} bytes`));
    const started = process.hrtime.bigint();
    const answer = await witness.addCheckpoint(text);
    send(res, answer);
    metrics.requests.inc({ status: answer.status === 'error' ? answer.error.status : answer.status });
    metrics.seconds.observe(Number(process.hrtime.bigint() - started) / 1e9);
    return;
  }
  if (req.method !== 'GET' && req.method !== 'HEAD') return sendError(res, new QuorumError('method-not-allowed', `${req.method} is not served here`));
  const monitored = /^\/([0-9a-f]{64})\/checkpoint$/.exec(url.pathname);
  if (monitored) {
    const origin = byOriginHash.get(monitored[1]!);
    const note = origin === undefined ? undefined : witness.cosignedHead(origin);
    if (note === undefined) return sendError(res, new QuorumError('not-found', 'this witness has not cosigned a checkpoint of that log'));
    return sendText(res, 200, 'text/plain; charset=utf-8', note);
  }
  if (url.pathname === '/evidence') {
    const limit = Math.min(MAX_EVIDENCE_PAGE, cursor(url, 'limit') ?? MAX_EVIDENCE_PAGE);
    const before = cursor(url, 'before');
    const origin = url.searchParams.get('origin') ?? undefined;
    const evidence = witness.state.evidence({ origin, limit, before });
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ witness: witness.vkey, evidence, next: evidence.length === limit ? evidence.at(-1)!.id : null }));
    return;
  }
  if (url.pathname === '/metrics') return sendText(res, 200, metrics.registry.contentType, await metrics.registry.metrics());
  if (url.pathname === '/healthz') return sendText(res, 200, 'text/plain', 'ok\n');
  sendError(res, new QuorumError('not-found', `not found: ${url.pathname}`));
}

function cursor(url: URL, name: string): number | undefined {
  const value = url.searchParams.get(name);
  if (value === null || value === '') return undefined;
  if (!/^[1-9][0-9]{0,15}$/.test(value)) throw new QuorumError('bad-query', `${name} must be a positive integer`, { field: name });
  return Number(value);
}

/** The body as UTF-8 text, or undefined past MAX_BODY (the rest is drained, not buffered). */
function readBody(req: IncomingMessage): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size <= MAX_BODY) chunks.push(chunk);
    });
    req.once('end', () => resolve(size > MAX_BODY ? undefined : Buffer.concat(chunks).toString('utf8')));
    req.once('error', reject);
  });
}

function send(res: ServerResponse, answer: WitnessAnswer): void {
  if (answer.status === 200) return sendText(res, 200, 'text/plain; charset=utf-8', answer.cosignature);
  // tlog-witness: the latest cosigned size, in decimal, and a newline.
  if (answer.status === 409) return sendText(res, 409, 'text/x.tlog.size', `${answer.size}\n`);
  sendError(res, answer.error);
}

function sendError(res: ServerResponse, error: QuorumError): void {
  const body = JSON.stringify({ error: error.message, code: error.code, ...(error.field ? { field: error.field } : {}) });
  res.writeHead(error.status, { 'content-type': 'application/json' });
  res.end(body);
}

function sendText(res: ServerResponse, status: number, type: string, body: string): void {
  res.writeHead(status, { 'content-type': type });
  res.end(body);
}
