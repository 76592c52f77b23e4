import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync } from 'node:fs';
import { ensureDefaultPolicy } from './app/policies.js';
import type { Config } from './config.js';
import { DataDirLock, dataPaths, looseSecrets, newAdminToken, readAdminToken, readOrCreate, removeLeftoverTempFiles } from './dataDir.js';
import { openDb, type Db } from './db.js';
import { DatabaseHealth, unreadableDatabase } from './db/health.js';
import { DbVersion } from './db/version.js';
import { formatNoteSignerKey, formatNoteVerifierKey, generateNoteKey, parseNoteSignerKey, parseNoteVerifierKey, type NoteVerifierKey } from './ledger/checkpoint.js';
import { CheckpointPublisher } from './ledger/checkpoints.js';
import { Ingestor } from './ledger/ingest.js';
import { MerkleLog } from './ledger/log.js';
import { rebuildProjection } from './ledger/projection.js';
import { BuilderRegistry } from './ledger/registry.js';
import { SignaturePool } from './ledger/signaturePool.js';
import type { Logger } from './log.js';
import { formatPublicKey, formatSecretKey, generateSecretKey, parseSecretKey, type SecretKey } from './nix/keys.js';
import { DecisionMaterializer } from './quorum/decisions.js';
import { PolicyBook } from './quorum/policies.js';
import { WalCheckpointer } from './wal/checkpointer.js';
import { WalSync } from './wal/sync.js';

/**
 * Everything the use cases (src/app/) share: one database, its read models, one log, one set of
 * keys. Opened by `serve` and by the local admin commands alike, which hold the data directory
 * exclusively while it is open.
 */
export interface Service {
  config: Config;
  logger: Logger;
  db: Db;
  /** Whether the database can still be read (/healthz). */
  health: DatabaseHealth;
  /** What caches of registry and policy state are keyed on. */
  version: DbVersion;
  registry: BuilderRegistry;
  policies: PolicyBook;
  log: MerkleLog;
  ingestor: Ingestor;
  decisions: DecisionMaterializer;
  checkpoints: CheckpointPublisher;
  origin: string;
  noteVerifier: NoteVerifierKey;
  noteVerifierText: string;
  cacheKey: SecretKey;
  adminToken: string;
  /** Verifies Ed25519 signatures off the main thread (ingest; a mirror's replication). */
  signatures: SignaturePool;
  /** Settles once every decision row was checked against the log after this start (see deriveFromLog). */
  decisionsChecked: Promise<{ paths: number; corrected: number; ms: number }>;
  close(): void;
}

function meta(db: Db, key: string, make: () => string): string {
  const row = db.prepare('SELECT value FROM meta WHERE key = ?').get(key) as { value: string } | undefined;
  if (row) return row.value;
  const value = make();
  db.prepare('INSERT INTO meta (key, value) VALUES (?, ?)').run(key, value);
  return value;
}

/**
 * Opens the data directory, making a new ledger (database, admin token, keys) on first start: the
 * commands that act on an existing ledger call requireLedger first. At every start the registry and policy tables are rebuilt from the log's leaves and every decision
 * is checked against the log, so a database edited while the server was down serves nothing the
 * log does not imply.
 */
