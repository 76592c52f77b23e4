import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import type { Db } from '../db.js';
import type { Logger } from '../log.js';

/**
 * Moves SQLite's WAL checkpoints off the thread that commits. With auto-checkpointing, the commit
 * that crosses 1,000 WAL pages copies them into the database file and fsyncs both files while the
 * event loop waits: under ingest that was a third of the server's time and most of its fsyncs.
 * Here a worker with its own connection runs PASSIVE checkpoints on a timer; they never block the
 * writer (SQLite lets a checkpoint run beside a writing connection), and once every frame is copied
 * the next commit restarts the WAL from its beginning, so it stays about one interval of writes long.
 *
 * The worker is CommonJS evaluated from a string (like the verify pool) so it runs the same from
 * dist/ and under vitest; it is handed the resolved better-sqlite3 entry point.
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.sqlite);
const db = new Database(workerData.file);
db.pragma('busy_timeout = 10000');
db.pragma('synchronous = FULL');
const run = () => {
  try {
    const [result] = db.pragma('wal_checkpoint(PASSIVE)');
    parentPort.postMessage({ result });
  } catch (err) {
    parentPort.postMessage({ error: String(err && err.message || err) });
  }
};
const timer = setInterval(run, workerData.intervalMs);
parentPort.on('message', (message) => {
  if (message !== 'close') return;
  clearInterval(timer);
  db.close();
  const closed = new Int32Array(workerData.closed);
  Atomics.store(closed, 0, 1);
  Atomics.notify(closed, 0);
  parentPort.close();
});
`;

/** How often the worker checkpoints: bounds the WAL to about this long of writes. */
const INTERVAL_MS = 1000;
/** What SQLite does without a checkpointer; restored if the worker fails. */
const AUTO_CHECKPOINT_PAGES = 1000;
/** Longest close() waits for a checkpoint in progress to finish. */
const CLOSE_TIMEOUT_MS = 10_000;

export interface CheckpointResult {
  busy: number;
  log: number;
  checkpointed: number;
}

export class WalCheckpointer {
  private readonly worker: Worker;
  private readonly listeners: Array<(result: CheckpointResult) => void> = [];
  /** Set to 1 by the worker once its connection is closed. */
  private readonly closed = new Int32Array(new SharedArrayBuffer(4));
  private failed = false;
  private exited = false;

  constructor(
    private readonly db: Db,
    logger: Logger,
    intervalMs = INTERVAL_MS,
  ) {
    const sqlite = createRequire(import.meta.url).resolve('better-sqlite3');
    this.worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { sqlite, file: db.name, intervalMs, closed: this.closed.buffer } });
    this.worker.unref();
    // Stop auto-checkpointing only once the worker is there to take over.
    db.pragma('wal_autocheckpoint = 0');
    const fallBack = (why: string) => {
      if (this.failed) return;
      this.failed = true;
      logger.error('WAL checkpointer stopped; commits checkpoint the WAL themselves again', { err: why });
      if (db.open) db.pragma(`wal_autocheckpoint = ${AUTO_CHECKPOINT_PAGES}`);
    };
    this.worker.on('message', (message: { result?: CheckpointResult; error?: string }) => {
      if (message.error !== undefined) logger.warn('WAL checkpoint failed; retrying on the next interval', { err: message.error });
      else for (const listener of this.listeners) listener(message.result!);
    });
    this.worker.on('error', (err) => fallBack(err.message));
    this.worker.on('exit', (code) => {
      this.exited = true;
      if (code !== 0) fallBack(`worker exited with code ${code}`);
    });
  }

  /** Called after each checkpoint (tests and metrics). */
  onCheckpoint(listener: (result: CheckpointResult) => void): void {
    this.listeners.push(listener);
  }

  /**
   * Closes the worker's connection, waiting for it (and a checkpoint it may be running) so that the
   * caller's connection, closed next, is the last one: SQLite then checkpoints and removes the WAL
   * before the caller goes on, e.g. to delete the directory.
   */
  close(): void {
    this.failed = true;
    if (this.exited) return;
    this.worker.postMessage('close');
    Atomics.wait(this.closed, 0, 0, CLOSE_TIMEOUT_MS);
  }
}
