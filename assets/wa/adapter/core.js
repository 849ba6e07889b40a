// wafleet page adapter, part 1 of several: reporting, module access, the boot probe and the
// session's own commands. The engine joins the parts in the order `src/engine/adapter.rs` lists
// them into one script (one closure: a part uses what an earlier part declared) and injects it
// into every new document (Page.addScriptToEvaluateOnNewDocument) of a session's page.
//
// The adapter is the one place that knows WhatsApp Web's internals. It waits for WhatsApp Web's
// own module system (`window.require`), checks that every module and member it needs exists (the
// boot probe), then talks to WhatsApp Web only through those modules and reports every fact to
// the engine through the CDP binding `__wafleet` (Runtime.addBinding): one JSON string per call,
// `{"t": kind, ...}`. The engine calls back into the page through
// `window.__wafleetAdapter.<command>(...)`, whose promises resolve to `{ok: true, ...}` or
// `{ok: false, error}` (never a rejection).
//
// Every (module, member) the parts use is listed, with where it was read in WhatsApp Web's own
// sources, in docs/wa-surface.md. When WhatsApp Web renames one, the probe reports it
// (`unsupported`) and the session fails loudly instead of misbehaving; the parts are what change
// then.
//
// Reports: version, state, qr, code, ready, loading, passkey, logout, unsupported, error (this
// part); message, ack (messages.js). Commands here: requestPairingCode, logout, status.
(function () {
  'use strict';

  // Only the top-level document of an http(s) page: about:blank, iframes and workers are not
  // WhatsApp Web's app and must not get a second adapter.
  if (window.top !== window) return;
  if (location.protocol !== 'https:' && location.protocol !== 'http:') return;
  if (window.__wafleetAdapter) return;

  const BINDING = '__wafleet';
  const binding = window[BINDING];
  if (typeof binding !== 'function') return;

  // === reporting ===

  function report(kind, data) {
    try {
      binding(JSON.stringify(Object.assign({ t: kind }, data || {})));
    } catch (e) {
      // The binding disappears while the document is torn down; nothing to report to.
    }
  }

  function errorText(e) {
    if (e === undefined || e === null) return 'unknown error';
    if (typeof e === 'string') return e;
    return String(e.message || e.name || e);
  }

  // A logout ends with WhatsApp Web navigating to `?post_logout=1[&logout_reason=…]`, and its
  // next boot strips those parameters from the URL (WAWebHandlePreviousLogout). This script runs
  // at document start, before any of WhatsApp Web's code, so it reads them here or never.
  (function postLogout() {
    const params = new URLSearchParams(location.search);
    if (params.get('post_logout') !== '1') return;
    const why = params.get('logout_reason');
    report('logout', { reason: why ? 'post_logout:' + why.slice(0, 32) : 'post_logout' });
  })();

  // === module access ===

  const req = (name) => window.require(name);

  // `path` is `Module` or `Module.member.member…`; WhatsApp Web's single-class modules (e.g.
  // WAWebMsgKey) are the export itself. Never cached: a lazily loaded module that is missing now
  // may be defined a moment later.
  function lookup(path) {
    const parts = path.split('.');
    let value;
    try {
      value = req(parts[0]);
    } catch (e) {
      return undefined;
    }
    for (let i = 1; i < parts.length; i++) {
      if (value === undefined || value === null) return undefined;
      try {
        value = value[parts[i]];
      } catch (e) {
        return undefined;
      }
    }
    return value;
  }

  // What the adapter needs, by capability. Each capability lists alternatives (newest build
  // first); an alternative is a list of paths that must all exist. A capability is missing when no
  // alternative is complete, and is reported by the first alternative's missing names.
  const SURFACE = {
    socket: [['WAWebSocketModel.Socket', 'WAWebSocketModel.Socket.on', 'WAWebSocketModel.Socket.logout']],
    conn: [['WAWebConnModel.Conn', 'WAWebConnModel.Conn.on']],
    cmd: [['WAWebCmd.Cmd', 'WAWebCmd.Cmd.on']],
    version: [['WAWebBuildConstants.VERSION_STR'], ['Debug.VERSION']],
    refreshQr: [['WAWebBackendEventBus.BackendEventBus.triggerRefreshQR'], ['WAWebCmd.Cmd.refreshQR']],
    qrKeys: [
      [
        'WAWebSignalStoreApi.waSignalStore.getRegistrationInfo',
        'WAWebUserPrefsInfoStore.waNoiseInfo.get',
        'WABase64.encodeB64',
        'WAWebAdvSignatureApi.getADVSecretKey',
        'WAWebCompanionRegClientUtils.DEVICE_PLATFORM',
      ],
    ],
    me: [['WAWebUserPrefsMeUser.getMaybeMePnUser', 'WAWebUserPrefsMeUser.getMaybeMeLidUser']],
    collections: [['WAWebCollections.Msg', 'WAWebCollections.Chat']],
    send: [
      [
        'WAWebFindChatAction.findOrCreateLatestChat',
        'WAWebSendMsgChatAction.addAndSendMsgToChat',
        'WAWebMsgKey.newId',
        'WAWebWidFactory.createWid',
      ],
    ],
    pairingCode: [
      [
        'WAWebAltDeviceLinkingApi.setPairingType',
        'WAWebAltDeviceLinkingApi.initializeAltDeviceLinking',
        'WAWebAltDeviceLinkingApi.startAltLinkingFlow',
      ],
    ],
  };

  // The media pipeline lives in a bundle WhatsApp Web loads lazily: it is probed once the
  // session is ready, with its own deadline.
  const LAZY_SURFACE = {
    media: [
      [
        'WAWebMediaOpaqueData.createFromData',
        'WAWebPrepRawMedia.prepRawMedia',
        'WAWebMediaStorage.getOrCreateMediaObject',
        'WAWebMmsMediaTypes.msgToMediaType',
        'WAWebMediaMmsV4Upload.uploadMedia',
      ],
    ],
  };


  function globalOrModule(path) {
    // `Debug.VERSION` is a global, not a module.
    if (path.startsWith('Debug.')) {
      return window.Debug ? window.Debug[path.slice('Debug.'.length)] : undefined;
    }
    return lookup(path);
  }

  const present = (path) => {
    const v = globalOrModule(path);
    return v !== undefined && v !== null;
  };

  function missingOf(surface) {
    const missing = [];
    for (const name of Object.keys(surface)) {
      const alternatives = surface[name];
      if (alternatives.some((alt) => alt.every(present))) continue;
      for (const p of alternatives[0]) {
        if (!present(p)) missing.push(p);
      }
    }
    return missing;
  }

  // `Debug.VERSION` where the build sets it (it is what a page's own bundles announce, and what
  // a pinned, cached index.html carries); `WAWebBuildConstants.VERSION_STR` where it is gated off.
  function webVersion() {
    const v = globalOrModule('Debug.VERSION') || globalOrModule('WAWebBuildConstants.VERSION_STR');
    return v ? String(v) : null;
  }

  // === session state ===

  // What the other parts of the adapter add: their commands (exported as
  // `window.__wafleetAdapter` by end.js) and what runs once the session is ready.
  const COMMANDS = {};
  const ON_READY = [];

  let version = null;
  let qrSeq = 0; // orders QR builds: only the newest one is reported
  let qrListener = null;
  let pairingMode = false;
  let readySent = false;
  let codeTimer = null;
  let failed = false;

  function unsupported(missing) {
    if (failed) return;
    failed = true;
    report('unsupported', { missing: missing.slice(0, 32), version: webVersion() });
  }

  // Every part is read again for every QR: WhatsApp rotates the ADV secret with each new batch
  // of refs, so a cached secret makes every QR after a refresh unscannable.
  async function loadQrKeys() {
    const reg = await req('WAWebSignalStoreApi').waSignalStore.getRegistrationInfo();
    const noise = await req('WAWebUserPrefsInfoStore').waNoiseInfo.get();
    const b64 = req('WABase64').encodeB64;
    const adv = await req('WAWebAdvSignatureApi').getADVSecretKey();
    const platform = req('WAWebCompanionRegClientUtils').DEVICE_PLATFORM;
    return [b64(noise.staticKeyPair.pubKey), b64(reg.identityKeyPair.pubKey), adv, String(platform)];
  }

  let lastQr = null;
  async function reportQr() {
    const seq = ++qrSeq;
    try {
      const ref = req('WAWebConnModel').Conn.ref;
      if (ref === undefined || ref === null) return;
      const keys = await loadQrKeys();
      if (seq !== qrSeq || !qrListener) return; // a newer ref or secret arrived meanwhile
      const value = [ref].concat(keys).join(',');
      if (value === lastQr) return;
      lastQr = value;
      report('qr', { value: value });
    } catch (e) {
      report('error', { where: 'qr', message: errorText(e) });
    }
  }

  function advEmitter() {
    return lookup('WAWebUserPrefsMultiDevice.advSecretEventEmitter') || null;
  }

  function startQr() {
    if (qrListener || pairingMode) return;
    const Conn = req('WAWebConnModel').Conn;
    qrListener = () => reportQr();
    Conn.on('change:ref', qrListener);
    // WhatsApp Web's own QR component rebuilds the code on a new ref and on a new ADV secret.
    const adv = advEmitter();
    if (adv && typeof adv.on === 'function') adv.on('change', qrListener);
    reportQr();
  }

  function stopQr() {
    if (!qrListener) return;
    try {
      req('WAWebConnModel').Conn.off('change:ref', qrListener);
      const adv = advEmitter();
      if (adv && typeof adv.off === 'function') adv.off('change', qrListener);
    } catch (e) {
      // ignore: the module is going away with the document
    }
    qrListener = null;
  }

  // Current builds refresh through the backend event bus (the handler of WhatsApp Web's own
  // "click to reload QR" button); builds before mid-2025 had `Cmd.refreshQR()`.
  function refreshQr() {
    const bus = lookup('WAWebBackendEventBus.BackendEventBus');
    if (bus && typeof bus.triggerRefreshQR === 'function') return bus.triggerRefreshQR();
    return req('WAWebCmd').Cmd.refreshQR();
  }

  function onState(state) {
    report('state', { state: String(state) });
    if (state === 'UNPAIRED' || state === 'UNPAIRED_IDLE') {
      startQr();
    }
    if (state === 'UNPAIRED_IDLE' && !pairingMode) {
      // WhatsApp stops rotating refs after a batch; ask for new ones as its own button does.
      try {
        refreshQr();
      } catch (e) {
        report('error', { where: 'refreshQR', message: errorText(e) });
      }
    }
  }

  function widString(w) {
    if (w === undefined || w === null) return null;
    if (typeof w === 'string') return w;
    if (w._serialized) return String(w._serialized);
    if (w.user && w.server) return w.user + '@' + w.server;
    return String(w);
  }


  function meWid() {
    const me = req('WAWebUserPrefsMeUser');
    return me.getMaybeMePnUser() || me.getMaybeMeLidUser();
  }

  function onSynced() {
    if (readySent) return;
    readySent = true;
    stopQr();
    if (codeTimer) {
      clearInterval(codeTimer);
      codeTimer = null;
    }
    for (const hook of ON_READY) {
      try {
        hook.fn();
      } catch (e) {
        report('error', { where: hook.where, message: errorText(e) });
      }
    }
    let me = null;
    try {
      me = widString(meWid());
    } catch (e) {
      me = null;
    }
    report('ready', { me: me, version: version });
    probeLazy();
  }

  // Lazily loaded modules: "not yet" until a deadline after the session is ready, then missing.
  const LAZY_STEP_MS = 250;
  const LAZY_LIMIT_MS = 30000;
  let lazyReady = null;
  function probeLazy() {
    if (lazyReady) return lazyReady;
    lazyReady = new Promise((resolve) => {
      const started = Date.now();
      const tick = () => {
        const missing = missingOf(LAZY_SURFACE);
        if (missing.length === 0) return resolve(true);
        if (Date.now() - started > LAZY_LIMIT_MS) {
          unsupported(missing);
          return resolve(false);
        }
        setTimeout(tick, LAZY_STEP_MS);
      };
      tick();
    });
    return lazyReady;
  }

  // A module function wrapped so that the adapter sees every call WhatsApp Web's own code makes
  // through the module object (its compiled code looks members up at call time).
  function wrap(path, before) {
    const dot = path.lastIndexOf('.');
    const owner = lookup(path.slice(0, dot));
    const member = path.slice(dot + 1);
    if (!owner || typeof owner[member] !== 'function' || owner[member].__wafleet) return false;
    const original = owner[member];
    const wrapped = function () {
      try {
        before.apply(null, arguments);
      } catch (e) {
        // observing must never break WhatsApp Web
      }
      return original.apply(this, arguments);
    };
    wrapped.__wafleet = true;
    try {
      owner[member] = wrapped;
      return true;
    } catch (e) {
      return false;
    }
  }

  // Passkeys: linking through a passkey ("Shortcake") and the post-login integrity checkpoint
  // both need the phone's user; a headless session can only say so. Both are absent in older
  // builds, so they are observed where they exist, not required.
  function watchPasskeys() {
    wrap('WAWebBackendApi.frontendFireAndForget', (name) => {
      if (name === 'passkeyPrologueRequest') report('passkey', { state: 'required' });
      if (name === 'shortcakeVerificationCodeReady') report('passkey', { state: 'confirmation' });
    });
    wrap('WAWebIntegrityPasskeyCheckpointUtils.openPasskeyCheckpoint', () =>
      report('passkey', { state: 'required' })
    );
  }

  function reportLogout(reason) {
    report('logout', { reason: reason });
  }

  function attach() {
    version = webVersion();
    report('version', { version: version });
    const Socket = req('WAWebSocketModel').Socket;
    const Cmd = req('WAWebCmd').Cmd;

    Socket.on('change:state', (_socket, state) => onState(state));
    Socket.on('change:hasSynced', () => {
      if (Socket.hasSynced === true) onSynced();
    });
    // Current builds: the bridge events (and the backend bus's own logout); `logout` is the
    // pre-2025 name, harmless where it no longer fires.
    Cmd.on('starting_logout_from_bridge', () => reportLogout('starting_logout_from_bridge'));
    Cmd.on('logout_from_bridge', () => reportLogout('logout_from_bridge'));
    Cmd.on('logout', () => reportLogout('logout'));
    const bus = lookup('WAWebBackendEventBus.BackendEventBus');
    if (bus && typeof bus.onLogout === 'function') {
      try {
        bus.onLogout(() => reportLogout('backend_logout'));
      } catch (e) {
        // the Cmd events above cover it
      }
    }
    Cmd.on('offline_progress_update_from_bridge', () => {
      try {
        const p = req('WAWebOfflineHandler').OfflineMessageHandler.getOfflineDeliveryProgress();
        report('loading', { percent: Number(p) });
      } catch (e) {
        // progress is cosmetic
      }
    });
    watchPasskeys();

    onState(Socket.state);
    // hasSynced may already be true: Backbone fires no change event for a value that is set.
    if (Socket.hasSynced === true) onSynced();
  }

  // === the boot probe ===
  //
  // WhatsApp Web defines `window.require` early and its modules as its bundles run; there is no
  // event for "booted". The page checks on a short in-page timer (nothing crosses CDP meanwhile).
  // Once the build announces its version, a module still missing after a grace period is missing
  // for good: the session fails with the names instead of hanging until a QR timeout. Without any
  // version, the longer deadline decides.

  const WAIT_STEP_MS = 100;
  const GRACE_MS = 8000;
  const WAIT_LIMIT_MS = 180000;
  const started = Date.now();
  let versionSeenAt = null;
  function waitForModules() {
    if (failed) return;
    if (typeof window.require === 'function') {
      const missing = missingOf(SURFACE);
      if (missing.length === 0) {
        try {
          attach();
        } catch (e) {
          report('error', { where: 'attach', message: errorText(e) });
        }
        return;
      }
      if (versionSeenAt === null && webVersion() !== null) versionSeenAt = Date.now();
      const now = Date.now();
      if ((versionSeenAt !== null && now - versionSeenAt > GRACE_MS) || now - started > WAIT_LIMIT_MS) {
        unsupported(missing);
        return;
      }
    } else if (Date.now() - started > WAIT_LIMIT_MS) {
      report('error', { where: 'modules', message: 'WhatsApp Web modules did not appear' });
      return;
    }
    setTimeout(waitForModules, WAIT_STEP_MS);
  }

  // === commands (called by the engine through Runtime.evaluate) ===

  async function guard(fn) {
    try {
      return Object.assign({ ok: true }, await fn());
    } catch (e) {
      return { ok: false, error: errorText(e) };
    }
  }

  function loaded() {
    return typeof window.require === 'function' && missingOf(SURFACE).length === 0;
  }

  Object.assign(COMMANDS, {
    requestPairingCode: (phone, intervalMs) =>
      guard(async () => {
        if (!loaded()) throw new Error('WhatsApp Web is not loaded');
        const digits = String(phone).replace(/[^0-9]/g, '');
        const Alt = req('WAWebAltDeviceLinkingApi');
        pairingMode = true;
        stopQr();
        const getCode = async () => {
          Alt.setPairingType('ALT_DEVICE_LINKING');
          await Alt.initializeAltDeviceLinking();
          return String(await Alt.startAltLinkingFlow(digits, true));
        };
        if (codeTimer) clearInterval(codeTimer);
        // WhatsApp expires a code after about three minutes; ask again while still unpaired.
        codeTimer = setInterval(async () => {
          const state = req('WAWebSocketModel').Socket.state;
          if (state !== 'UNPAIRED' && state !== 'UNPAIRED_IDLE') {
            clearInterval(codeTimer);
            codeTimer = null;
            return;
          }
          try {
            report('code', { code: await getCode() });
          } catch (e) {
            report('error', { where: 'pairing', message: errorText(e) });
          }
        }, Number(intervalMs) > 0 ? Number(intervalMs) : 180000);
        const code = await getCode();
        report('code', { code: code });
        return { code: code };
      }),

    logout: () =>
      guard(async () => {
        if (!loaded()) throw new Error('WhatsApp Web is not loaded');
        await req('WAWebSocketModel').Socket.logout();
        return {};
      }),

    status: () =>
      guard(async () => {
        if (!loaded()) return { loaded: false, missing: typeof window.require === 'function' ? missingOf(SURFACE) : [] };
        const Socket = req('WAWebSocketModel').Socket;
        return { loaded: true, state: String(Socket.state), synced: Socket.hasSynced === true, version: version };
      }),
  });
