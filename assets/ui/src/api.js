// Talking to the router: the token (sessionStorage only, never a URL), JSON calls with
// `Authorization: Bearer`, the QR as a blob URL, and the event stream read with fetch().
import { SseParser } from './sse.js';

const KEY = 'wafleet.auth';

/** The signed-in identity: `{token, scope: 'admin'|'workspace', workspace?}` or null. */
export function loadAuth() {
  try {
    const v = JSON.parse(sessionStorage.getItem(KEY) ?? 'null');
    return v && typeof v.token === 'string' ? v : null;
  } catch {
    return null;
  }
}

export function saveAuth(auth) {
  if (auth) sessionStorage.setItem(KEY, JSON.stringify(auth));
  else sessionStorage.removeItem(KEY);
}

/** An error answer of the API: `{error, message}` plus the status. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || code || `HTTP ${status}`);
    this.status = status;
    this.code = code;
  }
}

let onUnauthorized = () => {};
/** Called when the API answers 401 (the token was revoked or mistyped): back to the login. */
export function setUnauthorizedHandler(f) {
  onUnauthorized = f;
}

function headers(token, extra = {}) {
  return { Authorization: `Bearer ${token}`, ...extra };
}

/** One API call; resolves to the Response when 2xx, else throws ApiError. */
export async function call(token, method, path, { body, accept, signal } = {}) {
  const h = headers(token, accept ? { Accept: accept } : {});
  if (body !== undefined) h['Content-Type'] = 'application/json';
  const r = await fetch(path, {
    method,
    headers: h,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store',
    credentials: 'omit',
    signal,
  });
  if (!r.ok) {
    const e = await r.json().catch(() => ({}));
    if (r.status === 401) onUnauthorized();
    throw new ApiError(r.status, e.error, e.message);
  }
  return r;
}

/** A JSON call. */
export async function json(token, method, path, opts) {
  const r = await call(token, method, path, opts);
  return r.status === 204 ? null : r.json();
}

/** Checks a token and says what it may do. */
export async function identify(token) {
  const t = token.trim();
  const m = /^wft1\.([A-Za-z0-9_-]{1,64})\./.exec(t);
  if (m) {
    await json(t, 'GET', `/v1/workspaces/${m[1]}/sessions`);
    return { token: t, scope: 'workspace', workspace: m[1] };
  }
  await json(t, 'GET', '/v1/shards');
  return { token: t, scope: 'admin' };
}

/** The session's QR as an object URL (the caller revokes it). */
export async function qrUrl(token, ws, s, signal) {
  const r = await call(token, 'GET', `/v1/workspaces/${ws}/sessions/${s}/qr`, { accept: 'image/png', signal });
  return URL.createObjectURL(await r.blob());
}

const sleep = (ms, signal) =>
  new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
  });

/**
 * Follows a session's event stream until `signal` aborts: reconnects with back-off and
 * `Last-Event-ID`, so no event is missed across a dropped connection. `onEvent` gets
 * `{id, event, envelope}`; `onState` gets 'connecting' | 'open' | 'retrying'.
 */
export async function followEvents(token, ws, s, { onEvent, onState, signal }) {
  let lastId = null;
  let delay = 1000;
  while (!signal.aborted) {
    onState?.('connecting');
    try {
      const h = headers(token, { Accept: 'text/event-stream' });
      if (lastId) h['Last-Event-ID'] = lastId;
      const r = await fetch(`/v1/workspaces/${ws}/sessions/${s}/events`, {
        headers: h, cache: 'no-store', credentials: 'omit', signal,
      });
      if (!r.ok) throw new ApiError(r.status, 'stream', `event stream answered ${r.status}`);
      onState?.('open');
      delay = 1000;
      const parser = new SseParser((ev) => {
        lastId = ev.id ?? lastId;
        let envelope = null;
        try { envelope = JSON.parse(ev.data); } catch { /* not JSON: shown raw */ }
        onEvent({ id: ev.id, event: ev.event, envelope, raw: ev.data });
      });
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        parser.push(value);
      }
    } catch (e) {
      if (signal.aborted) return;
      if (e instanceof ApiError && e.status === 401) { onUnauthorized(); return; }
    }
    onState?.('retrying');
    await sleep(delay, signal);
    delay = Math.min(delay * 2, 15000);
  }
}
