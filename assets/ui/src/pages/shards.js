// The shard map: change the shard count, weights and drain marks, or pin a workspace; every
// change is planned first (`POST /v1/shards/plan`, nothing written), its movement plan shown,
// and only then applied with the planned version (`PUT /v1/shards`, 409 when the map moved).
import { useEffect, useState } from 'preact/hooks';
import { json } from '../api.js';
import { html, Banner, ConfirmDialog, usePoll } from '../ui.js';

/** The request body for the difference between the form and the stored map. */
export function changeOf(map, form) {
  const body = {};
  const ids = map.shards.map((s) => s.id);
  const count = Number(form.count);
  if (count !== ids.length || ids.some((id, i) => id !== i)) body.count = count;
  const weight = {};
  const drain = [];
  const undrain = [];
  for (const s of map.shards) {
    if (body.count !== undefined && s.id >= count) continue;
    const w = Number(form.weights[s.id]);
    if (w !== s.weight) weight[s.id] = w;
    const was = map.draining.includes(s.id);
    if (form.draining[s.id] && !was) drain.push(s.id);
    if (!form.draining[s.id] && was) undrain.push(s.id);
  }
  if (Object.keys(weight).length) body.weight = weight;
  if (drain.length) body.drain = drain;
  if (undrain.length) body.undrain = undrain;
  return body;
}

function formOf(map) {
  return {
    count: map.shards.length,
    weights: Object.fromEntries(map.shards.map((s) => [s.id, s.weight])),
    draining: Object.fromEntries(map.shards.map((s) => [s.id, map.draining.includes(s.id)])),
  };
}

