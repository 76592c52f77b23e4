import { STORE_DIR } from '../../nix/storePath.js';
import { html, type Html, type HtmlValue } from '../html.js';
import type { IndexProgress } from '../model.js';
import type { PathClass } from '../webIndex.js';

/** The page shell and the small formatting pieces every page shares. */

export type Section = 'overview' | 'search' | 'builders' | 'conflicts' | 'log' | 'path';

const NAV: Array<[Exclude<Section, 'search' | 'path'>, string, string]> = [
  ['overview', '/', 'Overview'],
  ['builders', '/builders', 'Builders'],
  ['conflicts', '/conflicts', 'Conflicts'],
  ['log', '/transparency-log', 'Log'],
];

export interface PageOptions {
  title: string;
  section: Section;
  /** Shown in the header's search box. */
  q?: string;
  /** Scripts served from /assets, in order (the path page's verification). */
  scripts?: Array<{ src: string; module: boolean }>;
}

export function layout(options: PageOptions, body: HtmlValue): string {
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${options.title} · nix-quorum ledger</title>
<link rel="stylesheet" href="/assets/style.css">
<link rel="icon" href="/assets/favicon.svg" type="image/svg+xml">
</head>
<body>
<header>
<nav aria-label="Ledger">
<a class="brand" href="/">nix-quorum ledger</a>
<ul>${NAV.map(([section, href, label]) => html`<li><a href="${href}"${section === options.section ? html` aria-current="page"` : ''}>${label}</a></li>`)}</ul>
</nav>
<form class="search" action="/search" method="get" role="search">
<label for="q" class="visually-hidden">Store path, hash part, name or derivation path</label>
<input id="q" name="q" type="search" value="${options.q ?? ''}" placeholder="store path, hash part, name or .drv" autocomplete="off" spellcheck="false">
<button type="submit">Search</button>
</form>
</header>
<main>
${body}
</main>
<footer><p>Everything here is also JSON under <a href="/api/v1/stats">/api/v1</a>. Do not take this server's word for it: <a href="/transparency-log">verify the log</a>.</p></footer>
${(options.scripts ?? []).map((s) => html`<script${s.module ? html` type="module"` : ''} src="${s.src}"></script>\n`)}
</body>
</html>
`.text;
}

export function int(n: number): string {
  return n.toLocaleString('en-US');
}

export function time(iso: string): Html {
  return html`<time datetime="${iso}">${iso.replace('T', ' ').replace(/\.\d+Z$/, ' UTC')}</time>`;
}

export function hashPartOf(storePath: string): string {
  return storePath.slice(STORE_DIR.length + 1, STORE_DIR.length + 33);
}

/** A store path linking to its page, breakable anywhere so it fits a phone screen. */
export function pathLink(storePath: string): Html {
  return html`<a class="path" href="/paths/${encodeURIComponent(hashPartOf(storePath))}">${storePath}</a>`;
}

export function leafLink(leaf: number): Html {
  return html`<a href="/leaves/${leaf}" title="the log entry, its fields and inclusion proof">${int(leaf)}</a>`;
}

const CLASS_TEXT: Record<PathClass, string> = {
  reproduced: 'reproduced',
  unreproduced: 'builders disagree',
  single: 'one builder',
};

export function classBadge(cls: PathClass): Html {
  return html`<span class="badge class-${cls}">${CLASS_TEXT[cls]}</span>`;
}

export function statusBadge(status: string): Html {
  return html`<span class="badge status-${status}">${status}</span>`;
}

/** A notice while the web index has not read the whole log yet (e.g. right after an upgrade). */
export function indexNotice(p: IndexProgress): Html | '' {
  if (p.indexed >= p.logSize) return '';
  return html`<p class="notice" role="status">The search index has read ${int(p.indexed)} of ${int(p.logSize)} log entries so far; counts and results cover those.</p>`;
}

export function list(items: readonly string[], empty = 'none'): Html {
  return items.length === 0 ? html`<span class="muted">${empty}</span>` : html`${items.map((x, i) => html`${i > 0 ? ', ' : ''}${x}`)}`;
}
