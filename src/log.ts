/** JSON-lines logs on stderr: one object per event, easy to ship and grep. */
export type Level = 'debug' | 'info' | 'warn' | 'error';
const RANK: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

export function createLogger(level: Level = 'info', write: (line: string) => void = toStderr): Logger {
  const emit = (at: Level) => (msg: string, fields: Record<string, unknown> = {}) => {
    if (RANK[at] < RANK[level]) return;
    write(`${JSON.stringify({ time: new Date().toISOString(), level: at, msg, ...fields }, errorReplacer)}\n`);
  };
  return { debug: emit('debug'), info: emit('info'), warn: emit('warn'), error: emit('error') };
}

function errorReplacer(_key: string, value: unknown): unknown {
  if (value instanceof Error) return { name: value.name, message: value.message, code: (value as { code?: unknown }).code };
  return value;
}

/**
 * Makes a failed write to `stream` drop what was written instead of crashing the process: stderr
 * redirected to a file on a full disk (ENOSPC), or a pipe whose reader went away (EPIPE). Node
 * reports those as an 'error' event, fatal without a listener; a server must outlive its log.
 */
export function dropFailedWrites(stream: NodeJS.WritableStream): void {
  if (!guarded.has(stream)) stream.on('error', () => undefined);
  guarded.add(stream);
}

const guarded = new WeakSet<NodeJS.WritableStream>();

function toStderr(line: string): void {
  dropFailedWrites(process.stderr);
  process.stderr.write(line);
}
