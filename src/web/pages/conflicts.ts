import { html } from '../html.js';
import type { ConflictsData } from '../model.js';
import { indexNotice, int, layout, leafLink, pathLink, time } from './layout.js';
import { pathTable } from './search.js';

export function conflictsPage(d: ConflictsData, before: number | undefined): string {
  return layout(
    { title: 'Conflicts', section: 'conflicts' },
    html`<h1>Conflicts</h1>
${indexNotice(d.index)}
${
  before === undefined
    ? html`<section aria-labelledby="equivocations-h">
<h2 id="equivocations-h">Equivocating keys</h2>
<p>A key that signed two different contents for one output path. Both signed statements stay in the log as evidence; the key counts for neither.</p>
${
  d.equivocations.length === 0
    ? html`<p class="muted">None.</p>`
    : html`<div class="table"><table class="cards">
<thead><tr><th scope="col">Detected</th><th scope="col">Builder key</th><th scope="col">Output path</th><th scope="col">First statement</th><th scope="col">Second statement</th></tr></thead>
<tbody>${d.equivocations.map(
        (c) => html`<tr><td data-label="Detected">${time(c.detectedAt)}</td><td data-label="Key"><strong>${c.builder}</strong></td><td data-label="Output">${pathLink(c.outPath)}</td>
<td data-label="First">leaf ${leafLink(c.first.leafIndex)}: <code class="hash">${c.first.narHash}</code>, ${int(c.first.narSize)} bytes</td>
<td data-label="Second">leaf ${leafLink(c.second.leafIndex)}: <code class="hash">${c.second.narHash}</code>, ${int(c.second.narSize)} bytes</td></tr>`,
      )}</tbody>
</table></div>`
}
</section>`
    : ''
}
<section aria-labelledby="unreproduced-h">
<h2 id="unreproduced-h">Unreproduced outputs</h2>
<p>${int(d.unreproducedTotal)} output path${d.unreproducedTotal === 1 ? '' : 's'} for which builders signed different contents (NAR hash, size or references), most recently attested first.</p>
${d.unreproduced.length > 0 ? pathTable(d.unreproduced, before === undefined ? 'Unreproduced outputs' : 'Unreproduced outputs (continued)') : ''}
<nav class="pages" aria-label="Result pages">${before !== undefined ? html`<a href="/conflicts">First page</a>` : ''}${d.next !== null ? html`<a rel="next" href="/conflicts?before=${d.next}">Next page</a>` : ''}</nav>
</section>`,
  );
}
