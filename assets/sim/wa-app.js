/*
 * wafleet simulator, chunk 3 of 3: the app.
 *
 * Keeps the profile's key material and credentials in IndexedDB (database `wawc`, store
 * `user`), talks to the simulator server over a websocket (/ws), drives the models of
 * wa-models.js from what the server says, and publishes window.require and window.Debug once
 * booted. See docs/simulator.md for the states and messages.
 */
(function () {
  'use strict';
  // The server stamps every bundle with its web version (docs/simulator.md, versioned pages).
  var VERSION = '__SIM_WEB_VERSION__';
  var require = window.__simRequire;
  var internal = require('WAWebSimInternal');
  var Socket = require('WAWebSocketModel').Socket;
  var Conn = require('WAWebConnModel').Conn;
  var Cmd = require('WAWebCmd').Cmd;
  var C = require('WAWebCollections');
  var WF = require('WAWebWidFactory');
  var MsgKey = require('WAWebMsgKey');
  var B = require('WABase64');

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
  function setState(s) {
    if (Socket.state !== s) Socket.set({ state: s });
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

  function connect() {
    if (stopped) return;
    if (Socket.state !== 'CONFLICT') setState('OPENING');
    var url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws';
    var sock = new WebSocket(url);
    ws = sock;
    sock.onopen = function () {
      open = true;
      Promise.all([internal.keys, idbGet('creds').catch(function () { return null; })]).then(function (r) {
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
      Socket.set({ stream: 'DISCONNECTED' });
      if (stopped) return;
      if (Socket.state === 'CONNECTED') setState('TIMEOUT');
      setTimeout(connect, backoff);
      backoff = Math.min(backoff * 2, 5000);
    };
  }

  function connectedAs(m) {
    backoff = 500;
    var wid = WF.createWid(m.wid);
    Conn.set({ wid: wid, me: wid, pushname: m.pushname, platform: m.platform });
    setState('CONNECTED');
    flushUnsent();
    if (Socket.hasSynced) {
      Socket.set({ stream: 'CONNECTED' });
      return;
    }
    offlineDelivery(Number(m.sync_ms) || 0);
  }

  // The offline delivery after connecting: progress events, then its end, then hasSynced.
  // With no delay it all happens in the same task as CONNECTED.
  var syncTimer = null;
  function offlineDelivery(ms) {
    var Offline = require('WAWebOfflineHandler').OfflineMessageHandler;
    if (syncTimer) { clearTimeout(syncTimer); syncTimer = null; }
    Socket.set({ stream: 'SYNCING' });
    var steps = ms > 0 ? 4 : 1;
    var step = 0;
    function advance() {
      syncTimer = null;
      if (Socket.state !== 'CONNECTED') return;
      step += 1;
      Offline.setProgress(Math.round(100 * step / steps));
      Cmd.trigger('offline_progress_update_from_bridge');
      if (step < steps) {
        syncTimer = setTimeout(advance, ms / steps);
        return;
      }
      Cmd.isOfflineDeliveryEnd = true;
      Cmd.trigger('offline_delivery_end_from_bridge');
      Socket.set({ stream: 'CONNECTED', hasSynced: true });
    }
    if (ms > 0) syncTimer = setTimeout(advance, ms / steps);
    else advance();
  }

  function flushUnsent() {
    internal.unsent.forEach(function (u) { internal.transport.send({ t: 'send', msg: u.wire }); });
  }

  function loggedOut(reason) {
    stopped = true;
    if (ws) { try { ws.close(); } catch (e) { /* already closing */ } }
    var wipe = Promise.all([idbDel('creds'), idbDel('keys')]).catch(function (e) {
      console.error('cannot wipe credentials', e);
    });
    return wipe.then(function () {
      internal.unsent.forEach(function (u) { u.reject(new Error('logged out')); });
      internal.unsent.clear();
      Conn.set({ wid: null, me: null, pushname: null });
      Socket.set({ hasSynced: false, stream: 'DISCONNECTED' });
      setState('UNPAIRED');
      Cmd.trigger('logout', reason);
      logoutWaiters.splice(0).forEach(function (f) { f(); });
      // WhatsApp Web reloads itself after a logout; whatsapp-web.js watches for this URL.
      setTimeout(function () { location.replace('/?post_logout=1'); }, 500);
    });
  }

  internal.onLogout = function () {
    if (stopped) return Promise.resolve();
    return new Promise(function (resolve) {
      logoutWaiters.push(resolve);
      if (!internal.transport.send({ t: 'logout' })) loggedOut('logout');
    });
  };

  function inbound(m) {
    if (!Conn.wid) return;
    var from = WF.createWid(m.from + '@c.us');
    var key = new MsgKey({ fromMe: false, remote: from, id: m.id });
    if (C.Msg.get(key)) return;
    var chat = C.Chat._ensure(from).chat;
    C.Msg.add({
      id: key, from: from, to: Conn.wid, body: m.body, type: 'chat', t: m.ts, ack: 1,
      isNewMsg: true, self: 'in', local: false, notifyName: '',
    });
    chat.set({ unreadCount: (chat.unreadCount || 0) + 1, t: m.ts });
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
        Conn.set({ ref: m.ref });
        setState('UNPAIRED');
        break;
      case 'idle':
        setState('UNPAIRED_IDLE');
        break;
      case 'paired':
        setState('PAIRING');
        idbPut('creds', { device: m.device, token: m.token, wid: m.wid, pushname: m.pushname, platform: m.platform })
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
        Socket.set({ stream: 'DISCONNECTED' });
        setState('DEPRECATED_VERSION');
        break;
      case 'conflict':
        setState('CONFLICT');
        Socket.set({ stream: 'DISCONNECTED' });
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
      case 'ack': {
        var msg = C.Msg.get(m.id);
        if (msg && (msg.ack || 0) < m.ack) msg.set({ ack: m.ack });
        var u = internal.unsent.get(m.id);
        if (u) { internal.unsent.delete(m.id); u.resolve({ messageSendResult: 'OK' }); }
        break;
      }
      case 'send_error': {
        var sent = C.Msg.get(m.id);
        if (sent) sent.set({ ack: -1 });
        var e = internal.unsent.get(m.id);
        if (e) { internal.unsent.delete(m.id); e.reject(new Error(m.message)); }
        break;
      }
      case 'msg':
        inbound(m);
        break;
      case 'crash':
        crash(m.mode);
        break;
      case 'error':
        console.warn('simulator server:', m.message);
        break;
      default:
        break;
    }
  }

  // --- a minimal screen, for people looking at the page ------------------------------------------
  function render() {
    var el = document.getElementById('app');
    if (!el) return;
    var s = Socket.state;
    var html = '<h1>WhatsApp Web (wafleet simulator ' + VERSION + ')</h1><p>State: <b id="state">' + s + '</b></p>';
    if (s === 'UNPAIRED' || s === 'UNPAIRED_IDLE') {
      html += '<div data-ref="' + (Conn.ref || '') + '"><code>' + (Conn.ref || '') + '</code></div>';
      if (internal.pairingCode) html += '<p>Pairing code: <b>' + internal.pairingCode + '</b></p>';
      if (s === 'UNPAIRED_IDLE') html += '<button id="reload">Click to reload QR code</button>';
    } else if (s === 'CONNECTED' && Conn.wid) {
      html += '<p>Linked to ' + Conn.wid._serialized + '</p>';
    }
    el.innerHTML = html;
    var btn = document.getElementById('reload');
    if (btn) btn.onclick = function () { Cmd.refreshQR(); };
  }
  Conn.on('change:ref', render);

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
    internal.setAdvSecret = function (adv) {
      var k = internal.keysNow;
      if (!k || k.adv === adv) return;
      k.adv = adv;
      idbPut('keys', k).catch(function (e) { console.error('cannot store the ADV secret', e); });
      require('WAWebUserPrefsMultiDevice').advSecretEventEmitter.trigger('change');
    };
    window.require = require;
    window.Debug = { VERSION: VERSION };
    render();
    connect();
  }
  if (document.readyState === 'complete') boot();
  else window.addEventListener('load', boot);
})();
