// The dashboard in a real Chromium (Playwright, /usr/bin/chromium) against a real dev fleet
// (`wafleet dev`: built-in Consul agent, simulator, router, two workers with Chromium
// sessions). Run by scripts/test.d/dashboard; needs `zbarimg` (Debian zbar-tools).
//
//   WAFLEET_BIN=target/debug/wafleet node assets/ui/tests/dashboard.test.mjs
//   WAFLEET_UI_SCREENSHOTS=docs/dashboard  (optional: where the screenshots go; default a temp dir)
//
// Checks: sign-in with the admin token; every session of the fleet listed with its status; a
// session in SCAN_QR_CODE shows a QR that decodes to the session's current raw QR; linking it
// through the simulator turns the page to WORKING without a reload; a restart from the page
// restarts the session (API: restarts grows, WORKING again); a test message sent from the page
// reaches the simulator's phone; a dead letter (a webhook receiver answering 410) is listed
// and replayed from the page (the receiver gets that event again); a pin planned and applied from the
// shard-map page (keyboard confirmation) lands in the map; a workspace token sees only its
// workspace; screenshots of every page, one at phone width.
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { createServer } from 'node:http';
import { chromium } from 'playwright-core';

const BIN = resolve(process.env.WAFLEET_BIN ?? 'target/debug/wafleet');
const ADMIN = 'dashboard-test-admin-token';
const SECRET = 'dashboard-test-token-secret-0123456789';
const LONG = 180_000;
const work = mkdtempSync(join(tmpdir(), 'wafleet-ui-'));
const shots = resolve(process.env.WAFLEET_UI_SCREENSHOTS ?? join(work, 'screenshots'));
mkdirSync(shots, { recursive: true });

const log = (...a) => console.log('[dashboard]', ...a);

/** Polls `f` until it returns a truthy value; fails with `what` after `ms`. */
async function until(what, f, ms = LONG) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const v = await f();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ''}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

