// One session: its state, the live QR (refreshed on every `session.qr` event of the stream),
// a pairing code, lifecycle actions (stop and logout ask first), a test message, the live event
// stream and the workspace's dead letters with replay.
import { useEffect, useRef, useState } from 'preact/hooks';
import { json, qrUrl, followEvents } from '../api.js';
import { html, Banner, ConfirmDialog, StatusBadge, bytes, ago, usePoll } from '../ui.js';

const MAX_EVENTS = 200;

const ACTIONS = [
  { name: 'start', label: 'Start' },
  { name: 'restart', label: 'Restart' },
  { name: 'stop', label: 'Stop', confirm: 'Stop this session? Its browser closes; messages wait until it is started again.' },
  { name: 'logout', label: 'Log out', confirm: 'Log this session out? The device is unlinked from the phone and a new QR scan is needed.' },
];

export function Session({ auth, ws, s }) {
  const base = `/v1/workspaces/${encodeURIComponent(ws)}/sessions/${encodeURIComponent(s)}`;
  const [info, setInfo] = useState(null);
  const [error, setError] = useState(null);
  const [events, setEvents] = useState([]);
  const [stream, setStream] = useState('connecting');
  const [qrTick, setQrTick] = useState(0);
  const [notice, setNotice] = useState(null);
  const [pending, setPending] = useState(null);
  const [busy, setBusy] = useState(false);
  const [loadTick, setLoadTick] = useState(0);
  const reload = () => setLoadTick((t) => t + 1);

  useEffect(() => {
    const ctl = new AbortController();
    json(auth.token, 'GET', base, { signal: ctl.signal })
      .then((v) => { setInfo(v); setError(null); })
      .catch((e) => { if (e.name !== 'AbortError') setError(e); });
    return () => ctl.abort();
  }, [base, loadTick]);

  // A slow safety net while the stream is down; the stream itself drives every change.
  useEffect(() => {
    if (stream === 'open') return undefined;
    const t = setInterval(reload, 5000);
    return () => clearInterval(t);
  }, [stream]);

  useEffect(() => {
    const ctl = new AbortController();
    followEvents(auth.token, ws, s, {
      signal: ctl.signal,
      onState: setStream,
      onEvent: (ev) => {
        setEvents((list) => [ev, ...list].slice(0, MAX_EVENTS));
        if (ev.event === 'session.qr') setQrTick((t) => t + 1);
        if (ev.event === 'session.status') reload();
      },
    });
    return () => ctl.abort();
  }, [auth.token, ws, s]);

  const act = async (name) => {
    setBusy(true);
    setNotice(null);
    try {
      const v = await json(auth.token, 'POST', `${base}/${name}`);
      setInfo(v);
      setNotice({ kind: 'info', text: `${name}: done (status ${v.status}).` });
    } catch (e) {
      setNotice({ kind: 'error', text: `${name} failed: ${e.message}` });
    } finally {
      setBusy(false);
    }
  };
  const ask = (a) => (a.confirm ? setPending(a) : act(a.name));

  if (error && !info) return html`<${Banner} kind="error">Cannot load ${ws}/${s}: ${error.message}</${Banner}>`;
  if (!info) return html`<p aria-busy="true">Loading…</p>`;
  return html`
    <nav aria-label="Breadcrumb" class="crumbs"><a href="#/sessions">Sessions</a> › <span>${ws}</span> › <span aria-current="page">${s}</span></nav>
    <h1>${ws} / ${s}</h1>
    ${notice && html`<${Banner} kind=${notice.kind}>${notice.text}</${Banner}>`}
    <div class="grid">
      <section class="card" aria-labelledby="state-h">
        <h2 id="state-h">State</h2>
        <dl class="facts">
          <dt>Status</dt><dd data-testid="session-status"><${StatusBadge} status=${info.status} /></dd>
          <dt>Me</dt><dd>${info.me ?? '–'}</dd>
          <dt>Shard</dt><dd>${info.shard}</dd>
          <dt>Restarts</dt><dd data-testid="session-restarts">${info.restarts ?? 0}</dd>
          <dt>Memory</dt><dd>${bytes(info.memory_bytes)}</dd>
          <dt>WhatsApp Web</dt><dd>${info.wa_version ?? '–'}</dd>
          <dt>Last error</dt><dd class="error-cell">${info.last_error ?? '–'}</dd>
          <dt>Changed</dt><dd>${ago(info.updated_at_ms)}</dd>
        </dl>
        <div class="actions" role="group" aria-label="Session actions">
          ${ACTIONS.map((a) => html`<button type="button" disabled=${busy}
            class=${a.confirm ? 'danger-outline' : ''} onClick=${() => ask(a)}>${a.label}</button>`)}
        </div>
      </section>
      <${Qr} auth=${auth} ws=${ws} s=${s} status=${info.status} tick=${qrTick} />
      <${Pairing} auth=${auth} base=${base} status=${info.status} />
      <${SendTest} auth=${auth} base=${base} status=${info.status} />
    </div>
    <${Events} events=${events} stream=${stream} />
    <${DeadLetters} auth=${auth} ws=${ws} s=${s} />
    <${ConfirmDialog} open=${pending !== null} title=${pending ? `${pending.label}: ${ws}/${s}` : ''}
      confirmLabel=${pending?.label} danger
      onCancel=${() => setPending(null)}
      onConfirm=${() => { const a = pending; setPending(null); act(a.name); }}>
      <p>${pending?.confirm}</p>
    </${ConfirmDialog}>`;
}

