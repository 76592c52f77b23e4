import { html, type Html } from '../html.js';
import type { LogData } from '../model.js';
import { int, layout, time } from './layout.js';

export function logPage(d: LogData): string {
  const latest = d.checkpoints[0];
  return layout(
    { title: 'Log', section: 'log' },
    html`<h1>The log</h1>
<p>Every accepted attestation is a leaf of an append-only RFC 9162 Merkle tree. The server signs its tree head as a C2SP checkpoint; anyone holding the log's public key can check that an entry is in the tree, and that today's tree extends the one they saw before.</p>
<dl class="facts">
<dt>Origin</dt><dd><code>${d.origin}</code></dd>
<dt>Tree size</dt><dd>${int(d.treeSize)}</dd>
<dt>Log public key</dt><dd><code class="hash">${d.verifierKey}</code> (<a href="/api/v1/log/key">text</a>). Compare it with the key the operators publish elsewhere: a server can show you any key.</dd>
</dl>
${d.mirror ? mirrorSection(d.mirror) : ''}<h2>Latest checkpoint</h2>
${latest ? html`<pre class="note">${latest.note}${latest.cosignatures.map((c) => c.line).join('')}</pre>` : html`<p class="muted">None yet.</p>`}
<h2>Witnesses</h2>
${
  d.witnesses.length === 0
    ? html`<p class="muted">This ledger has no witnesses configured: nothing but its own key vouches that everyone is shown the same log.</p>`
    : html`<p>Independent witnesses (C2SP tlog-witness) cosign a checkpoint only if it extends the last one they cosigned, so a log cannot show two histories to two people unless the witnesses collude. Their cosignature lines follow the log's signature in the served checkpoint.</p>
<div class="table"><table class="cards">
<thead><tr><th scope="col">Witness</th><th scope="col">Key (vkey)</th><th scope="col">Latest size cosigned</th></tr></thead>
<tbody>${d.witnesses.map((w) => html`<tr data-witness="${w.name}"><td data-label="Witness">${w.name}<br><span class="muted">${w.url}</span></td><td data-label="Key"><code class="hash">${w.vkey}</code></td><td data-label="Cosigned" class="num">${w.cosignedSize === null ? 'none yet' : int(w.cosignedSize)}</td></tr>`)}</tbody>
</table></div>`
}
<h2>Recent checkpoints</h2>
<div class="table"><table class="cards">
<thead><tr><th scope="col">Tree size</th><th scope="col">Root hash (base64)</th><th scope="col">Signed</th><th scope="col">Cosigned by</th></tr></thead>
<tbody>${d.checkpoints.map(
  (c) =>
    html`<tr data-size="${String(c.size)}"><td data-label="Size" class="num">${int(c.size)}</td><td data-label="Root"><code class="hash">${c.rootHash}</code></td><td data-label="Signed">${time(c.createdAt)}</td><td data-label="Cosigned by" data-cosigned>${
      c.cosignatures.length === 0 ? html`<span class="muted">no witness yet</span>` : c.cosignatures.map((s, i) => html`${i > 0 ? ', ' : ''}<span title="${new Date(s.timestamp * 1000).toISOString()}">${s.witness}</span>`)
    }</td></tr>`,
)}</tbody>
</table></div>
<h2>Verify it yourself</h2>
<ol>
<li>Audit everything with the command-line tool. It checks every entry's signature, recomputes the tree, compares the root with the signed checkpoint and proves the log only grew since its last run:
<pre>nix-quorum verify --server $SERVER</pre>
With witnesses, also require that M of them cosigned the checkpoint it checks (it names those that did not, and what they said):
<pre>nix-quorum verify --server $SERVER --witness VKEY1 --witness VKEY2 --witness VKEY3 --witness-threshold 2</pre></li>
<li>Or by hand, with any RFC 9162 and C2SP implementation (for example <code>golang.org/x/mod/sumdb/note</code> and <code>github.com/transparency-dev/merkle</code>):
<ul>
<li><code>GET /api/v1/log/checkpoint</code>: the signed note (origin, tree size, base64 root hash, then <code>— name base64(key id || Ed25519 signature)</code>); verify it with the key from <code>GET /api/v1/log/key</code>. Witness cosignatures follow as further lines (C2SP tlog-cosignature <code>cosignature/v1</code>: <code>— witness base64(key id || 8-byte timestamp || Ed25519 signature over "cosignature/v1\ntime T\n" and the note text)</code>); <code>?cosigned=M</code> asks for the newest checkpoint with at least M.</li>
<li><code>GET /api/v1/log/entries?start=I&amp;end=J</code>: base64 leaf bytes, at most 1000 per call, end exclusive. A leaf is four UTF-8 lines joined by a newline: the signed statement, the builder key name, the base64 Ed25519 signature, the builder's narinfo signature or an empty line. The statement is <code>nix-quorum-attestation-v1;drvPath;outputName;outPath;narHash;narSize;references joined by ,</code>; check its signature with the builder's key from <code>GET /api/v1/builders</code>.</li>
<li>Leaf hash <code>SHA-256(0x00 || leaf)</code>, node hash <code>SHA-256(0x01 || left || right)</code>: recompute the root of the first N entries and compare it with the checkpoint of size N.</li>
<li><code>GET /api/v1/log/proof/inclusion?index=I&amp;size=N</code> proves entry I is in the tree of size N; <code>GET /api/v1/log/proof/consistency?first=M&amp;second=N</code> proves the tree of size N extends the one of size M. Keep the last checkpoint you verified and always ask for the second.</li>
</ul></li>
<li>Each path page does the checks for its own entries in your browser: signatures with tweetnacl, proofs with WebCrypto SHA-256, the checkpoint against the log key this browser saw first, and consistency with the last checkpoint it saw.</li>
</ol>`,
  );
}

