import { closeSync, fdatasync, fsyncSync, openSync } from 'node:fs';
import { dirname } from 'node:path';

/**
 * fsyncs a WAL file on the thread pool, so the event loop keeps parsing and verifying the next
 * batch while the disk flushes the last one. Ingest commits with synchronous=NORMAL (SQLite writes
 * the WAL frames but does not wait for the disk) and acknowledges only after sync() resolves: the
 * same guarantee as synchronous=FULL, where SQLite fsyncs the WAL inside COMMIT with the event loop
 * blocked, about 30 ms per batch here. fdatasync on any descriptor of the file flushes every page
 * written before it started, so callers that arrive while one runs share the next (group commit).
 */
export class WalSync {
  private fd: number | undefined;
  private requested = 0;
  private running = false;
  private waiters: Array<{ ticket: number; resolve: () => void; reject: (error: Error) => void }> = [];
  /** Counts the fdatasync calls (benchmarks and tests). */
  syncs = 0;

  constructor(private readonly walFile: string) {}

  /** Resolves once everything written to the WAL before this call is on disk. */
  sync(): Promise<void> {
    const ticket = ++this.requested;
    const done = new Promise<void>((resolve, reject) => this.waiters.push({ ticket, resolve, reject }));
    this.pump();
    return done;
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }

  private pump(): void {
    if (this.running || this.waiters.length === 0) return;
    let fd: number;
    try {
      fd = this.open();
    } catch (error) {
      for (const w of this.waiters.splice(0)) w.reject(error as Error);
      return;
    }
    this.running = true;
    // Every ticket issued so far was issued after its writes: this flush covers them all.
    const covers = this.requested;
    this.syncs++;
    fdatasync(fd, (error) => {
      this.running = false;
      const settled = this.waiters.filter((w) => w.ticket <= covers);
      this.waiters = this.waiters.filter((w) => w.ticket > covers);
      for (const w of settled) {
        if (error) w.reject(error);
        else w.resolve();
      }
      this.pump();
    });
  }

  /**
   * SQLite creates the WAL on the connection's first write and keeps the same file (truncating it,
   * never replacing it) while a connection is open. A new file also needs its directory entry on
   * disk, which SQLite's own first WAL sync would have done.
   */
  private open(): number {
    if (this.fd !== undefined) return this.fd;
    this.fd = openSync(this.walFile, 'r');
    const dir = openSync(dirname(this.walFile), 'r');
    try {
      fsyncSync(dir);
    } finally {
      closeSync(dir);
    }
    return this.fd;
  }
}
