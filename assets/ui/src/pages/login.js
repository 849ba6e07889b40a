// Sign in with an admin token (the whole fleet) or a workspace token (one workspace).
import { useState } from 'preact/hooks';
import { identify } from '../api.js';
import { html, Banner } from '../ui.js';

export function Login({ onLogin }) {
  const [token, setToken] = useState('');
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      onLogin(await identify(token));
    } catch (err) {
      setError(err.status === 401 || err.status === 403
        ? 'This token was not accepted.'
        : `Cannot sign in: ${err.message}`);
    } finally {
      setBusy(false);
    }
  };
  return html`
    <main id="main" class="login" tabindex="-1">
      <h1>wafleet dashboard</h1>
      <p>Sign in with the fleet's admin token, or with a workspace token
        (<code>wafleet token &lt;workspace&gt;</code>) to see one workspace.
        The token stays in this browser tab only.</p>
      <form onSubmit=${submit} class="card">
        <label for="token">API token</label>
        <input id="token" name="token" type="password" autocomplete="off" required
          value=${token} onInput=${(e) => setToken(e.target.value)} />
        <button type="submit" class="primary" disabled=${busy || !token.trim()}>Sign in</button>
        ${error && html`<${Banner} kind="error">${error}</${Banner}>`}
      </form>
    </main>`;
}
