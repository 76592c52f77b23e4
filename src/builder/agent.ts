import cron from 'node-cron';
import { existsSync, mkdirSync, watch, type FSWatcher } from 'node:fs';
import { join } from 'node:path';
import { backoffDelay, drain, type DrainOptions, type DrainReport } from './drain.js';

export interface AgentOptions extends DrainOptions {
  /** node-cron schedule of the regular drain (config builder.agentCron). */
  cron: string;
  /** First and longest wait before draining again after a drain left entries undelivered. */
  backoff: { baseDelayMs: number; maxDelayMs: number };
  onDrained?: (report: DrainReport) => void;
}

export interface Agent {
  /** Stops scheduling and waits for the drain in progress, if any. */
  stop(): Promise<void>;
}

/** How long a burst of hook writes is gathered into one drain. */
const WATCH_DEBOUNCE_MS = 100;

/**
 * The long-running delivery loop: drains at once, whenever the hook adds an entry (fs.watch), on the
 * cron schedule, and, while entries keep failing, again after an exponential backoff. Never two
 * drains at a time; a trigger during a drain runs one more pass after it. All state is in the spool.
 */
export function startAgent(options: AgentOptions): Agent {
  const { spool, logger } = options;
  mkdirSync(spool.dir, { recursive: true, mode: 0o700 });
  let running: Promise<void> | null = null;
  let again = false;
  let stopped = false;
  let failures = 0;
  let retryTimer: NodeJS.Timeout | undefined;
  let debounce: NodeJS.Timeout | undefined;

  const pass = async (): Promise<void> => {
    let report: DrainReport;
    try {
      report = await drain(options);
    } catch (error) {
      logger.error('drain failed', { error });
      report = { delivered: 0, failed: [{ entry: '(spool)', error: (error as Error).message }], quarantined: [] };
    }
    options.onDrained?.(report);
    clearTimeout(retryTimer);
    if (report.failed.length === 0) {
      failures = 0;
      return;
    }
    const delay = backoffDelay(failures++, options.backoff.baseDelayMs, options.backoff.maxDelayMs);
    logger.info('entries left undelivered; retrying later', { undelivered: report.failed.length, retryInMs: Math.round(delay) });
    if (!stopped) retryTimer = setTimeout(() => kick(), delay);
  };

  const kick = (): void => {
    if (stopped) return;
    if (running) {
      again = true;
      return;
    }
    running = (async () => {
      do {
        again = false;
        await pass();
      } while (again && !stopped);
      running = null;
    })();
  };

  const task = cron.schedule(options.cron, kick);
  let watcher: FSWatcher | undefined;
  try {
    // Entries appear by rename; our own removals fire too, so only a file that exists now counts.
    watcher = watch(spool.dir, (_event, file) => {
      if (!file || !file.endsWith('.json') || !existsSync(join(spool.dir, file))) return;
      clearTimeout(debounce);
      debounce = setTimeout(kick, WATCH_DEBOUNCE_MS);
    });
  } catch (error) {
    logger.warn('cannot watch the spool; new entries wait for the schedule', { spool: spool.dir, error });
  }
  logger.info('agent started', { spool: spool.dir, server: options.client.url('').href, cron: options.cron, concurrency: options.concurrency });
  kick();

  return {
    async stop() {
      stopped = true;
      task.stop();
      watcher?.close();
      clearTimeout(retryTimer);
      clearTimeout(debounce);
      await running;
    },
  };
}
