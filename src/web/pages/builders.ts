import { html } from '../html.js';
import type { BuilderData, IndexProgress } from '../model.js';
import { indexNotice, int, layout, time } from './layout.js';

function rate(b: BuilderData): string {
  return b.agreementRate === null ? '–' : `${(100 * b.agreementRate).toFixed(1)}% (${int(b.agreed)} of ${int(b.shared)})`;
}

export function buildersPage(d: { builders: BuilderData[]; index: IndexProgress }): string {
  return layout(
    { title: 'Builders', section: 'builders' },
    html`<h1>Builders</h1>
${indexNotice(d.index)}
<p>Agreement: of the output paths this key attested that another key attested too, the share where another key signed the same content. Equivocations: paths this key signed two different contents for.</p>
<div class="table"><table class="cards">
<thead><tr><th scope="col">Builder key</th><th scope="col">Status</th><th scope="col">Attestations</th><th scope="col">Paths</th><th scope="col">Agreement with others</th><th scope="col">Equivocations</th><th scope="col">Last seen</th></tr></thead>
<tbody>${d.builders.map(
      (b) => html`<tr>
<td data-label="Key"><strong>${b.name}</strong><br><code class="hash" title="Nix public key">${b.publicKey}</code></td>
<td data-label="Status">${b.active ? html`active since ${time(b.addedAt)}` : html`<span class="badge status-blocked">revoked</span> ${time(b.revokedAt!)}`}</td>
<td data-label="Attestations" class="num">${int(b.attestations)}</td>
<td data-label="Paths" class="num">${int(b.paths)}</td>
<td data-label="Agreement" class="num">${rate(b)}</td>
<td data-label="Equivocations" class="num">${b.equivocated > 0 ? html`<a href="/conflicts"><strong>${int(b.equivocated)}</strong></a>` : '0'}</td>
<td data-label="Last seen">${b.lastSeen ? html`${time(b.lastSeen)} (leaf ${int(b.lastLeaf!)})` : html`<span class="muted">never</span>`}</td>
</tr>`,
    )}</tbody>
</table></div>
<p>The keys above are this server's registry. The path pages verify signatures against them, so compare them with the keys your builders publish.</p>`,
  );
}
