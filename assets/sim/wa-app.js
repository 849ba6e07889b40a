/*
 * wafleet simulator, last chunk: the app.
 *
 * Keeps the profile's key material and credentials in IndexedDB (database `wawc`, store
 * `user`), talks to the simulator server over a websocket (/ws), drives the models from what
 * the server says, bootloads the media bundle once CONNECTED, and publishes window.require,
 * window.requireDeferred and (late, as WhatsApp does) window.Debug once booted. It always calls
 * other modules through their module objects at call time, so a wrapper an adapter installs on
 * a module function sees every call. See docs/simulator.md for the states and messages.
 */
(function () {
  'use strict';
  // The server stamps every bundle with its web version (docs/simulator.md, versioned pages).
  var VERSION = '__SIM_WEB_VERSION__';
  var require = window.__simRequire;
  var LEGACY = require('WAWebSimBuild').legacy;
  var internal = require('WAWebSimInternal');
  var Socket = require('WAWebSocketModel').Socket;
  var Conn = require('WAWebConnModel').Conn;
  var C = require('WAWebCollections');
  var WF = require('WAWebWidFactory');
  var B = require('WABase64');
  function Cmd() { return require('WAWebCmd').Cmd; }
  function Bus() { return require('WAWebBackendEventBus').BackendEventBus; }
  function frontend(name, payload) { require('WAWebBackendApi').frontendFireAndForget(name, payload); }

  // --- IndexedDB -------------------------------------------------------------------------------
  var dbPromise = null;
  function db() {
    if (!dbPromise) {
      dbPromise = new Promise(function (resolve, reject) {
        var r = indexedDB.open('wawc', 1);
        r.onupgradeneeded = function () { r.result.createObjectStore('user'); };
        r.onsuccess = function () { resolve(r.result); };
        r.onerror = function () { reject(r.error); };
      });
    }
    return dbPromise;
  }
  function idb(mode, fn) {
    return db().then(function (d) {
      return new Promise(function (resolve, reject) {
        // Strict durability: credentials must be on disk before the page says CONNECTED.
        var tx = d.transaction('user', mode, { durability: 'strict' });
        var result;
        var req = fn(tx.objectStore('user'));
        req.onsuccess = function () { result = req.result; };
        tx.oncomplete = function () { resolve(result); };
        tx.onerror = function () { reject(tx.error); };
        tx.onabort = function () { reject(tx.error); };
      });
    });
  }
  function idbGet(k) { return idb('readonly', function (s) { return s.get(k); }); }
  function idbPut(k, v) { return idb('readwrite', function (s) { return s.put(v, k); }); }
  function idbDel(k) { return idb('readwrite', function (s) { return s.delete(k); }); }

  function random32() {
    var b = new Uint8Array(32);
    crypto.getRandomValues(b);
    return B.encodeB64(b);
  }
  function newKeys() {
    return {
      noise: random32(), noisePriv: random32(),
      identity: random32(), identityPriv: random32(),
      adv: random32(), registrationId: 1 + Math.floor(Math.random() * 16380),
    };
  }
  function loadKeys() {
    return idbGet('keys').then(function (k) {
      if (k && k.noise && k.identity && k.adv) return k;
      k = newKeys();
      return idbPut('keys', k).then(function () { return k; });
    }).catch(function (e) {
      console.error('IndexedDB unavailable, keys will not survive a restart', e);
      return newKeys();
    });
  }

  // --- state ----------------------------------------------------------------------------------
  // Current builds feed Socket.state from the backend bus; July-2025 builds set it directly.
  function setState(s) {
    if (Socket.state !== s) {
      if (LEGACY) Socket.set('state', s);
      else Bus().triggerSetSocketState(s);
    }
    render();
  }

  // --- websocket --------------------------------------------------------------------------------
  var ws = null;
  var open = false;
  var stopped = false;
  var backoff = 500;
  var logoutWaiters = [];

  internal.transport = {
    send: function (o) {
      if (!ws || !open) return false;
      ws.send(JSON.stringify(o));
      return true;
    },
    isOpen: function () { return !!(ws && open); },
  };
  internal.onReconnect = function () { if (ws) { try { ws.close(); } catch (e) { /* closing */ } } };

  function connect() {
    if (stopped) return;
    if (Socket.state !== 'CONFLICT') setState('OPENING');
    var url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws';
    var sock = new WebSocket(url);
    ws = sock;
    sock.onopen = function () {
      open = true;
      Promise.all([internal.keys, internal.creds]).then(function (r) {
        var k = r[0], creds = r[1];
        if (ws !== sock) return;
        internal.transport.send({
          t: 'hello',
          keys: { noise: k.noise, identity: k.identity, adv: k.adv, platform: require('WAWebCompanionRegClientUtils').DEVICE_PLATFORM },
          creds: creds && creds.device ? { device: creds.device, token: creds.token } : null,
          version: VERSION,
        });
      });
    };
    sock.onmessage = function (ev) {
      var m;
      try { m = JSON.parse(ev.data); } catch (e) { return; }
      try { handle(m); } catch (e) { console.error('cannot handle', m && m.t, e); }
    };
    sock.onclose = function () {
      if (ws !== sock) return;
      open = false;
      ws = null;
      Socket.set('stream', 'DISCONNECTED');
      if (stopped) return;
      // WhatsApp's enum has no TIMEOUT: a dropped socket goes back to OPENING (stream
      // DISCONNECTED) while it reconnects.
      setTimeout(connect, backoff);
      backoff = Math.min(backoff * 2, 5000);
    };
  }

  function learn(pn, lid) {
    if (pn && lid) require('WAWebApiContact').__simLearn(pn, lid);
  }

  function connectedAs(m) {
    backoff = 500;
    internal.mePn = WF.createWid(m.wid);
    internal.meLid = m.lid ? WF.createWid(m.lid) : null;
    learn(m.wid, m.lid);
    // Conn.wid stays unset: multi-device builds do not populate it (docs/wa-surface.md §2).
    Conn.set({ pushname: m.pushname, platform: m.platform, connected: true, ref: undefined, refTTL: undefined });
    (m.groups || []).forEach(group);
    setState('CONNECTED');
    flushUnsent();
    // The chats and contacts of the phone (wa-chats.js), with their newest messages.
    internal.transport.send({ t: 'chat_sync' });
    bootloadMedia();
    if (m.checkpoint) require('WAWebIntegrityPasskeyCheckpointUtils').openPasskeyCheckpoint(m.checkpoint);
    if (Socket.hasSynced) {
      Socket.set('stream', 'CONNECTED');
      return;
    }
    offlineDelivery(Number(m.sync_ms) || 0);
  }

  // WhatsApp Web bootloads its media bundle on demand once the socket is up.
  function bootloadMedia() {
    require('Bootloader').loadModules(['WAWebMediaPipeline']).catch(function (e) {
      console.error('cannot load the media bundle', e);
    });
  }

  // The offline delivery after connecting: progress events, then its end, then hasSynced.
  // With no delay it all happens in the same task as CONNECTED.
  var syncTimer = null;
  function offlineDelivery(ms) {
    if (syncTimer) { clearTimeout(syncTimer); syncTimer = null; }
    Socket.set('stream', 'SYNCING');
    var steps = ms > 0 ? 4 : 1;
    var step = 0;
    function advance() {
      syncTimer = null;
      if (Socket.state !== 'CONNECTED') return;
      step += 1;
      require('WAWebOfflineHandler').__simSetProgress(Math.round(100 * step / steps));
      Cmd().onOfflineProgressUpdateFromBridge();
      if (LEGACY) Cmd().trigger('offline_progress_update');
      if (step < steps) {
        syncTimer = setTimeout(advance, ms / steps);
        return;
      }
      if (LEGACY) Cmd().onOfflineDeliveryEndFromBridge();
      else Bus().triggerOfflineDeliveryEnd();
      if (!LEGACY) Bus().triggerCriticalSyncDone();
      Socket.set({ stream: 'CONNECTED', hasSynced: true });
    }
    if (ms > 0) syncTimer = setTimeout(advance, ms / steps);
    else advance();
  }

  function flushUnsent() {
    internal.unsent.forEach(function (u) { internal.transport.send({ t: 'send', msg: u.wire }); });
  }

  // Logout as WhatsApp performs it (docs/wa-surface.md §7): starting_logout, clear storage,
  // navigate to ?post_logout=1&logout_reason=<code>, then the logout event (which may be lost to
  // the navigation). July-2025 builds: Cmd event `logout` and a plain ?post_logout=1.
  var loggingOut = false;
  function loggedOut(reason) {
    if (loggingOut) return Promise.resolve();
    loggingOut = true;
    stopped = true;
    if (!LEGACY) Bus().triggerStartingLogout();
    if (ws) { try { ws.close(); } catch (e) { /* already closing */ } }
    var wipe = Promise.all([idbDel('creds'), idbDel('keys')]).catch(function (e) {
      console.error('cannot wipe credentials', e);
    });
    return wipe.then(function () {
      internal.unsent.forEach(function (u) { u.reject(new Error('logged out')); });
      internal.unsent.clear();
      internal.mePn = null;
      internal.meLid = null;
      Conn.set({ pushname: undefined, connected: false });
      Socket.set({ hasSynced: false, stream: 'DISCONNECTED' });
      setState('UNPAIRED');
      logoutWaiters.splice(0).forEach(function (f) { f(); });
      if (LEGACY) {
        Cmd().logout(reason);
        location.href = '/?post_logout=1';
      } else {
        location.href = '/?post_logout=1&logout_reason=' + encodeURIComponent(reason || 'unknown');
        Bus().triggerLogout();
      }
    });
  }

  internal.onLogout = function (reason) {
    if (stopped) return Promise.resolve();
    return new Promise(function (resolve) {
      logoutWaiters.push(resolve);
      if (!internal.transport.send({ t: 'logout', reason: reason })) loggedOut(reason);
    });
  };

  // WAWebHandlePreviousLogout: the next load reads, then removes, the logout markers.
  var LOGOUT_MARKERS = ['post_logout', 'logout_reason', 'logout_message_header', 'logout_message_subtext'];
  function handlePreviousLogout() {
    var q = new URLSearchParams(location.search);
    if (!LOGOUT_MARKERS.some(function (k) { return q.has(k); })) return;
    internal.previousLogout = { reason: q.get('logout_reason') };
    LOGOUT_MARKERS.forEach(function (k) { q.delete(k); });
    var rest = q.toString();
    history.replaceState(history.state, '', location.pathname + (rest ? '?' + rest : '') + location.hash);
  }

  function group(g) {
    C.GroupMetadata.__simUpsert(g);
    (g.mappings || []).forEach(function (x) { learn(x.pn, x.lid); });
  }

  function inboundAttrs(m, key, type) {
    var chat = WF.createWid(m.chat);
    var me = WF.createWid(m.me);
    var attrs = {
      id: key, from: chat, to: me, author: m.author ? WF.createWid(m.author) : undefined,
      body: type === 'ciphertext' ? undefined : m.body, type: type, t: m.ts, ack: 1,
      isNewMsg: true, self: 'in', local: false, notifyName: m.notify || '',
    };
    // Written on the phone itself: the linked device gets it as its own, from me to the chat.
    if (m.from_me) Object.assign(attrs, { from: me, to: chat, self: 'out', notifyName: '' });
    // A media message carries what the sender's upload produced (WhatsApp's field names); the
    // file itself stays on the media server until WAWebDownloadManager fetches it.
    if (m.media && type !== 'ciphertext') {
      var md = m.media;
      Object.assign(attrs, {
        type: md.type, body: undefined, caption: md.caption, mimetype: md.mimetype, filename: md.filename,
        size: md.size, filehash: md.filehash, encFilehash: md.enc_filehash, mediaKey: md.media_key,
        mediaKeyTimestamp: md.media_key_timestamp, directPath: md.direct_path,
        deprecatedMms3Url: 'https://mmg.whatsapp.net' + md.direct_path,
      });
    }
    // A location, contact card or poll, and a reply's quote: WhatsApp's model attributes, as
    // the server built them (src/sim/state/content.rs). A media message keeps its media type.
    if (m.content && type !== 'ciphertext') {
      Object.assign(attrs, m.content.attrs);
      if (!m.media) attrs.type = m.content.type;
      if (attrs.type !== 'chat' && !m.media && !('body' in m.content.attrs)) attrs.body = undefined;
    }
    return attrs;
  }

  function inbound(m) {
    if (!internal.mePn) return;
    if (m.mapping) learn(m.mapping.pn, m.mapping.lid);
    var MsgKey = require('WAWebMsgKey');
    var key = new MsgKey({ fromMe: !!m.from_me, remote: m.chat, id: m.id, participant: m.author });
    if (C.Msg.get(key)) return;
    var chat;
    try { chat = C.Chat.__simEnsure(m.chat).chat; } catch (e) { console.error('inbound for an unknown chat', m.chat, e); return; }
    if (m.author) C.Contact.__simEnsure(WF.createWid(m.author));
    var ct = m.ciphertext;
    var msg = C.Msg.add(inboundAttrs(m, key, ct ? 'ciphertext' : 'chat'));
    chat.set(m.from_me ? { t: m.ts } : { unreadCount: (chat.unreadCount || 0) + 1, t: m.ts });
    if (!ct) return;
    // Decrypted later: the same model changes type, or the placeholder is deleted and a fresh
    // model with the same id is added (both paths exist in WhatsApp).
    setTimeout(function () {
      if (C.Msg.get(key) !== msg) return;
      if (ct.path === 'readd') {
        C.Msg.remove(msg);
        C.Msg.add(inboundAttrs(m, key, 'chat'));
      } else {
        var done = inboundAttrs(m, key, 'chat');
        msg.set(m.media || m.content ? done : { body: m.body, type: 'chat' });
      }
    }, Math.max(0, Number(ct.after_ms) || 0));
  }

  // A revoke ("delete for everyone") replaces the original with a new `revoked` model.
  function revoke(m) {
    var orig = C.Msg.get(m.id);
    if (!orig) return;
    C.Msg.remove(orig);
    C.Msg.add({
      id: orig.id, from: orig.from, to: orig.to, author: orig.author, type: 'revoked', subtype: 'sender',
      revokeSender: orig.author || orig.from, protocolMessageKey: orig.id, t: m.ts, ack: orig.ack,
      self: orig.self, local: false, isNewMsg: false,
    });
  }

  function passkey(m) {
    var S = require('WAWebShortcakeLinkingApi');
    switch (m.stage) {
      case 'prologue':
        S.initializeShortcakeLinking();
        frontend('passkeyPrologueRequest', {});
        S.markPrologueSent();
        frontend('shortcakePrologueSent', {});
        break;
      case 'code':
        S.handlePrimaryEphemeralIdentity(m.code);
        frontend('shortcakeVerificationCodeReady', { verificationCode: m.code, skipHandoffUx: false });
        break;
      case 'cancelled':
        S.cancelShortcakeLinking();
        frontend('shortcakeError', { reason: 'server_error' });
        break;
      default:
        break;
    }
    render();
  }

  function crash(mode) {
    console.error('simulator fault: crashing the renderer (' + mode + ')');
    if (mode === 'oom') {
      // Grow the V8 heap until its limit kills the renderer.
      var hog = [];
      window.__simHog = hog;
      for (;;) hog.push(new Array(1 << 20).fill(Math.random()));
    }
    // Hang the main thread for good: no timers, no websocket, no CDP evaluation.
    for (;;) { /* fault */ }
  }

  function handle(m) {
    switch (m.t) {
      case 'qr':
        backoff = 500;
        // A new batch of refs comes with a new ADV secret, stored before the ref is shown so a
        // QR built on change:ref carries the current one.
        if (m.adv) internal.setAdvSecret(m.adv);
        Conn.set({ ref: m.ref, refTTL: m.ttl_ms, connected: false });
        setState('UNPAIRED');
        break;
      case 'idle':
        setState('UNPAIRED_IDLE');
        break;
      case 'paired':
        if (require('WAWebShortcakeLinkingApi').getShortcakeLinkingStage() !== 'NotStarted') {
          require('WAWebShortcakeLinkingApi').confirmVerificationCode();
        }
        setState('PAIRING');
        internal.creds = Promise.resolve({ device: m.device, token: m.token, wid: m.wid, lid: m.lid });
        idbPut('creds', { device: m.device, token: m.token, wid: m.wid, lid: m.lid, pushname: m.pushname, platform: m.platform })
          .catch(function (e) { console.error('cannot store credentials', e); })
          .then(function () { connectedAs(m); });
        break;
      case 'connected':
        connectedAs(m);
        break;
      case 'logged_out':
        loggedOut(m.reason);
        break;
      case 'deprecated':
        // The server turns this build away: WhatsApp Web shows "update" and stays there.
        stopped = true;
        Socket.set('stream', 'DISCONNECTED');
        setState('DEPRECATED_VERSION');
        break;
      case 'conflict':
        setState('CONFLICT');
        Socket.set('stream', 'DISCONNECTED');
        break;
      case 'pair_code':
      case 'pair_code_error': {
        var p = internal.pending.get(m.req);
        if (!p) break;
        internal.pending.delete(m.req);
        if (m.t === 'pair_code') { internal.pairingCode = m.code; p.resolve(m.code); render(); }
        else p.reject(new Error(m.message));
        break;
      }
      case 'msgs':
      case 'chat_result': {
        var cr = internal.pending.get(m.req);
        if (!cr) break;
        internal.pending.delete(m.req);
        cr.resolve(m);
        break;
      }
      case 'chat':
        require('WAWebSimHistory').chat(m.chat);
        break;
      case 'contact':
        require('WAWebSimHistory').contact(m.contact);
        break;
      case 'exists':
      case 'exists_error': {
        var q = internal.pending.get(m.req);
        if (!q) break;
        internal.pending.delete(m.req);
        if (m.t === 'exists') q.resolve(m.result || null);
        else q.reject(new (require('WAWebBackendErrors').ServerStatusCodeError)(m.code, m.text));
        break;
      }
      case 'ack': {
        var msg = C.Msg.get(m.id);
        if (msg && (msg.ack || 0) < m.ack) msg.set('ack', m.ack);
        var u = internal.unsent.get(m.id);
        if (u) { internal.unsent.delete(m.id); u.resolve({ messageSendResult: 'OK' }); }
        break;
      }
      case 'send_error': {
        var sent = C.Msg.get(m.id);
        if (sent) sent.set('ack', -1);
        var e = internal.unsent.get(m.id);
        if (e) { internal.unsent.delete(m.id); e.reject(new Error(m.message)); }
        break;
      }
      case 'msg':
        inbound(m);
        break;
      case 'revoke':
        revoke(m);
        break;
      case 'group':
        group(m.group);
        break;
      case 'group_result':
      case 'group_error':
        require('WAWebSimGroupIq').__simAnswer(m);
        break;
      case 'group_notice':
        require('WAWebSimGroupNotice').__simApply(m);
        break;
      case 'passkey':
        passkey(m);
        break;
      case 'checkpoint_done':
        require('WAWebIntegrityPasskeyCheckpointUtils').__simClose();
        break;
      case 'crash':
        crash(m.mode);
        break;
      case 'error':
        console.warn('simulator server:', m.message);
        break;
      default: {
        // Reactions, edits, calls, presence: wa-events.js.
        var ev = require('WAWebSimEvents');
        if (Object.prototype.hasOwnProperty.call(ev, m.t)) ev[m.t](m);
        break;
      }
    }
  }

  // --- a minimal screen, for people looking at the page ------------------------------------------
  // The QR string as WhatsApp's own QR component builds it (docs/wa-surface.md §8), rebuilt on
  // Conn change:ref and on every ADV secret change.
  var qrString = '';
  function buildQr() {
    if (Conn.connected || !Conn.ref) { qrString = ''; render(); return; }
    var ref = Conn.ref;
    Promise.all([
      require('WAWebUserPrefsInfoStore').waNoiseInfo.get(),
      require('WAWebSignalStoreApi').waSignalStore.getRegistrationInfo(),
      require('WAWebAdvSignatureApi').getADVSecretKey(),
    ]).then(function (r) {
      if (Conn.ref !== ref) return;
      qrString = [ref, B.encodeB64(r[0].staticKeyPair.pubKey), B.encodeB64(r[1].identityKeyPair.pubKey), r[2],
        require('WAWebCompanionRegClientUtils').DEVICE_PLATFORM].join(',');
      render();
    }).catch(function (e) { console.error('cannot build the QR string', e); });
  }
  function render() {
    var el = document.getElementById('app');
    if (!el) return;
    var s = Socket.state;
    var html = '<h1>WhatsApp Web (wafleet simulator ' + VERSION + ')</h1><p>State: <b id="state">' + s + '</b></p>';
    if ((s === 'UNPAIRED' || s === 'UNPAIRED_IDLE') && qrString) {
      html += '<div data-testid="link-device-qr-code" data-ref="' + qrString + '"><code>' + qrString + '</code></div>';
      if (internal.pairingCode) html += '<p>Pairing code: <b>' + internal.pairingCode + '</b></p>';
      if (s === 'UNPAIRED_IDLE') html += '<button id="reload">Click to reload QR code</button>';
    }
    var code = require('WAWebShortcakeLinkingApi').getVerificationCode();
    if (code) html += '<p>Passkey verification code: <b>' + code + '</b></p>';
    el.innerHTML = html;
    var btn = document.getElementById('reload');
    if (btn) {
      btn.onclick = function () {
        if (LEGACY) Cmd().refreshQR();
        else Bus().triggerRefreshQR();
      };
    }
  }

  // --- boot ---------------------------------------------------------------------------------------
  // Memory benchmarks compare sessions against WhatsApp Web's footprint, and the simulator's own
  // page is tiny. The ballast is a stand-in for WhatsApp Web's JS heap (not a model of what it
  // holds): many small objects, each with its own flat string (built from char codes, so no
  // cons-string or interned sharing), retained for the page's lifetime so every GC walks them.
  // ~2650 entries of ~395 bytes each make one MiB of V8 heap (measured with heapUsed after gc()).
  var BALLAST_ENTRIES_PER_MB = 2650;
  var BALLAST_BODY_CHARS = 224;
  function allocateBallast(mb) {
    if (!(mb > 0)) return;
    var keep = [];
    var bytes = new Uint8Array(BALLAST_BODY_CHARS);
    var codes = new Array(BALLAST_BODY_CHARS);
    var total = mb * BALLAST_ENTRIES_PER_MB;
    for (var i = 0; i < total; i++) {
      if ((i & 3) === 0) crypto.getRandomValues(bytes);
      for (var j = 0; j < BALLAST_BODY_CHARS; j++) codes[j] = 97 + ((bytes[j] + i) & 15);
      keep.push({ id: 'b' + i, body: String.fromCharCode.apply(null, codes), t: i * 1000, flags: [i & 1, i & 2] });
    }
    Object.defineProperty(window, '__simBallast', { value: keep });
  }

  function boot() {
    var cfg = window.__simConfig || {};
    allocateBallast(cfg.ballast_mb | 0);
    internal.keys = loadKeys().then(function (k) { internal.keysNow = k; return k; });
    // "Me" is persisted, so it is known before the socket opens.
    internal.creds = idbGet('creds').catch(function () { return null; }).then(function (c) {
      if (c && c.wid && !internal.mePn) {
        internal.mePn = WF.createWid(c.wid);
        internal.meLid = c.lid ? WF.createWid(c.lid) : null;
      }
      return c;
    });
    internal.setAdvSecret = function (adv) {
      var k = internal.keysNow;
      if (!k || k.adv === adv) return;
      k.adv = adv;
      idbPut('keys', k).catch(function (e) { console.error('cannot store the ADV secret', e); });
      require('WAWebUserPrefsMultiDevice').advSecretEventEmitter.trigger('change');
    };
    Conn.on('change:ref', buildQr);
    require('WAWebUserPrefsMultiDevice').advSecretEventEmitter.on('change', buildQr);
    if (!LEGACY) {
      // WAWebLaunchSocket: a refresh asks the server for a new batch of refs.
      Bus().onRefreshQR(function () { internal.transport.send({ t: 'refresh_qr' }); });
    }
    window.require = require;
    window.requireDeferred = window.__simRequireDeferred;
    if (!LEGACY) Cmd().onInitialLoadReadyFromBridge();
    render();
    connect();
    // Shortly after boot, as WhatsApp's WAWebHandlePreviousLogout does; and window.Debug late.
    setTimeout(function () {
      handlePreviousLogout();
      window.Debug = { VERSION: VERSION };
    }, 50);
  }
  if (document.readyState === 'complete') boot();
  else window.addEventListener('load', boot);
})();
