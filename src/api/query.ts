import type { Request } from 'express';
import { z } from 'zod';
import { QuorumError } from '../errors.js';
import { describeZodError } from '../ledger/attestation.js';

/**
 * Parses query parameters with a schema made once (queryOf): building a zod schema costs more than
 * the lookup it guards, so never per request. Throws a 400 that names the parameter.
 */
export function query<T extends z.ZodRawShape>(req: Request, schema: z.ZodObject<T>): z.output<z.ZodObject<T>> {
  const parsed = schema.safeParse(req.query);
  if (!parsed.success) throw new QuorumError('bad-query', describeZodError(parsed.error), { field: String(parsed.error.issues[0]?.path[0] ?? '') });
  return parsed.data;
}

/** Parses path parameters with a schema made once, throwing a 400 that names the parameter. */
export function params<T extends z.ZodRawShape>(req: Request, schema: z.ZodObject<T>): z.output<z.ZodObject<T>> {
  const parsed = schema.safeParse(req.params);
  if (!parsed.success) throw new QuorumError('bad-request', describeZodError(parsed.error), { field: String(parsed.error.issues[0]?.path[0] ?? '') });
  return parsed.data;
}

export const queryOf = <T extends z.ZodRawShape>(shape: T) => z.object(shape);

/** Parses a request body (or what a route made of it) with zod, throwing a 400 with `code` that names the field. */
export function input<T extends z.ZodType>(schema: T, value: unknown, code: 'bad-builder' | 'bad-policy'): z.output<T> {
  const parsed = schema.safeParse(value);
  if (!parsed.success) throw new QuorumError(code, describeZodError(parsed.error), { field: String(parsed.error.issues[0]?.path[0] ?? '') });
  return parsed.data;
}

/** A tree size or leaf index: up to 2^53 - 1, never through 32-bit arithmetic. */
export const treeIndex = (name: string) =>
  z.coerce.number({ error: `${name} must be a non-negative integer` }).int(`${name} must be an integer`).min(0, `${name} must be at least 0`).max(Number.MAX_SAFE_INTEGER);
