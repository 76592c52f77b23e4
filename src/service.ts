import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import type { Config } from './config.js';
import { dataPaths, newAdminToken, readOrCreate } from './dataDir.js';
import { openDb, type Db } from './db.js';
import { formatNoteSignerKey, formatNoteVerifierKey, generateNoteKey, parseNoteSignerKey, type NoteVerifierKey } from './ledger/checkpoint.js';
import { CheckpointPublisher } from './ledger/checkpoints.js';
import { Ingestor } from './ledger/ingest.js';
import { MerkleLog } from './ledger/log.js';
import { SignaturePool } from './ledger/signaturePool.js';
import { BuilderRegistry } from './ledger/registry.js';
import type { Logger } from './log.js';
import { formatPublicKey, formatSecretKey, generateSecretKey, parseSecretKey, type SecretKey } from './nix/keys.js';
import { DecisionMaterializer } from './quorum/decisions.js';
import { ensureDefaultPolicy } from './quorum/policies.js';
import { WalCheckpointer } from './wal/checkpointer.js';
import { WalSync } from './wal/sync.js';

/** Everything the server roles share: one database, one registry, one log, one set of keys. */
export interface Service {
  config: Config;
  logger: Logger;
  db: Db;
  registry: BuilderRegistry;
  log: MerkleLog;
  ingestor: Ingestor;
  decisions: DecisionMaterializer;
  checkpoints: CheckpointPublisher;
  origin: string;
  noteVerifier: NoteVerifierKey;
  noteVerifierText: string;
  cacheKey: SecretKey;
  adminToken: string;
  close(): void;
}

function meta(db: Db, key: string, make: () => string): string {
  const row = db.prepare('SELECT value FROM meta WHERE key = ?').get(key) as { value: string } | undefined;
  if (row) return row.value;
  const value = make();
  db.prepare('INSERT INTO meta (key, value) VALUES (?, ?)').run(key, value);
  return value;
}

/** Opens the data directory, creating database, admin token and keys on first start. */
export function openService(config: Config, logger: Logger): Service {
  const paths = dataPaths(config.dataDir);
  mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  const db = openDb(paths.db);
  const walCheckpointer = new WalCheckpointer(db, logger);
  const walSync = new WalSync(`${paths.db}-wal`);
  const instance = meta(db, 'instance_id', () => randomBytes(4).toString('hex'));
  const origin = config.ledger.origin ?? meta(db, 'origin', () => `nix-quorum-${instance}`);
  const adminToken = readOrCreate(paths.adminToken, newAdminToken);
  const cacheKey = parseSecretKey(readOrCreate(paths.cacheSecretKey, () => formatSecretKey(generateSecretKey(`nix-quorum-${instance}-1`))), 'cache key');
  readOrCreate(paths.cachePublicKey, () => formatPublicKey(cacheKey.publicKey), 0o644);
  const signer = parseNoteSignerKey(readOrCreate(paths.noteSignerKey, () => formatNoteSignerKey(generateNoteKey(origin))), 'log signer key');
  const noteVerifier = signer.verifier;
  const noteVerifierText = readOrCreate(paths.noteVerifierKey, () => formatNoteVerifierKey(noteVerifier), 0o644);

  ensureDefaultPolicy(db, config.quorum.defaultThreshold);
  const registry = new BuilderRegistry(db);
  const log = new MerkleLog(db);
  const signatures = new SignaturePool();
  const ingestor = new Ingestor(db, registry, log, signatures, walSync);
  const decisions = new DecisionMaterializer(db, registry, cacheKey, signatures, logger);
  ingestor.onCommit(({ outPaths, votesOf, from }) => decisions.recompute(outPaths, { votesOf, appendedFrom: from }));
  const checkpoints = new CheckpointPublisher(db, log, signer, origin, config.ledger.checkpointIntervalMs, logger);
  ingestor.onCommitted(() => checkpoints.committed());
  checkpoints.publish();

  return {
    config,
    logger,
    db,
    registry,
    log,
    ingestor,
    decisions,
    checkpoints,
    origin,
    noteVerifier,
    noteVerifierText,
    cacheKey,
    adminToken,
    close() {
      checkpoints.stop();
      void signatures.close();
      walCheckpointer.close();
      walSync.close();
      db.close();
    },
  };
}
