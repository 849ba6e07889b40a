// The wafleet operator dashboard: sign-in, then the fleet, the sessions, one session and the
// shard map. Routes live in the URL fragment (`#/sessions/acme/main`), so the router serves
// one document; the token never appears in a URL.
import { render } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { loadAuth, saveAuth, setUnauthorizedHandler } from './api.js';
import { html } from './ui.js';
import { Login } from './pages/login.js';
import { Fleet } from './pages/fleet.js';
import { Sessions } from './pages/sessions.js';
import { Session } from './pages/session.js';
import { Shards } from './pages/shards.js';

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [path, qs] = raw.split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  return { parts, query: new URLSearchParams(qs ?? '') };
}

function useRoute() {
  const [route, setRoute] = useState(parseHash);
  useEffect(() => {
    const f = () => setRoute(parseHash());
    addEventListener('hashchange', f);
    return () => removeEventListener('hashchange', f);
  }, []);
  return route;
}

function App() {
  const [auth, setAuth] = useState(loadAuth);
  const route = useRoute();
  const main = useRef(null);
  const signOut = () => { saveAuth(null); setAuth(null); };
  useEffect(() => setUnauthorizedHandler(signOut), []);
  // Move focus to the new page, so keyboard and screen-reader users start at its heading.
  useEffect(() => { main.current?.focus(); }, [route.parts.join('/')]);
  if (!auth) {
    return html`<${Login} onLogin=${(a) => { saveAuth(a); setAuth(a); location.hash = a.scope === 'admin' ? '#/fleet' : '#/sessions'; }} />`;
  }
  const admin = auth.scope === 'admin';
  const [page = admin ? 'fleet' : 'sessions', ws, s] = route.parts;
  let body;
  if (page === 'sessions' && ws && s) body = html`<${Session} key=${`${ws}/${s}`} auth=${auth} ws=${ws} s=${s} />`;
  else if (page === 'sessions') body = html`<${Sessions} auth=${auth} query=${route.query} />`;
  else if (page === 'fleet' && admin) body = html`<${Fleet} auth=${auth} />`;
  else if (page === 'shards' && admin) body = html`<${Shards} auth=${auth} />`;
  else body = html`<p>No such page. <a href="#/sessions">Go to the sessions.</a></p>`;
  const link = (name, label) => html`<a href=${`#/${name}`} aria-current=${page === name ? 'page' : undefined}>${label}</a>`;
  return html`
    <a class="skip" href="#main" onClick=${(e) => { e.preventDefault(); main.current?.focus(); }}>Skip to content</a>
    <header class="top">
      <span class="brand">wafleet</span>
      <nav aria-label="Main">
        ${admin && link('fleet', 'Fleet')}
        ${link('sessions', 'Sessions')}
        ${admin && link('shards', 'Shard map')}
      </nav>
      <span class="who">${admin ? 'admin' : html`workspace <code>${auth.workspace}</code>`}</span>
      <button type="button" onClick=${signOut}>Sign out</button>
    </header>
    <main id="main" ref=${main} tabindex="-1">${body}</main>`;
}

const root = document.getElementById('app');
// Replace the boot message (render() would keep it next to the app).
root.textContent = '';
render(html`<${App} />`, root);
