// The fleet at a glance: the map version, each shard's health, instances, drain mark and
// session counts by status, and the pins.
import { json } from '../api.js';
import { html, Banner, StatusBadge, STATUSES, usePoll } from '../ui.js';

export function Fleet({ auth }) {
  const [data, error] = usePoll(async (signal) => {
    const [shards, sessions] = await Promise.all([
      json(auth.token, 'GET', '/v1/shards', { signal }),
      json(auth.token, 'GET', '/v1/sessions', { signal }),
    ]);
    return { shards, sessions };
  }, 5000, [auth.token]);
  if (error && !data) return html`<${Banner} kind="error">Cannot load the fleet: ${error.message}</${Banner}>`;
  if (!data) return html`<p aria-busy="true">Loading…</p>`;
  const { shards, sessions } = data;
  const byShard = new Map();
  const total = Object.fromEntries(STATUSES.map((s) => [s, 0]));
  for (const s of sessions.sessions) {
    const counts = byShard.get(s.shard) ?? {};
    counts[s.status] = (counts[s.status] ?? 0) + 1;
    byShard.set(s.shard, counts);
    total[s.status] = (total[s.status] ?? 0) + 1;
  }
  const failed = new Map(sessions.shards.filter((s) => !s.ok).map((s) => [s.id, s]));
  const healthy = shards.shards.filter((s) => s.healthy).length;
  const pins = Object.entries(shards.map.pins ?? {});
  return html`
    <h1>Fleet</h1>
    ${error && html`<${Banner} kind="warn">Refresh failed: ${error.message} (showing the last answer)</${Banner}>`}
    <section class="cards" aria-label="Summary">
      <div class="card stat"><span class="stat-n" data-testid="map-version">${shards.version}</span><span>map version</span></div>
      <div class="card stat"><span class="stat-n">${healthy} / ${shards.shards.length}</span><span>shards healthy</span></div>
      <div class="card stat"><span class="stat-n">${sessions.sessions.length}</span><span>sessions</span></div>
      ${STATUSES.map((st) => html`
        <a class="card stat" href=${`#/sessions?status=${st}`}><span class="stat-n">${total[st]}</span><${StatusBadge} status=${st} /></a>`)}
    </section>
    <h2>Shards</h2>
    <div class="table-wrap">
    <table>
      <caption class="sr-only">Shards of the map with their health and sessions</caption>
      <thead><tr><th scope="col">Shard</th><th scope="col">Health</th><th scope="col">Weight</th><th scope="col">Draining</th>
        <th scope="col">Instances</th><th scope="col">Sessions by status</th></tr></thead>
      <tbody>
      ${shards.shards.map((s) => {
        const counts = byShard.get(s.id) ?? {};
        const down = failed.get(s.id);
        return html`<tr data-shard=${s.id}>
          <th scope="row">${s.id}</th>
          <td><span class=${s.healthy ? 'ok' : 'bad'}>${s.healthy ? 'healthy' : 'down'}</span>
            ${s.error && html`<div class="muted small">${s.error}</div>`}</td>
          <td>${s.weight}</td>
          <td>${s.draining ? 'yes' : 'no'}</td>
          <td>${s.instances.length ? s.instances.join(', ') : '–'}</td>
          <td>${down
            ? html`<span class="bad">not answering (${down.error})</span>`
            : STATUSES.filter((st) => counts[st]).map((st) => html`<span class="count"><${StatusBadge} status=${st} /> ${counts[st]}</span>`)}
            ${!down && !Object.keys(counts).length && html`<span class="muted">none</span>`}</td>
        </tr>`;
      })}
      </tbody>
    </table>
    </div>
    <h2>Pins</h2>
    ${pins.length
      ? html`<ul class="pins">${pins.map(([ws, k]) => html`<li><code>${ws}</code> → shard ${k}</li>`)}</ul>`
      : html`<p class="muted">No workspace is pinned.</p>`}`;
}