/** A mirror's state: it serves only what it verified, and shows why it stopped following, if it did. */
function mirrorSection(m: NonNullable<LogData['mirror']>): Html {
  return html`<h2>Mirror</h2>
<p>This server is a read-only mirror of <a href="${m.primary}">${m.primary}</a>. It verifies every checkpoint, leaf and signature of the primary's log before serving it, and serves no entry it has not proven to be in a checkpoint it verified.</p>
<dl class="facts" data-mirror="${m.degraded ? 'degraded' : 'following'}">
<dt>Verified</dt><dd>${int(m.verifiedSize)} entries${m.lastVerifiedAt ? html`, last at ${time(m.lastVerifiedAt)}` : ''}${m.appliedSize > m.verifiedSize ? html`; ${int(m.appliedSize)} applied so far towards the primary's newest checkpoint` : ''}</dd>
<dt>Primary's checkpoint</dt><dd>${m.primarySize === null ? html`<span class="muted">not seen yet</span>` : html`${int(m.primarySize)} entries`}</dd>
<dt>State</dt><dd>${m.degraded ? html`<strong>stopped following</strong>: ${m.degraded}` : m.unreachable ? html`cannot reach the primary: ${m.unreachable}` : 'following'}</dd>
</dl>
${
  m.evidence.length === 0
    ? ''
    : html`<h3>Evidence</h3>
<p>Checkpoints the primary offered that do not follow from what this mirror verified, with the last one it verified: both are signed by the log key, so together they prove the inconsistency to anyone.</p>
${m.evidence.map(
  (e) => html`<details class="evidence" data-kind="${e.kind}"><summary>${time(e.detectedAt)}: ${e.kind}: ${e.detail}</summary>
<p>Verified:</p><pre class="note">${e.verifiedNote ?? '(none yet)'}</pre><p>Offered:</p><pre class="note">${e.offeredNote}</pre></details>`,
)}`
}`;
}