function Qr({ auth, ws, s, status, tick }) {
  const [url, setUrl] = useState(null);
  const [error, setError] = useState(null);
  const current = useRef(null);
  useEffect(() => {
    if (status !== 'SCAN_QR_CODE') {
      setUrl(null);
      return undefined;
    }
    const ctl = new AbortController();
    qrUrl(auth.token, ws, s, ctl.signal)
      .then((u) => { setUrl(u); setError(null); })
      .catch((e) => { if (e.name !== 'AbortError') setError(e); });
    return () => ctl.abort();
  }, [status, tick, ws, s]);
  // Each new blob URL replaces the previous one, which is released.
  useEffect(() => {
    if (current.current && current.current !== url) URL.revokeObjectURL(current.current);
    current.current = url;
  }, [url]);
  useEffect(() => () => current.current && URL.revokeObjectURL(current.current), []);
  return html`<section class="card" aria-labelledby="qr-h">
    <h2 id="qr-h">QR code</h2>
    ${status !== 'SCAN_QR_CODE'
      ? html`<p class="muted">Shown while the session waits for a scan (status SCAN_QR_CODE).</p>`
      : error ? html`<${Banner} kind="error">Cannot load the QR: ${error.message}</${Banner}>`
      : url ? html`<img class="qr" data-testid="qr" src=${url} width="264" height="264"
          alt="QR code to scan with WhatsApp on the phone: Settings, Linked devices, Link a device" />
          <p class="muted small">Refreshes by itself when WhatsApp rotates it.</p>`
      : html`<p aria-busy="true">Loading the QR…</p>`}
  </section>`;
}

function Pairing({ auth, base, status }) {
  const [phone, setPhone] = useState('');
  const [code, setCode] = useState(null);
  const [error, setError] = useState(null);
  const submit = async (e) => {
    e.preventDefault();
    setError(null);
    setCode(null);
    try {
      setCode((await json(auth.token, 'POST', `${base}/pairing-code`, { body: { phone } })).code);
    } catch (err) {
      setError(err.message);
    }
  };
  return html`<section class="card" aria-labelledby="pair-h">
    <h2 id="pair-h">Pairing code</h2>
    <form onSubmit=${submit}>
      <label for="pair-phone">Phone number (international, digits)</label>
      <input id="pair-phone" type="tel" inputmode="numeric" autocomplete="off" value=${phone}
        onInput=${(e) => setPhone(e.target.value)} required />
      <button type="submit" disabled=${status !== 'SCAN_QR_CODE'}>Get a pairing code</button>
    </form>
    ${code && html`<p class="code" aria-live="polite" data-testid="pairing-code">${code}</p>
      <p class="muted small">On the phone: Linked devices, Link with phone number instead.</p>`}
    ${error && html`<${Banner} kind="error">${error}</${Banner}>`}
  </section>`;
}

