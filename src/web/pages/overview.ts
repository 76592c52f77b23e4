import { html } from '../html.js';
import type { OverviewData } from '../model.js';
import { indexNotice, int, layout, leafLink, pathLink, time } from './layout.js';

export function overviewPage(d: OverviewData): string {
  const pct = (n: number) => (d.paths.total === 0 ? '' : ` (${((100 * n) / d.paths.total).toFixed(1)}%)`);
  return layout(
    { title: 'Overview', section: 'overview' },
    html`<h1>Ledger <code>${d.origin}</code></h1>
${indexNotice(d.index)}
<section aria-labelledby="log-h">
<h2 id="log-h">Log</h2>
<dl class="facts">
<dt>Tree size</dt><dd><strong>${int(d.treeSize)}</strong> log entries</dd>
<dt>Latest checkpoint</dt><dd>${
      d.checkpoint
        ? html`size ${int(d.checkpoint.size)}, root <code class="hash">${d.checkpoint.rootHash}</code>, signed ${time(d.checkpoint.createdAt)}`
        : html`<span class="muted">none yet</span>`
    } (<a href="/transparency-log">how to check it</a>)</dd>
</dl>
</section>
<section aria-labelledby="paths-h">
<h2 id="paths-h">Output paths</h2>
<div class="table"><table>
<caption>Every output path in the log, by what its builders signed (keys revoked later included).</caption>
<tbody>
<tr><th scope="row">Paths attested</th><td class="num">${int(d.paths.total)}</td></tr>
<tr><th scope="row">Reproduced: two or more builder keys signed the same content</th><td class="num">${int(d.paths.reproduced)}${pct(d.paths.reproduced)}</td></tr>
<tr><th scope="row">Unreproduced: builders signed different contents (<a href="/conflicts">list</a>)</th><td class="num">${int(d.paths.unreproduced)}${pct(d.paths.unreproduced)}</td></tr>
<tr><th scope="row">Attested by a single builder</th><td class="num">${int(d.paths.single)}${pct(d.paths.single)}</td></tr>
</tbody>
</table></div>
<div class="table"><table class="cards">
<caption>Advertised by the substituter: quorum under the policy and the NAR held.</caption>
<thead><tr><th scope="col">Policy</th><th scope="col">Threshold</th><th scope="col">Builders</th><th scope="col">On conflict</th><th scope="col">Advertised paths</th></tr></thead>
<tbody>${d.policies.map(
      (p) =>
        html`<tr><td data-label="Policy">${p.name}</td><td data-label="Threshold" class="num">${p.threshold}${p.impossible ? html` <span class="badge status-blocked" title="${p.impossible}">impossible</span>` : ''}</td><td data-label="Builders">${Array.isArray(p.builders) ? p.builders.join(', ') : p.builders}</td><td data-label="On conflict">${p.onConflict}</td><td data-label="Advertised" class="num">${int(p.advertised)}</td></tr>`,
    )}</tbody>
</table></div>
</section>
<section aria-labelledby="recent-h">
<h2 id="recent-h">Recent attestations</h2>
${
  d.recentAttestations.length === 0
    ? html`<p class="muted">No attestations yet.</p>`
    : html`<div class="table"><table class="cards">
<thead><tr><th scope="col">Leaf</th><th scope="col">Output path</th><th scope="col">Builder</th><th scope="col">Received</th></tr></thead>
<tbody>${d.recentAttestations.map(
        (a) => html`<tr><td data-label="Leaf">${leafLink(a.leafIndex)}</td><td data-label="Output">${pathLink(a.outPath)}</td><td data-label="Builder">${a.builder}</td><td data-label="Received">${time(a.createdAt)}</td></tr>`,
      )}</tbody>
</table></div>`
}
${
  d.recentConflicts.length === 0
    ? ''
    : html`<h3>Recent equivocations</h3>
<ul>${d.recentConflicts.map((c) => html`<li>${time(c.detectedAt)}: <strong>${c.builder}</strong> signed two contents for ${pathLink(c.outPath)}</li>`)}</ul>`
}
</section>`,
  );
}
