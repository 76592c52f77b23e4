import { QuorumError } from '../errors.js';

/**
 * JSON over HTTP for the CLI and the builder agent: non-2xx answers become a QuorumError carrying
 * the server's own message, so the user sees what the server said to fix.
 */
export async function httpJson(url: string, options: { method?: string; body?: unknown; headers?: Record<string, string>; timeoutMs?: number } = {}): Promise<unknown> {
  let res: Response;
  try {
    res = await fetch(url, {
      method: options.method ?? 'GET',
      headers: { accept: 'application/json', ...(options.body === undefined ? {} : { 'content-type': 'application/json' }), ...options.headers },
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
      signal: AbortSignal.timeout(options.timeoutMs ?? 60_000),
    });
  } catch (error) {
    throw new QuorumError('unavailable', `cannot reach ${new URL(url).origin}: ${(error as Error).message}`, { cause: error });
  }
  const text = await res.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // Not JSON: keep the text for the message.
  }
  if (!res.ok) {
    const message = typeof body === 'object' && body !== null && 'error' in body ? String((body as { error: unknown }).error) : text.slice(0, 500);
    const remoteCode = typeof body === 'object' && body !== null && 'code' in body ? String((body as { code: unknown }).code).slice(0, 64) : `http-${res.status}`;
    throw new QuorumError(res.status >= 500 ? 'unavailable' : 'refused', `${options.method ?? 'GET'} ${new URL(url).pathname}: ${res.status} ${message}`, { remoteCode });
  }
  return body;
}