function SendTest({ auth, base, status }) {
  const [to, setTo] = useState('');
  const [text, setText] = useState('Test message from the wafleet dashboard');
  const [result, setResult] = useState(null);
  const submit = async (e) => {
    e.preventDefault();
    setResult(null);
    try {
      const v = await json(auth.token, 'POST', `${base}/messages`, { body: { to, text } });
      setResult({ kind: 'info', text: `Queued as ${v.id}; its events appear below.` });
    } catch (err) {
      setResult({ kind: 'error', text: err.message });
    }
  };
  return html`<section class="card" aria-labelledby="send-h">
    <h2 id="send-h">Send a test message</h2>
    <form onSubmit=${submit}>
      <label for="send-to">To (phone number)</label>
      <input id="send-to" type="tel" autocomplete="off" value=${to} onInput=${(e) => setTo(e.target.value)} required />
      <label for="send-text">Text</label>
      <textarea id="send-text" rows="2" value=${text} onInput=${(e) => setText(e.target.value)} required></textarea>
      <button type="submit" disabled=${status !== 'WORKING'}>Send</button>
      ${status !== 'WORKING' && html`<p class="muted small">Needs status WORKING.</p>`}
    </form>
    ${result && html`<${Banner} kind=${result.kind}>${result.text}</${Banner}>`}
  </section>`;
}

function Events({ events, stream }) {
  const label = { open: 'live', connecting: 'connecting…', retrying: 'reconnecting…' }[stream] ?? stream;
  return html`<section class="card wide" aria-labelledby="events-h">
    <h2 id="events-h">Events <span class=${`stream stream-${stream}`} data-testid="stream-state">${label}</span></h2>
    ${events.length === 0
      ? html`<p class="muted">No event since this page opened.</p>`
      : html`<ol class="events" aria-live="polite" aria-relevant="additions">
        ${events.map((e) => html`<li key=${e.id}>
          <time>${e.envelope?.timestamp ? new Date(e.envelope.timestamp).toLocaleTimeString() : ''}</time>
          <strong>${e.event}</strong>
          <code>${e.envelope ? JSON.stringify(e.envelope.payload) : e.raw}</code>
        </li>`)}
      </ol>`}
  </section>`;
}

function DeadLetters({ auth, ws, s }) {
  const path = `/v1/workspaces/${encodeURIComponent(ws)}/webhooks/dead?session=${encodeURIComponent(s)}&limit=50`;
  const [data, error, reload] = usePoll((signal) => json(auth.token, 'GET', path, { signal }), 15000, [path]);
  const [note, setNote] = useState(null);
  const replay = async (id) => {
    try {
      await json(auth.token, 'POST', `/v1/workspaces/${encodeURIComponent(ws)}/webhooks/dead/${id}/replay`);
      setNote({ kind: 'info', text: `${id} is pending delivery again.` });
      reload();
    } catch (e) {
      setNote({ kind: 'error', text: `Replay of ${id} failed: ${e.message}` });
    }
  };
  const list = data?.dead_letters ?? [];
  return html`<section class="card wide" aria-labelledby="dead-h">
    <h2 id="dead-h">Dead letters</h2>
    ${note && html`<${Banner} kind=${note.kind}>${note.text}</${Banner}>`}
    ${error && html`<${Banner} kind="error">Cannot load dead letters: ${error.message}</${Banner}>`}
    ${data && list.length === 0 && html`<p class="muted">No webhook of this session gave up.</p>`}
    ${list.length > 0 && html`<div class="table-wrap"><table>
      <caption class="sr-only">Webhook events that could not be delivered</caption>
      <thead><tr><th scope="col">Event</th><th scope="col">Type</th><th scope="col">Attempts</th>
        <th scope="col">Last error</th><th scope="col">Dead since</th><th scope="col"><span class="sr-only">Action</span></th></tr></thead>
      <tbody>${list.map((d) => html`<tr>
        <th scope="row"><code>${d.id}</code></th><td>${d.event}</td><td>${d.attempts}</td>
        <td class="error-cell">${d.last_error}</td><td>${ago(d.dead_at)}</td>
        <td><button type="button" onClick=${() => replay(d.id)} aria-label=${`Replay ${d.id}`}>Replay</button></td>
      </tr>`)}</tbody></table></div>`}
  </section>`;
}
