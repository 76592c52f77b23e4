import { html, type Html } from '../html.js';
import type { PathSummaryJson, SearchData } from '../model.js';
import { classBadge, indexNotice, int, layout, leafLink, pathLink, statusBadge } from './layout.js';

export function pathTable(rows: PathSummaryJson[], caption: string): Html {
  return html`<div class="table"><table class="cards">
<caption>${caption}</caption>
<thead><tr><th scope="col">Output path</th><th scope="col">Builders</th><th scope="col">Reproducibility</th><th scope="col">Default policy</th><th scope="col">Last leaf</th></tr></thead>
<tbody>${rows.map(
    (r) =>
      html`<tr><td data-label="Output">${pathLink(r.outPath)}</td><td data-label="Builders" class="num">${r.builders}</td><td data-label="Reproducibility">${classBadge(r.class)}${r.contents > 1 ? html` ${r.contents} contents` : ''}</td><td data-label="Default policy">${statusBadge(r.status)}</td><td data-label="Last leaf" class="num">${leafLink(r.lastLeaf)}</td></tr>`,
  )}</tbody>
</table></div>`;
}

function describe(d: SearchData): Html {
  const { query } = d;
  switch (query.kind) {
    case 'empty':
      return html`<p>Search by store path (<code>/nix/store/…-hello-2.12</code>), hash part (32 characters), derivation path (<code>…drv</code>) or any part of a name (at least 3 characters, case-insensitive).</p>`;
    case 'invalid':
      return html`<p class="error" role="alert">Cannot search for “${query.text}”: ${query.message}.</p>`;
    case 'hash-part':
      return html`<p>${d.results.length === 0 ? 'No output path or derivation' : `${d.results.length} output path${d.results.length === 1 ? '' : 's'}`} with hash part <code>${query.hashPart}</code>${d.results.length === 0 ? ' in this ledger.' : '.'}</p>`;
    case 'name':
      return html`<p>${d.matches > d.countCap ? `More than ${int(d.countCap)}` : int(d.matches)} output path${d.matches === 1 ? '' : 's'} whose name contains “${query.text}”, the paths that first appeared in the log most recently first.</p>`;
  }
}

export function searchPage(d: SearchData, before: number | undefined): string {
  const title = d.query.kind === 'empty' ? 'Search' : `Search: ${d.q.trim()}`;
  return layout(
    { title, section: 'search', q: d.q },
    html`<h1>Search</h1>
${indexNotice(d.index)}
${describe(d)}
${d.results.length > 0 ? pathTable(d.results, before === undefined ? 'Results' : 'Results (continued)') : ''}
<nav class="pages" aria-label="Result pages">${before !== undefined ? html`<a href="/search?q=${encodeURIComponent(d.q)}">First page</a>` : ''}${
      d.next !== null ? html`<a rel="next" href="/search?q=${encodeURIComponent(d.q)}&amp;before=${d.next}">Next page</a>` : ''
    }</nav>`,
  );
}
