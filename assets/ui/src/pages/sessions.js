// Every session the token may see: across the fleet (admin, `GET /v1/sessions`) or one
// workspace (`GET /v1/workspaces/{ws}/sessions`), with a status filter and a search box.
import { useState } from 'preact/hooks';
import { json } from '../api.js';
import { html, Banner, StatusBadge, STATUSES, usePoll, bytes, sessionHref } from '../ui.js';

export function Sessions({ auth, query }) {
  const [status, setStatus] = useState(query.get('status') ?? '');
  const [search, setSearch] = useState(query.get('q') ?? '');
  const [data, error, reload] = usePoll(async (signal) => {
    if (auth.scope === 'admin') return json(auth.token, 'GET', '/v1/sessions', { signal });
    const r = await json(auth.token, 'GET', `/v1/workspaces/${auth.workspace}/sessions`, { signal });
    return { sessions: r.sessions, shards: [{ id: r.shard, ok: true }], partial: false };
  }, 5000, [auth.token]);
  const q = search.trim().toLowerCase();
  const rows = (data?.sessions ?? []).filter((s) =>
    (!status || s.status === status) &&
    (!q || [s.workspace, s.session, s.me ?? ''].some((v) => v.toLowerCase().includes(q))));
  const down = (data?.shards ?? []).filter((s) => !s.ok);
  return html`
    <h1>Sessions${auth.scope === 'workspace' ? html` of <code>${auth.workspace}</code>` : ''}</h1>
    <form class="filters" role="search" onSubmit=${(e) => e.preventDefault()}>
      <div>
        <label for="status-filter">Status</label>
        <select id="status-filter" value=${status} onChange=${(e) => setStatus(e.target.value)}>
          <option value="">all</option>
          ${STATUSES.map((s) => html`<option value=${s}>${s}</option>`)}
        </select>
      </div>
      <div class="grow">
        <label for="search">Search workspace, session or phone</label>
        <input id="search" type="search" value=${search} onInput=${(e) => setSearch(e.target.value)} />
      </div>
      <button type="button" onClick=${reload}>Refresh</button>
    </form>
    ${error && html`<${Banner} kind="error">Cannot load sessions: ${error.message}</${Banner}>`}
    ${down.length > 0 && html`<${Banner} kind="warn" >Partial list: shard${down.length > 1 ? 's' : ''}
      ${down.map((s) => s.id).join(', ')} did not answer (${down.map((s) => s.error).join(', ')}).</${Banner}>`}
    ${!data && !error && html`<p aria-busy="true">Loading…</p>`}
    ${data && html`
      <p class="muted" aria-live="polite">${rows.length} of ${data.sessions.length} sessions</p>
      <div class="table-wrap">
      <table class="sessions">
        <caption class="sr-only">Sessions</caption>
        <thead><tr>
          <th scope="col">Workspace</th><th scope="col">Session</th><th scope="col">Status</th>
          <th scope="col">Me</th><th scope="col">Memory</th><th scope="col">Restarts</th>
          <th scope="col">Last error</th><th scope="col">WhatsApp Web</th><th scope="col">Shard</th>
        </tr></thead>
        <tbody>
        ${rows.map((s) => html`<tr data-ws=${s.workspace} data-session=${s.session}>
          <td data-label="Workspace">${s.workspace}</td>
          <th scope="row" data-label="Session"><a href=${sessionHref(s.workspace, s.session)}>${s.session}</a></th>
          <td data-label="Status"><${StatusBadge} status=${s.status} /></td>
          <td data-label="Me">${s.me ?? '–'}</td>
          <td data-label="Memory">${bytes(s.memory_bytes)}</td>
          <td data-label="Restarts">${s.restarts ?? 0}</td>
          <td data-label="Last error" class="error-cell">${s.last_error ?? '–'}</td>
          <td data-label="WhatsApp Web">${s.wa_version ?? '–'}</td>
          <td data-label="Shard">${s.shard}</td>
        </tr>`)}
        </tbody>
      </table>
      </div>
      ${rows.length === 0 && html`<p class="muted">No session matches.</p>`}`}`;
}