export function openService(config: Config, logger: Logger): Service {
  const paths = dataPaths(config.dataDir);
  // Checked before anything is created: an empty token file would open the admin API to anyone.
  const existingToken = existsSync(paths.adminToken) ? readAdminToken(paths.adminToken) : undefined;
  mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  const lock = DataDirLock.acquire(config.dataDir);
  let db: Db | undefined;
  try {
    const leftovers = removeLeftoverTempFiles(config.dataDir);
    if (leftovers.length > 0) logger.info('removed temp files of an interrupted write', { dataDir: config.dataDir, files: leftovers });
    db = openDb(paths.db, (line) => logger.info(line));
    const version = new DbVersion(db);
    const instance = meta(db, 'instance_id', () => randomBytes(4).toString('hex'));
    // A mirror's log is the one it follows, named by that log's key (the key name is the origin).
    const origin = meta(db, 'origin', () => (config.follow ? parseNoteVerifierKey(config.follow.logKey, 'follow.logKey').name : (config.ledger.origin ?? `nix-quorum-${instance}`)));
    // The origin names the log in every checkpoint its verifiers and witnesses pinned: fixed at creation.
    if (config.ledger.origin !== undefined && config.ledger.origin !== origin) {
      logger.warn('ledger.origin applies only when a ledger is created: this ledger keeps its origin', { configured: config.ledger.origin, origin });
    }
    const adminToken = existingToken ?? readOrCreate(paths.adminToken, newAdminToken);
    const cacheKey = parseSecretKey(readOrCreate(paths.cacheSecretKey, () => formatSecretKey(generateSecretKey(`nix-quorum-${instance}-1`))), 'cache key');
    readOrCreate(paths.cachePublicKey, () => formatPublicKey(cacheKey.publicKey), 0o644);
    // A mirror signs no checkpoints: it serves the ones of the log it follows, under that log's key.
    const signer = config.follow ? null : parseNoteSignerKey(readOrCreate(paths.noteSignerKey, () => formatNoteSignerKey(generateNoteKey(origin))), 'log signer key');
    const noteVerifier = signer ? signer.verifier : parseNoteVerifierKey(config.follow!.logKey, 'follow.logKey');
    const noteVerifierText = signer ? readOrCreate(paths.noteVerifierKey, () => formatNoteVerifierKey(noteVerifier), 0o644) : config.follow!.logKey.trim();
    for (const { file, mode } of looseSecrets([paths.adminToken, paths.cacheSecretKey, paths.noteSignerKey])) {
      logger.warn('a secret file is readable by other users: chmod 600 it', { file, mode });
    }

    const walCheckpointer = new WalCheckpointer(db, logger);
    const walSync = new WalSync(`${paths.db}-wal`);
    const registry = new BuilderRegistry(db, version);
    const policies = new PolicyBook(db, version);
    const log = new MerkleLog(db);
    const signatures = new SignaturePool();
    const ingestor = new Ingestor(db, registry, log, signatures, walSync, config.ledger.maxStatementsPerPath);
    const decisions = new DecisionMaterializer(db, registry, policies, cacheKey, signatures, logger);
    ingestor.onCommit(({ outPaths, votesOf, from }) => decisions.recompute(outPaths, { votesOf, appendedFrom: from }));
    const checkpoints = new CheckpointPublisher(db, log, signer, origin, config.ledger.checkpointIntervalMs, logger);
    ingestor.onCommitted(() => checkpoints.committed());
    const service: Service = {
      config,
      logger,
      db,
      health: new DatabaseHealth(paths.db, logger),
      version,
      registry,
      policies,
      log,
      ingestor,
      decisions,
      checkpoints,
      origin,
      noteVerifier,
      noteVerifierText,
      cacheKey,
      adminToken,
      signatures,
      decisionsChecked: Promise.resolve({ paths: 0, corrected: 0, ms: 0 }),
      close() {
        checkpoints.stop();
        void signatures.close();
        walCheckpointer.close();
        walSync.close();
        db!.close();
        lock.release();
      },
    };
    service.decisionsChecked = deriveFromLog(service);
    service.decisionsChecked.catch((err: unknown) => logger.error('checking the decisions against the log failed', { err }));
    // A mirror's policies, like all it holds, come from the log it follows.
    if (!config.follow) ensureDefaultPolicy(service, config.quorum.defaultThreshold ?? 2);
    const threshold = policies.get('default')?.threshold;
    if (!config.follow && config.quorum.defaultThreshold !== undefined && threshold !== config.quorum.defaultThreshold) {
      logger.warn('quorum.defaultThreshold applies only when a ledger is created: change the default policy with `nix-quorum policy set default --threshold K`', {
        configured: config.quorum.defaultThreshold,
        defaultPolicyThreshold: threshold,
      });
    }
    if (signer) checkpoints.publish();
    return service;
  } catch (error) {
    if (db?.open) db.close();
    lock.release();
    // Damaged pages are found by the first queries (the rebuild from the log reads every leaf): one line too.
    throw unreadableDatabase(error, paths.db) ?? error;
  }
}

/**
 * Rebuilds the registry and policy tables from the log, then has every decision checked against it
 * in the background (until that is done the substituter checks each path before serving it).
 */
function deriveFromLog(s: Service): Promise<{ paths: number; corrected: number; ms: number }> {
  const { corrections } = s.db.transaction(() => rebuildProjection(s.db, s.log)).immediate();
  s.version.touch();
  for (const line of corrections) s.logger.warn(`the database did not follow from the log: ${line}`);
  return s.decisions.reconcile().then((result) => {
    if (result.corrected > 0) s.logger.warn('decisions that did not follow from the log were corrected', { corrected: result.corrected });
    s.logger.info('decisions checked against the log', result);
    return result;
  });
}
