import { html, type Html } from '../html.js';
import type { LeafData } from '../leaf.js';
import { int, layout, pathLink } from './layout.js';

/** What kind of statement the entry is, in words (design.md, "Ledger"). */
function intro(d: LeafData): Html {
  if (d.outPath) return html`An attestation by <strong>${d.builder}</strong> of ${pathLink(d.outPath)}.`;
  if (d.builder) return html`A statement of the log operator about the builder key <strong>${d.builder}</strong> (<a href="/builders">builders</a>).`;
  return html`A <code>${d.kind}</code> statement of the log operator.`;
}

export function leafPage(d: LeafData): string {
  return layout(
    { title: `Leaf ${d.index}`, section: 'log' },
    html`<h1>Log entry <code>${int(d.index)}</code></h1>
<p>${intro(d)} The log holds exactly the bytes below; the fields are how they read.</p>
<div class="table"><table class="cards">
<caption>Fields</caption>
<thead><tr><th scope="col">Field</th><th scope="col">Value</th></tr></thead>
<tbody>${d.fields.map((f) => html`<tr><th scope="row" data-label="Field">${f.name}</th><td data-label="Value"><code class="hash">${f.value === '' ? html`<span class="muted">(empty)</span>` : f.value}</code></td></tr>`)}</tbody>
</table></div>
<h2>Leaf bytes</h2>
<p>UTF-8 lines joined by a newline, no newline at the end (<a href="/api/v1/log/entries?start=${d.index}&amp;end=${d.index + 1}">as the API serves them</a>, base64):</p>
<pre class="note">${d.lines.join('\n')}</pre>
<dl class="facts">
<dt>Leaf hash</dt><dd><code class="hash">${d.leafHash}</code> = base64 SHA-256(0x00 || leaf bytes)</dd>
</dl>
<h2>Inclusion proof</h2>
${
  d.proof
    ? html`<p>The entry is in the tree of size ${int(d.proof.treeSize)} whose root the latest checkpoint signs (<a href="/api/v1/log/proof/inclusion?index=${d.index}&amp;size=${d.proof.treeSize}">JSON</a>). Hash the leaf hash with each of these in turn, as RFC 9162 section 2.1.3.2 says, to get the root <code class="hash">${d.proof.rootHash}</code>:</p>
<ol class="proof">${d.proof.hashes.map((h) => html`<li><code class="hash">${h}</code></li>`)}</ol>
<p>The checkpoint, signed with the log key:</p>
<pre class="note">${d.proof.checkpoint}</pre>`
    : html`<p class="muted">No checkpoint covers this entry yet; one is signed within seconds.</p>`
}
<p class="muted"><a href="/api/v1/leaves/${d.index}">This page as JSON</a>. Log size now: ${int(d.treeSize)}.</p>`,
  );
}
