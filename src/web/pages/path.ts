import type { FileVersion } from '../../nars/diff.js';
import { baseNameOf, type StorePath } from '../../nix/storePath.js';
import type { DiffContent, DiffData, OutputDiff } from '../diff.js';
import { html, type Html } from '../html.js';
import type { OutputData, PathData } from '../model.js';
import { int, layout, leafLink, list, statusBadge, time } from './layout.js';

/** What the path page shows besides the ledger's own data: file differences and build logs. */
export interface PathExtras {
  diff: DiffData;
  /** Derivation path -> names of the keys that delivered its build log. */
  logs: Map<string, string[]>;
}

/**
 * The page of one hash part. Each attestation row carries its fields in `data-field` elements: the
 * browser script (assets/path-page.js) rebuilds the signed statement from exactly that text, so what
 * it verifies is what the reader sees.
 */

function references(refs: readonly string[]): Html {
  if (refs.length === 0) return html`<ul data-field="references" class="refs"></ul><span class="muted">none</span>`;
  return html`<details><summary>${refs.length} reference${refs.length === 1 ? '' : 's'}</summary><ul data-field="references" class="refs">${refs.map((r) => html`<li><code>${r}</code></li>`)}</ul></details>`;
}

/** Keys behind the leading content; one key alone agrees with nobody. */
function agreeing(keys: readonly string[]): Html {
  if (keys.length === 1) return html`<span class="muted">nobody: only</span> ${keys[0]} <span class="muted">signed its content</span>`;
  return list(keys);
}

function decisions(o: OutputData): Html {
  return html`<div class="table"><table class="cards">
<caption>Decision under every policy (evaluated now, over keys that are not revoked)</caption>
<thead><tr><th scope="col">Policy</th><th scope="col">Status</th><th scope="col">Served</th><th scope="col">Reason</th><th scope="col">Agreeing</th><th scope="col">Dissenting</th><th scope="col">Equivocating</th><th scope="col">Not attested</th></tr></thead>
<tbody>${o.decisions.map(
    (d) =>
      html`<tr><td data-label="Policy">${d.policy.name} <span class="muted">(${d.threshold} of ${d.trusted}, ${d.policy.onConflict})</span>${d.policy.impossible ? html` <span class="badge status-blocked" title="${d.policy.impossible}">impossible</span>` : ''}</td><td data-label="Status">${statusBadge(d.status)}</td><td data-label="Served">${
        d.served ? 'yes' : d.status === 'quorum' ? 'no: NAR not uploaded yet' : 'no'
      }</td><td data-label="Reason">${d.reason}</td><td data-label="Agreeing">${agreeing(d.agreeing)}</td><td data-label="Dissenting">${list(d.dissenting)}</td><td data-label="Equivocating">${list(d.equivocating)}</td><td data-label="Not attested">${list(d.missing)}</td></tr>`,
  )}</tbody>
</table></div>`;
}

function narLink(c: DiffContent | undefined): Html {
  return c?.nar ? html`<a href="${c.nar.url}" download>download</a>` : html`<span class="muted">not uploaded</span>`;
}

function groups(o: OutputData, diff: OutputDiff | undefined): Html {
  const content = (label: string) => diff?.contents.find((c) => c.label === label);
  return html`<div class="table"><table class="cards">
<caption>Agreement groups: attestations of the same NAR hash, size and references</caption>
<thead><tr><th scope="col">Group</th><th scope="col">Builders</th><th scope="col">NAR hash</th><th scope="col">NAR size</th><th scope="col">References</th><th scope="col">Leaves</th><th scope="col">NAR</th></tr></thead>
<tbody>${o.groups.map(
    (g) =>
      html`<tr><td data-label="Group"><strong>${g.label}</strong></td><td data-label="Builders">${g.builders.length}: ${list(g.builders)}</td><td data-label="NAR hash"><code class="hash">${g.narHash}</code></td><td data-label="NAR size" class="num">${int(g.narSize)}</td><td data-label="References">${
        g.references.length
      }</td><td data-label="Leaves">${g.leaves.map((l, i) => html`${i > 0 ? ', ' : ''}<a href="#leaf-${l}">${l}</a>`)}</td><td data-label="NAR">${narLink(content(g.label))}</td></tr>`,
  )}</tbody>
</table></div>`;
}

function logLink(drvPath: string, builder: string, logs: Map<string, string[]>): Html | '' {
  if (!logs.get(drvPath)?.includes(builder)) return '';
  return html`<br><a href="/log/${encodeURIComponent(baseNameOf(drvPath as StorePath))}?builder=${encodeURIComponent(builder)}">build log</a>`;
}

