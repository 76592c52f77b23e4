import { dirname, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));

/** The package root, whether running compiled from dist/src or from src under vitest. */
export const PROJECT_ROOT = here.split(sep).includes('dist') ? resolve(here, '..', '..') : resolve(here, '..');

export const SCHEMA_FILE = join(PROJECT_ROOT, 'schema.sql');