function startFleet() {
  const data = join(work, 'data');
  const args = ['dev', '--workers', '2', '--data', data,
    '--router-listen', '127.0.0.1:0', '--consul-http', '127.0.0.1:0', '--consul-dns', '127.0.0.1:0',
    '--sim-listen', '127.0.0.1:0', '--session-ttl-secs', '10', '--lock-delay-secs', '1', '--drain-grace-secs', '10'];
  const child = spawn(BIN, args, {
    env: { ...process.env, WAFLEET_ADMIN_TOKEN: ADMIN, WAFLEET_TOKEN_SECRET: SECRET, RUST_LOG: process.env.RUST_LOG ?? 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logFile = join(work, 'dev.log');
  child.stderr.on('data', (b) => writeFileSync(logFile, b, { flag: 'a' }));
  const ready = new Promise((res, rej) => {
    const rl = createInterface({ input: child.stdout });
    rl.on('line', (line) => {
      try {
        const v = JSON.parse(line);
        if (v.ready) res(v);
      } catch { /* not the readiness line */ }
    });
    child.on('exit', (code) => rej(new Error(`wafleet dev exited ${code}; log ${logFile}`)));
  });
  return { child, ready, logFile };
}

async function main() {
  const fleet = startFleet();
  let browser;
  try {
    const ready = await Promise.race([fleet.ready, new Promise((_, rej) => setTimeout(() => rej(new Error('dev not ready')), LONG))]);
    const state = JSON.parse(readFileSync(ready.state, 'utf8'));
    const R = `http://${state.router}`;
    const SIM = `http://${state.sim}`;
    log('fleet ready', R, 'sim', SIM);

    const api = async (method, path, body, token = ADMIN) => {
      const r = await fetch(R + path, {
        method,
        headers: { Authorization: `Bearer ${token}`, ...(body ? { 'Content-Type': 'application/json' } : {}) },
        body: body ? JSON.stringify(body) : undefined,
      });
      const text = await r.text();
      let json = null;
      try { json = JSON.parse(text); } catch { /* raw */ }
      return { status: r.status, json, text };
    };
    const created = [['acme', 'main'], ['acme', 'support'], ['globex', 'main']];
    for (const [ws, s] of created) {
      const a = await until(`create ${ws}/${s}`, async () => {
        const a = await api('POST', `/v1/workspaces/${ws}/sessions`, { session: s });
        return a.status === 201 || a.status === 409 ? a : null;
      });
      log('created', ws, s, a.status);
    }
    const fleetSessions = async () => (await api('GET', '/v1/sessions')).json;
    await until('every session waiting for a scan', async () => {
      const v = await fleetSessions();
      return !v.partial && v.sessions.length === 3 && v.sessions.every((s) => s.status === 'SCAN_QR_CODE');
    });

    browser = await chromium.launch({
      executablePath: '/usr/bin/chromium',
      args: ['--no-sandbox', '--headless', '--disable-gpu'],
    });
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 860 } });
    const page = await ctx.newPage();
    const cspViolations = [];
    page.on('console', (m) => { if (/Content Security Policy/i.test(m.text())) cspViolations.push(m.text()); });
    const pageErrors = [];
    page.on('pageerror', (e) => pageErrors.push(String(e)));

    // Sign in with the admin token (keyboard only: type, Enter).
    await page.goto(`${R}/ui/`);
    await page.getByLabel('API token').fill(ADMIN);
    await page.getByLabel('API token').press('Enter');
    await page.getByRole('heading', { name: 'Fleet' }).waitFor();
    assert.ok(!page.url().includes(ADMIN), 'the token never goes into the URL');
    assert.equal(await page.evaluate(() => localStorage.length), 0, 'nothing in localStorage');
    await page.locator('table tbody .badge').first().waitFor();
    assert.equal(await page.locator('tr[data-shard] .ok').count(), 2, 'both shards healthy');
    await page.screenshot({ path: join(shots, 'fleet.png'), fullPage: true });
    log('fleet page ok');

    // Every session, with the status the API reports.
    await page.getByRole('link', { name: 'Sessions', exact: true }).click();
    await until('the sessions table matching the API', async () => {
      const api_ = await fleetSessions();
      const rows = await page.locator('table.sessions tbody tr').evaluateAll((trs) =>
        trs.map((tr) => [tr.dataset.ws, tr.dataset.session, tr.querySelector('.badge')?.dataset.status]));
      const want = api_.sessions.map((s) => [s.workspace, s.session, s.status]);
      return rows.length === 3 && JSON.stringify(rows) === JSON.stringify(want);
    });
    // Filter and search narrow the table.
    await page.getByLabel('Search workspace, session or phone').fill('glob');
    await until('search', async () => (await page.locator('table.sessions tbody tr').count()) === 1);
    await page.getByLabel('Search workspace, session or phone').fill('');
    await page.getByLabel('Status').selectOption('WORKING');
    await until('filter', async () => (await page.locator('table.sessions tbody tr').count()) === 0);
    await page.getByLabel('Status').selectOption('');
    await until('unfiltered', async () => (await page.locator('table.sessions tbody tr').count()) === 3);
    await page.screenshot({ path: join(shots, 'sessions.png'), fullPage: true });
    log('sessions page ok');

    // The QR on the page is the session's current QR.
    await page.locator('tr[data-ws="acme"][data-session="main"] a').click();
    await page.getByRole('heading', { name: 'acme / main' }).waitFor();
    await page.locator('[data-testid="stream-state"].stream-open').waitFor({ timeout: LONG });
    const qrFile = join(work, 'qr.png');
    const raw = await until('the QR on the page decoding to the current raw QR', async () => {
      const img = page.locator('img[data-testid="qr"]');
      await img.waitFor({ timeout: 10_000 });
      // The pixels of the image on the page (the CSP forbids fetching its blob: URL, rightly).
      const b64 = await img.evaluate(async (el) => {
        await el.decode();
        const c = document.createElement('canvas');
        c.width = el.naturalWidth;
        c.height = el.naturalHeight;
        c.getContext('2d').drawImage(el, 0, 0);
        return c.toDataURL('image/png').split(',')[1];
      });
      writeFileSync(qrFile, Buffer.from(b64, 'base64'));
      const decoded = execFileSync('zbarimg', ['--raw', '-q', qrFile], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
      const current = await api('GET', '/v1/workspaces/acme/sessions/main/qr?format=raw');
      return current.status === 200 && decoded === current.text.trim() ? decoded : null;
    });
    log('QR decodes to the current raw QR', raw.slice(0, 24) + '…');
    await page.screenshot({ path: join(shots, 'session-qr.png'), fullPage: true });

    // Link it through the simulator: the page turns WORKING by itself (event stream).
    const link = await fetch(`${SIM}/sim/link`, {
      method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ qr: raw, phone: '4915550001' }),
    });
    assert.equal(link.status, 200, await link.text());
    await page.locator('[data-testid="session-status"] [data-status="WORKING"]').waitFor({ timeout: LONG });
    assert.equal(await page.locator('img[data-testid="qr"]').count(), 0, 'no QR once WORKING');
    log('WORKING without a reload');

    // Restart from the page.
    const before = (await api('GET', '/v1/workspaces/acme/sessions/main')).json;
    await page.getByRole('button', { name: 'Restart' }).click();
    await until('the session restarted (API)', async () => {
      const s = (await api('GET', '/v1/workspaces/acme/sessions/main')).json;
      return s.restarts > before.restarts && s.status === 'WORKING';
    });
    await until('the page showing the new restart count', async () =>
      Number(await page.locator('[data-testid="session-restarts"]').textContent()) > before.restarts);
    log('restart ok');

    // A test message from the page reaches the phone it was sent to.
    const testText = `dashboard test ${Date.now()}`;
    await page.getByLabel('To (phone number)').fill('4915550002');
    await page.getByLabel('Text', { exact: true }).fill(testText);
    await page.getByRole('button', { name: 'Send', exact: true }).click();
    await until('the test message at the simulator', async () => {
      const r = await fetch(`${SIM}/sim/messages?phone=4915550001`);
      const sent = await r.json();
      return Array.isArray(sent) && sent.some((m) => m.text === testText);
    });
    log('test message ok');

    // Stop asks first; Escape cancels and nothing happens.
    await page.getByRole('button', { name: 'Stop' }).click();
    const dialog = page.getByRole('dialog');
    await dialog.waitFor();
    await page.keyboard.press('Escape');
    await until('dialog closed', async () => !(await dialog.isVisible()));
    assert.equal((await api('GET', '/v1/workspaces/acme/sessions/main')).json.status, 'WORKING');

    // Shard map: plan a pin, see the plan, apply with the keyboard (Enter in the dialog).
    await page.getByRole('link', { name: 'Shard map' }).click();
    await page.getByRole('heading', { name: /Shard map/ }).waitFor();
    const mapBefore = (await api('GET', '/v1/shards')).json.map;
    await page.getByLabel('Number of shards').fill('3');
    await page.getByRole('button', { name: 'Plan the change' }).click();
    await page.locator('[data-testid="plan"]').waitFor();
    assert.match(await page.locator('[data-testid="plan"] h2').textContent(), new RegExp(`${mapBefore.version} → ${mapBefore.version + 1}`));
    assert.equal((await api('GET', '/v1/shards')).json.map.version, mapBefore.version, 'a plan writes nothing');
    await page.getByRole('button', { name: 'Discard' }).click();
    await page.getByRole('button', { name: 'Reset' }).click();
    // A pin that moves a workspace with sessions: the plan names it (then discarded).
    const acmeShard = (await api('GET', '/v1/route/acme')).json.shard;
    await page.getByLabel('Workspace', { exact: true }).fill('acme');
    await page.getByLabel('Shard', { exact: true }).selectOption(String(1 - acmeShard));
    await page.getByRole('button', { name: 'Plan the pin' }).click();
    await page.locator('[data-testid="plan"] tbody tr').first().waitFor();
    assert.equal(await page.locator('[data-testid="plan"] tbody th').first().textContent(), 'acme');
    await page.screenshot({ path: join(shots, 'shard-map.png'), fullPage: true });
    await page.getByRole('button', { name: 'Discard' }).click();
    await page.getByLabel('Workspace', { exact: true }).fill('tenant-pinned');
    await page.getByLabel('Shard', { exact: true }).selectOption('1');
    await page.getByRole('button', { name: 'Plan the pin' }).click();
    await page.locator('[data-testid="plan"]').waitFor();
    await page.getByRole('button', { name: 'Apply…' }).click();
    await dialog.waitFor();
    await page.keyboard.press('Enter');
    await until('the pin in the map', async () => (await api('GET', '/v1/shards')).json.map.pins?.['tenant-pinned'] === 1);
    await page.getByRole('button', { name: 'Unpin tenant-pinned' }).waitFor();
    log('shard map ok');

    // A workspace token sees its workspace only, and no fleet pages.
    const wsToken = execFileSync(BIN, ['token', 'acme'], { env: { ...process.env, WAFLEET_TOKEN_SECRET: SECRET }, encoding: 'utf8' }).trim();
    const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
    const p2 = await phone.newPage();
    await p2.goto(`${R}/ui/`);
    await p2.getByLabel('API token').fill(wsToken);
    await p2.getByRole('button', { name: 'Sign in' }).click();
    await p2.getByRole('heading', { name: /Sessions of/ }).waitFor();
    await until('the workspace sessions', async () => (await p2.locator('table.sessions tbody tr').count()) === 2);
    const wss = await p2.locator('table.sessions tbody tr').evaluateAll((trs) => trs.map((t) => t.dataset.ws));
    assert.deepEqual(wss, ['acme', 'acme']);
    assert.equal(await p2.getByRole('link', { name: 'Fleet' }).count(), 0);
    assert.equal(await p2.getByRole('link', { name: 'Shard map' }).count(), 0);
    const other = await api('GET', '/v1/workspaces/globex/sessions', undefined, wsToken);
    assert.equal(other.status, 403);
    const width = await p2.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(width <= 390, `no horizontal scrolling at 390 px (page is ${width} px wide)`);
    await p2.screenshot({ path: join(shots, 'sessions-phone.png'), fullPage: true });
    log('workspace token ok');

    // Dead letters: a session whose webhook receiver answers 410 Gone (final at once) has
    // its events dead-lettered; Replay on the page sends the same event again.
    const hits = [];
    const receiver = createServer((req, res) => {
      hits.push(req.headers['webhook-id']);
      req.resume();
      req.on('end', () => { res.statusCode = 410; res.end(); });
    });
    await new Promise((r) => receiver.listen(0, '127.0.0.1', r));
    try {
      const hook = `http://127.0.0.1:${receiver.address().port}/hook`;
      const c = await api('POST', '/v1/workspaces/globex/sessions', { session: 'hooked', webhook: { url: hook } });
      assert.equal(c.status, 201, c.text);
      const dead = await until('a dead letter', async () => {
        const d = await api('GET', '/v1/workspaces/globex/webhooks/dead?session=hooked&limit=50');
        return d.status === 200 && d.json.dead_letters?.length ? d.json.dead_letters[0] : null;
      });
      await page.goto(`${R}/ui/#/sessions/globex/hooked`);
      await page.getByRole('heading', { name: 'globex / hooked' }).waitFor();
      const seenBefore = hits.filter((h) => h === dead.id).length;
      await page.getByRole('button', { name: `Replay ${dead.id}` }).click();
      await until('the replayed event at the receiver', async () => hits.filter((h) => h === dead.id).length > seenBefore);
      log('dead letter replay ok');
    } finally {
      receiver.close();
    }

    assert.deepEqual(cspViolations, [], 'no CSP violation');
    assert.deepEqual(pageErrors, [], 'no script error');
    log(`all checks passed${process.env.WAFLEET_UI_SCREENSHOTS ? `; screenshots in ${shots}` : ''}`);
  } finally {
    await browser?.close().catch(() => {});
    fleet.child.kill('SIGTERM');
    await new Promise((r) => {
      if (fleet.child.exitCode !== null) return r();
      const t = setTimeout(() => { fleet.child.kill('SIGKILL'); r(); }, 60_000);
      fleet.child.on('exit', () => { clearTimeout(t); r(); });
    });
    // Profiles are large; the logs stay for a failed run.
    if (!process.env.WAFLEET_UI_KEEP) rmSync(join(work, 'data'), { recursive: true, force: true });
  }
}

main().then(
  () => {
    if (!process.env.WAFLEET_UI_KEEP) rmSync(work, { recursive: true, force: true });
    process.exit(0);
  },
  (e) => {
    console.error('[dashboard] FAILED:', e);
    console.error(`[dashboard] fleet log: ${join(work, 'dev.log')}`);
    process.exit(1);
  },
);