function attestations(o: OutputData, logs: Map<string, string[]>): Html {
  return html`<div class="table"><table class="cards attestations">
<caption>Every builder's attestation, as signed and logged</caption>
<thead><tr><th scope="col">Builder</th><th scope="col">Group</th><th scope="col">NAR hash</th><th scope="col">NAR size (bytes)</th><th scope="col">References</th><th scope="col">Derivation and output</th><th scope="col">Received</th><th scope="col">Leaf</th><th scope="col">Checked in your browser</th></tr></thead>
<tbody>${o.attestations.map(
    (a) =>
      html`<tr id="leaf-${a.leafIndex}" data-leaf="${a.leafIndex}">
<td data-label="Builder"><strong data-field="builder">${a.builder}</strong></td>
<td data-label="Group">${a.group}</td>
<td data-label="NAR hash"><code class="hash" data-field="narHash">${a.narHash}</code></td>
<td data-label="NAR size" class="num"><span data-field="narSize">${a.narSize}</span></td>
<td data-label="References">${references(a.references)}</td>
<td data-label="Derivation"><code class="path" data-field="drvPath">${a.drvPath}</code> output <code data-field="outputName">${a.outputName}</code>${logLink(a.drvPath, a.builder, logs)}</td>
<td data-label="Received">${time(a.createdAt)}</td>
<td data-label="Leaf">${leafLink(a.leafIndex)}</td>
<td data-label="In your browser" class="verify"><span class="badge" data-verify>not checked: needs JavaScript</span></td>
</tr>`,
  )}</tbody>
</table></div>`;
}

function version(v: FileVersion | null): Html {
  if (v === null) return html`<span class="muted">absent</span>`;
  if (v.type === 'directory') return html`directory`;
  if (v.type === 'symlink') return html`symlink to <code>${v.target}</code>`;
  return html`${int(v.size ?? 0)} bytes${v.executable ? ', executable' : ''}<br><code class="hash" title="SHA-256">${v.sha256}</code>`;
}

/** Which files differ between the groups whose NARs are held, from the listings made at upload. */
function reproducibility(o: OutputData, diff: OutputDiff | undefined): Html | '' {
  if (!diff || o.groups.length < 2) return '';
  const unlisted = diff.contents.filter((c) => !c.listed).map((c) => `${c.label} (${c.nar ? 'uploaded before listings were recorded, or too many files' : 'NAR not uploaded'})`);
  const intro = html`<p>Builders signed ${o.groups.length} different contents.${diff.referencesDiffer ? ' Their references differ too.' : ''} ${
    unlisted.length ? html`No file list for group ${unlisted.join(', ')}. ` : ''
  }Download the NARs above to compare them yourself: Nix checks their hashes against what the builders signed.</p>`;
  if (diff.compared.length < 2) return html`<h3>What differs</h3>${intro}`;
  return html`<h3>What differs</h3>${intro}
<div class="table"><table class="cards diff">
<caption>${int(diff.totalDifferences)} ${diff.totalDifferences === 1 ? 'file differs' : 'files differ'} between groups ${diff.compared.join(', ')}${
    diff.totalDifferences > diff.files.length ? ` (the first ${int(diff.files.length)} shown)` : ''
  }</caption>
<thead><tr><th scope="col">File</th>${diff.compared.map((label) => html`<th scope="col">Group ${label}</th>`)}</tr></thead>
<tbody>${diff.files.map(
    (f) => html`<tr><td data-label="File"><code class="path">${f.path === '' ? '(the output itself)' : f.path}</code></td>${f.versions.map((v, i) => html`<td data-label="Group ${diff.compared[i]!}">${version(v)}</td>`)}</tr>`,
  )}</tbody>
</table></div>`;
}

function evidence(o: OutputData): Html | '' {
  if (o.equivocations.length === 0) return '';
  return html`<h3>Conflict evidence</h3>
<p>These keys signed more than one content for this output. Each statement below is in the log with its signature; any one pair proves the key equivocated.</p>
${o.equivocations.map(
  (e) => html`<h4>${e.builder}</h4>
<ul class="evidence">${e.statements.map((s) => html`<li><a href="#leaf-${s.leafIndex}">leaf ${s.leafIndex}</a>, group ${s.group}:<pre>${s.statement}</pre></li>`)}</ul>`,
)}`;
}

export function pathPage(d: PathData, extras: PathExtras): string {
  return layout(
    { title: `Path ${d.hashPart}`, section: 'path', q: d.hashPart, scripts: [{ src: '/assets/nacl-fast.min.js', module: false }, { src: '/assets/path-page.js', module: true }] },
    html`<h1>Hash part <code>${d.hashPart}</code></h1>
<p id="verify-status" class="verify-status" role="status" aria-live="polite">This page checks every builder signature and every inclusion proof in your browser, against the log's signed checkpoint. That needs JavaScript; without it, <a href="/transparency-log">verify the log yourself</a>.</p>
${d.outputs.map(
  (o, i) => html`<section class="output" data-out-path>
<h2>Output <code class="path" data-field="outPath">${o.outPath}</code></h2>
<h3>Decisions</h3>
${decisions(o)}
<h3>Agreement</h3>
${groups(o, extras.diff.outputs[i])}
${reproducibility(o, extras.diff.outputs[i])}
<h3>Attestations</h3>
${attestations(o, extras.logs)}
${evidence(o)}
</section>`,
)}
${d.next === null ? '' : html`<p><a href="/paths/${d.hashPart}?after=${d.next}" rel="next">More attestations</a></p>`}
<p class="muted">Log size when this page was made: ${int(d.treeSize)}. Raw data: <a href="/api/v1/paths/${d.hashPart}/summary${d.after === null ? '' : `?after=${d.after}`}">JSON</a>, <a href="/api/v1/paths/${d.hashPart}/diff">file differences</a>.</p>`,
  );
}