export function Shards({ auth }) {
  const [data, error, reload] = usePoll((signal) => json(auth.token, 'GET', '/v1/shards', { signal }), 0, [auth.token]);
  const [form, setForm] = useState(null);
  const [pinWs, setPinWs] = useState('');
  const [pinShard, setPinShard] = useState('0');
  const [plan, setPlan] = useState(null);
  const [confirm, setConfirm] = useState(null);
  const [note, setNote] = useState(null);
  const map = data?.map;
  useEffect(() => { if (map) setForm(formOf(map)); }, [map?.version]);

  const requestPlan = async (change) => {
    setNote(null);
    setPlan(null);
    try {
      const report = await json(auth.token, 'POST', '/v1/shards/plan', { body: change.body });
      setPlan({ ...change, report });
    } catch (e) {
      setNote({ kind: 'error', text: `Plan refused: ${e.message}` });
    }
  };
  const apply = async () => {
    const p = plan;
    setConfirm(null);
    try {
      const version = p.report.old_version;
      const report = p.kind === 'pin'
        ? await json(auth.token, 'PUT', `/v1/shards/pins/${encodeURIComponent(p.ws)}`, { body: { shard: p.shard, version } })
        : await json(auth.token, 'PUT', '/v1/shards', { body: { ...p.body, version } });
      setNote({ kind: 'info', text: `Applied: the map is now version ${report.new_version}; ${report.moves.length} workspace(s) move.` });
      setPlan(null);
      reload();
    } catch (e) {
      setNote({ kind: 'error', text: e.status === 409 ? `Not applied: ${e.message}` : `Apply failed: ${e.message}` });
    }
  };
  const unpin = async (ws) => {
    setConfirm(null);
    try {
      const report = await json(auth.token, 'DELETE', `/v1/shards/pins/${encodeURIComponent(ws)}`);
      setNote({ kind: 'info', text: `Unpinned ${ws}: the map is now version ${report.new_version}.` });
      reload();
    } catch (e) {
      setNote({ kind: 'error', text: `Unpin failed: ${e.message}` });
    }
  };

  if (error && !data) return html`<${Banner} kind="error">Cannot load the shard map: ${error.message}</${Banner}>`;
  if (!data || !form) return html`<p aria-busy="true">Loading…</p>`;
  const count = Number(form.count) || 0;
  const rows = Array.from({ length: Math.max(count, map.shards.length) }, (_, id) => id);
  const set = (f) => setForm({ ...form, ...f });
  const pins = Object.entries(map.pins ?? {});
  return html`
    <h1>Shard map <span class="muted">version <span data-testid="shard-map-version">${map.version}</span></span></h1>
    ${note && html`<${Banner} kind=${note.kind}>${note.text}</${Banner}>`}
    <form class="card" aria-labelledby="change-h" onSubmit=${(e) => {
      e.preventDefault();
      requestPlan({ kind: 'map', body: changeOf(map, form) });
    }}>
      <h2 id="change-h">Change the map</h2>
      <label for="shard-count">Number of shards</label>
      <input id="shard-count" type="number" min="1" max="1024" value=${form.count}
        onInput=${(e) => set({ count: e.target.value })} />
      <div class="table-wrap"><table>
        <caption class="sr-only">Shards: weight and draining</caption>
        <thead><tr><th scope="col">Shard</th><th scope="col">Health</th><th scope="col">Weight</th><th scope="col">Draining</th></tr></thead>
        <tbody>${rows.map((id) => {
          const known = map.shards.find((s) => s.id === id);
          const health = data.shards.find((s) => s.id === id);
          const removed = id >= count;
          const added = !known;
          return html`<tr class=${removed ? 'removed' : added ? 'added' : ''}>
            <th scope="row">${id}${removed ? ' (removed)' : added ? ' (new)' : ''}</th>
            <td>${health ? (health.healthy ? html`<span class="ok">healthy</span>` : html`<span class="bad">down</span>`) : '–'}</td>
            <td>${known && !removed
              ? html`<input type="number" step="0.1" min="0.1" aria-label=${`Weight of shard ${id}`}
                  value=${form.weights[id]} onInput=${(e) => set({ weights: { ...form.weights, [id]: e.target.value } })} />`
              : added ? '1' : '–'}</td>
            <td>${known && !removed
              ? html`<input type="checkbox" aria-label=${`Drain shard ${id}`} checked=${form.draining[id]}
                  onChange=${(e) => set({ draining: { ...form.draining, [id]: e.target.checked } })} />`
              : '–'}</td>
          </tr>`;
        })}</tbody>
      </table></div>
      <div class="actions">
        <button type="submit" class="primary">Plan the change</button>
        <button type="button" onClick=${() => { setForm(formOf(map)); setPlan(null); }}>Reset</button>
      </div>
    </form>
    <form class="card" aria-labelledby="pin-h" onSubmit=${(e) => {
      e.preventDefault();
      const shard = Number(pinShard);
      requestPlan({ kind: 'pin', ws: pinWs.trim(), shard, body: { pin: { [pinWs.trim()]: shard } } });
    }}>
      <h2 id="pin-h">Pins</h2>
      ${pins.length
        ? html`<ul class="pins">${pins.map(([ws, k]) => html`<li><code>${ws}</code> → shard ${k}
            <button type="button" class="danger-outline" aria-label=${`Unpin ${ws}`}
              onClick=${() => setConfirm({ kind: 'unpin', ws })}>Unpin</button></li>`)}</ul>`
        : html`<p class="muted">No workspace is pinned.</p>`}
      <div class="inline">
        <div><label for="pin-ws">Workspace</label>
          <input id="pin-ws" required pattern="[A-Za-z0-9_\\-]{1,64}" value=${pinWs} onInput=${(e) => setPinWs(e.target.value)} /></div>
        <div><label for="pin-shard">Shard</label>
          <select id="pin-shard" value=${pinShard} onChange=${(e) => setPinShard(e.target.value)}>
            ${map.shards.map((s) => html`<option value=${s.id}>${s.id}</option>`)}
          </select></div>
        <button type="submit">Plan the pin</button>
      </div>
    </form>
    ${plan && html`<${Plan} plan=${plan} onApply=${() => setConfirm({ kind: 'apply' })} onDiscard=${() => setPlan(null)} />`}
    <${ConfirmDialog} open=${confirm !== null}
      title=${confirm?.kind === 'unpin' ? `Unpin ${confirm.ws}` : 'Apply this change'}
      confirmLabel=${confirm?.kind === 'unpin' ? 'Unpin' : 'Apply'} danger
      onCancel=${() => setConfirm(null)}
      onConfirm=${() => (confirm?.kind === 'unpin' ? unpin(confirm.ws) : apply())}>
      ${confirm?.kind === 'unpin'
        ? html`<p>The workspace goes back to the shard the hash gives it; its sessions move if that is another shard.</p>`
        : html`<p>Write map version ${plan?.report.new_version} over version ${plan?.report.old_version}?
            ${plan?.report.moves.length} workspace(s) move: their sessions stop on the old shard and start on the new one.</p>`}
    </${ConfirmDialog}>`;
}

function Plan({ plan, onApply, onDiscard }) {
  const r = plan.report;
  return html`<section class="card plan" aria-labelledby="plan-h" data-testid="plan">
    <h2 id="plan-h">Movement plan: version ${r.old_version} → ${r.new_version}</h2>
    <p><strong>${r.moves.length}</strong> of ${r.workspaces_considered} known workspaces move. Nothing is written until you apply.</p>
    ${r.moves.length > 0 && html`<div class="table-wrap"><table>
      <caption class="sr-only">Workspaces that change shard</caption>
      <thead><tr><th scope="col">Workspace</th><th scope="col">From shard</th><th scope="col">To shard</th></tr></thead>
      <tbody>${r.moves.map((m) => html`<tr><th scope="row">${m.workspace}</th><td>${m.from ?? '–'}</td><td>${m.to ?? '–'}</td></tr>`)}</tbody>
    </table></div>`}
    <div class="actions">
      <button type="button" class="danger" onClick=${onApply}>Apply…</button>
      <button type="button" onClick=${onDiscard}>Discard</button>
    </div>
  </section>`;
}
