/*
 * wafleet simulator, chunk 3: the WAWeb* modules of the current build (docs/wa-surface.md), as
 * WhatsApp Web's own sources name them: session and connection models, Cmd and the
 * BackendEventBus, the QR key material, linking (pairing code, passkey), contacts and LIDs,
 * collections and sending. The media pipeline is NOT here: it arrives with the lazy bundle
 * (wa-media.js) once the socket is CONNECTED.
 *
 * A "legacy" build (fault `legacy_build`) has the July-2025 names instead: `Cmd.refreshQR()`,
 * Cmd event `logout`, `WAWebWidFactory.createUserWid`, `getMeUser`, and no WAWebBackendEventBus.
 */
(function () {
  'use strict';
  var __d = window.__d;
  var LEGACY = window.__simRequire('WAWebSimBuild').legacy;

  __d('WAWebBuildConstants', ['WAWebSimBuild'], function (t, require, r, o, a, i, l) {
    var v = require('WAWebSimBuild').version;
    l.VERSION_STR = v;
    l.VERSION_BASE = v.split('-')[0];
  });

  __d('WAWebSocketConstants', [], function (t, n, r, o, a, i, l) {
    var STATE = {};
    // WhatsApp's enum has no TIMEOUT (docs/wa-surface.md §6).
    ['OPENING', 'PAIRING', 'UNPAIRED', 'UNPAIRED_IDLE', 'CONNECTED', 'CONFLICT', 'UNLAUNCHED',
      'PROXYBLOCK', 'TOS_BLOCK', 'SMB_TOS_BLOCK', 'DEPRECATED_VERSION', 'SCREEN_LOCKED']
      .forEach(function (s) { STATE[s] = s; });
    l.SOCKET_STATE = STATE;
    l.SOCKET_STREAM = { DISCONNECTED: 'DISCONNECTED', SYNCING: 'SYNCING', RESUMING: 'RESUMING', CONNECTED: 'CONNECTED' };
  });

  // --- Cmd and the backend event bus ---------------------------------------------------------
  __d('WAWebCmd', ['WAWebEventEmitter', 'WAWebSimInternal'], function (t, require, r, o, a, i, l) {
    var EventEmitter = require('WAWebEventEmitter').EventEmitter;
    var internal = require('WAWebSimInternal');
    function CmdImpl() { this.isOfflineDeliveryEnd = false; }
    CmdImpl.prototype = Object.create(EventEmitter.prototype);
    CmdImpl.prototype.constructor = CmdImpl;
    var bridge = {
      onLogoutFromBridge: 'logout_from_bridge',
      onStartingLogoutFromBridge: 'starting_logout_from_bridge',
      onOfflineProgressUpdateFromBridge: 'offline_progress_update_from_bridge',
      onMainStreamModeReadyFromBridge: 'main_stream_mode_ready_from_bridge',
      onInitialLoadReadyFromBridge: 'initial_load_ready_from_bridge',
      onCriticalSyncDoneFromBridge: 'on_critical_sync_done_from_bridge',
    };
    Object.keys(bridge).forEach(function (m) {
      CmdImpl.prototype[m] = function () {
        var args = [bridge[m]].concat(Array.prototype.slice.call(arguments));
        this.trigger.apply(this, args);
      };
    });
    CmdImpl.prototype.onOfflineDeliveryEndFromBridge = function () {
      this.isOfflineDeliveryEnd = true;
      this.trigger('offline_delivery_end_from_bridge');
    };
    if (LEGACY) {
      // July 2025: the refresh went through Cmd, and logout was a plain Cmd event.
      CmdImpl.prototype.refreshQR = function () {
        if (internal.transport) internal.transport.send({ t: 'refresh_qr' });
      };
      CmdImpl.prototype.logout = function (reason) { this.trigger('logout', reason); };
      delete CmdImpl.prototype.onLogoutFromBridge;
    }
    l.CmdImpl = CmdImpl;
    l.Cmd = new CmdImpl();
  });

  if (!LEGACY) {
    __d('WAWebBackendEventBus', ['WAWebEventEmitter', 'WAWebCmd'], function (t, require, r, o, a, i, l) {
      var EventEmitter = require('WAWebEventEmitter').EventEmitter;
      function Bus() { this.socketState = 'UNLAUNCHED'; this.isOfflineDeliveryEnd = false; this.isMainStreamReadyMd = false; }
      Bus.prototype = Object.create(EventEmitter.prototype);
      Bus.prototype.constructor = Bus;
      function pair(trigger, on, event, after) {
        Bus.prototype[trigger] = function (x) {
          this.trigger(event, x);
          if (after) after.call(this, x);
        };
        Bus.prototype[on] = function (cb) { return this.on(event, cb); };
      }
      var Cmd = function () { return require('WAWebCmd').Cmd; };
      pair('triggerSetSocketState', 'onSetSocketState', 'set_socket_state');
      pair('triggerRefreshQR', 'onRefreshQR', 'refresh_qr');
      pair('triggerReconnectSocket', 'onReconnectSocket', 'reconnect_socket');
      pair('triggerStartingLogout', 'onStartingLogout', 'starting_logout', function () { Cmd().onStartingLogoutFromBridge(); });
      pair('triggerLogout', 'onLogout', 'logout', function () { Cmd().onLogoutFromBridge(); });
      pair('triggerOfflineDeliveryEnd', 'onOfflineDeliveryEnd', 'offline_delivery_end', function () {
        this.isOfflineDeliveryEnd = true;
        Cmd().onOfflineDeliveryEndFromBridge();
      });
      pair('triggerMainStreamModeReady', 'onMainStreamModeReady', 'main_stream_mode_ready', function () { this.isMainStreamReadyMd = true; });
      pair('triggerCriticalSyncDone', 'onCriticalSyncDone', 'on_critical_sync_done');
      // The state mirror is set before listeners run, so they read the new one.
      var setState = Bus.prototype.triggerSetSocketState;
      Bus.prototype.triggerSetSocketState = function (s) { this.socketState = s; setState.call(this, s); };
      l.BackendEventBus = new Bus();
    });
  }

  // --- session and connection models -------------------------------------------------------
  __d('WAWebSocketModel', ['WAWebBaseModel', 'WAWebSimInternal'], function (t, require, r, o, a, i, l) {
    var B = require('WAWebBaseModel');
    var internal = require('WAWebSimInternal');
    // Every Socket attribute is a session attribute: serialize() gives {}.
    var SocketModel = B.defineModel('Socket', {
      id: B.session('socket'),
      state: B.session('UNLAUNCHED'),
      stream: B.session('DISCONNECTED'),
      hasSynced: B.session(false),
    }, {
      logout: function (reason) { return internal.onLogout ? internal.onLogout(reason || 'user_initiated') : Promise.resolve(); },
      reconnect: function () { if (internal.onReconnect) internal.onReconnect(); },
      takeover: function () {
        if (this.state !== 'CONFLICT') throw new Error('Takeover called without conflict!');
        if (internal.transport) internal.transport.send({ t: 'takeover' });
      },
      poke: function () {},
    });
    l.SocketModel = SocketModel;
    l.Socket = new SocketModel();
    if (!LEGACY) {
      // The state comes from the backend bus (WAWebSocketModel listens to onSetSocketState).
      require('WAWebBackendEventBus').BackendEventBus.onSetSocketState(function (s) { l.Socket.set('state', s); });
    }
  });

  __d('WAWebConnModel', ['WAWebBaseModel'], function (t, require, r, o, a, i, l) {
    var B = require('WAWebBaseModel');
    var ConnModel = B.defineModel('Conn', {
      id: B.prop('conn'),
      ref: B.prop(undefined),
      refTTL: B.prop(undefined),
      refId: B.prop(undefined),
      // Declared but not populated by multi-device builds (docs/wa-surface.md §2).
      wid: B.prop(undefined),
      connected: B.prop(false),
      platform: B.prop(undefined),
      phone: B.prop(undefined),
      pushname: B.prop(undefined),
      refExpiry: B.derived(function () { return this.refTTL ? Date.now() + this.refTTL : undefined; }, ['ref', 'refTTL']),
    });
    l.ConnModel = ConnModel;
    l.Conn = new ConnModel();
  });

  // --- QR key material ---------------------------------------------------------------------
  __d('WAWebUserPrefsInfoStore', ['WAWebSimInternal', 'WABase64'], function (t, require, r, o, a, i, l) {
    var internal = require('WAWebSimInternal');
    var B = require('WABase64');
    l.waNoiseInfo = {
      get: function () {
        return Promise.resolve(internal.keys).then(function (k) {
          if (!k) return null;
          return { staticKeyPair: { pubKey: B.decodeB64(k.noise), privKey: B.decodeB64(k.noisePriv) } };
        });
      },
    };
  });

  __d('WAWebSignalStoreApi', ['WAWebSimInternal', 'WABase64'], function (t, require, r, o, a, i, l) {
    var internal = require('WAWebSimInternal');
    var B = require('WABase64');
    l.waSignalStore = {
      getRegistrationInfo: function () {
        return Promise.resolve(internal.keys).then(function (k) {
          if (!k) return null;
          return {
            registrationId: k.registrationId || 1,
            identityKeyPair: { pubKey: B.decodeB64(k.identity), privKey: B.decodeB64(k.identityPriv) },
          };
        });
      },
    };
  });

  __d('WAWebAdvSignatureApi', ['WAWebSimInternal'], function (t, require, r, o, a, i, l) {
    var internal = require('WAWebSimInternal');
    l.getADVSecretKey = function () {
      return Promise.resolve(internal.keys).then(function (k) {
        if (!k || !k.adv) throw new Error('secretKey is null or undefined');
        return k.adv;
      });
    };
  });

  __d('WAWebUserPrefsMultiDevice', ['WAWebEventEmitter', 'WAWebAdvSignatureApi'], function (t, require, r, o, a, i, l) {
    var EventEmitter = require('WAWebEventEmitter').EventEmitter;
    // Fires `change` whenever the ADV secret is replaced (with every new batch of QR refs).
    l.advSecretEventEmitter = new EventEmitter();
    l.getADVSecretKey = function () { return require('WAWebAdvSignatureApi').getADVSecretKey(); };
  });

  __d('WAWebCompanionRegClientUtils', [], function (t, n, r, o, a, i, l) {
    // Decimal string of the companion platform: Chrome is "1" (docs/wa-surface.md §2).
    l.DEVICE_PLATFORM = '1';
  });

  __d('WAWebOfflineHandler', [], function (t, n, r, o, a, i, l) {
    var progress = 0;
    l.OfflineMessageHandler = {
      getOfflineDeliveryProgress: function () { return progress; },
      getOfflineMessageCount: function () { return 0; },
      getHasMessagesToDownload: function () { return false; },
    };
    // The simulator's own bookkeeping hook (not a WhatsApp member; non-enumerable).
    Object.defineProperty(l, '__simSetProgress', { value: function (p) { progress = p; } });
  });

  // --- linking: pairing code and passkey ("Shortcake") ------------------------------------------
  __d('WAWebAltDeviceLinkingApi', ['WAWebSimInternal', 'WAWebSocketModel'], function (t, require, r, o, a, i, l) {
    var internal = require('WAWebSimInternal');
    l.setPairingType = function (ty) {
      if (ty !== 'ALT_DEVICE_LINKING' && ty !== 'QR_CODE') throw new Error('unknown pairing type ' + ty);
      internal.pairingType = ty;
    };
    l.getPairingType = function () { return internal.pairingType; };
    l.initializeAltDeviceLinking = function () { internal.pairingType = 'ALT_DEVICE_LINKING'; return Promise.resolve(); };
    l.initializeQRLinking = function () { internal.pairingType = 'QR_CODE'; return Promise.resolve(); };
    l.startAltLinkingFlow = function (phone, showNotification) {
      void showNotification;
      var Socket = require('WAWebSocketModel').Socket;
      if (internal.pairingType !== 'ALT_DEVICE_LINKING') return Promise.reject(new Error('pairing type is not ALT_DEVICE_LINKING'));
      if (Socket.state !== 'UNPAIRED' && Socket.state !== 'UNPAIRED_IDLE') return Promise.reject(new Error('cannot pair in state ' + Socket.state));
      if (!internal.transport || !internal.transport.isOpen()) return Promise.reject(new Error('socket is not connected'));
      var req = internal.nextReq++;
      return new Promise(function (resolve, reject) {
        internal.pending.set(req, { resolve: resolve, reject: reject });
        internal.transport.send({ t: 'pair_code_request', req: req, phone: String(phone).replace(/\D/g, '') });
      });
    };
  });

  // The frontend side of the worker bridge: WhatsApp's backend tells the UI things through
  // frontendFireAndForget(name, payload). Here the simulator's app calls it (through the module,
  // at call time, so a wrapper sees every call) and it notifies listeners of `WAWebSimFrontend`.
  __d('WAWebBackendApi', ['WAWebEventEmitter'], function (t, require, r, o, a, i, l) {
    var EventEmitter = require('WAWebEventEmitter').EventEmitter;
    var bus = new EventEmitter();
    l.frontendFireAndForget = function (name, payload) { bus.trigger(name, payload); };
    l.frontendSendAndReceive = function (name, payload) { bus.trigger(name, payload); return Promise.resolve(); };
    Object.defineProperty(l, '__simFrontendBus', { value: bus });
  });

  __d('WAWebShortcakeLinkingApi', ['WAWebSimInternal'], function (t, require, r, o, a, i, l) {
    var internal = require('WAWebSimInternal');
    var STAGE = {
      NotStarted: 'NotStarted',
      Initialized: 'Initialized',
      WaitingForPrimaryIdentity: 'WaitingForPrimaryIdentity',
      WaitingForVerificationCodeConfirmation: 'WaitingForVerificationCodeConfirmation',
      WaitingForPairingCompletion: 'WaitingForPairingCompletion',
    };
    var stage = STAGE.NotStarted;
    var code = null;
    l.ShortcakeLinkingStage = STAGE;
    l.getShortcakeLinkingStage = function () { return stage; };
    l.getVerificationCode = function () { return code; };
    l.initializeShortcakeLinking = function () { stage = STAGE.Initialized; code = null; };
    l.markPrologueSent = function () { stage = STAGE.WaitingForPrimaryIdentity; };
    l.handlePrimaryEphemeralIdentity = function (verificationCode) {
      code = verificationCode;
      stage = STAGE.WaitingForVerificationCodeConfirmation;
    };
    l.confirmVerificationCode = function () {
      stage = STAGE.WaitingForPairingCompletion;
      if (internal.transport) internal.transport.send({ t: 'passkey_confirm' });
    };
    l.cancelShortcakeLinking = function () { stage = STAGE.NotStarted; code = null; };
  });

  // Post-login integrity checkpoint: a blocking modal only a passkey (or logout) leaves.
  __d('WAWebIntegrityPasskeyCheckpointUtils', [], function (t, n, r, o, a, i, l) {
    l.openPasskeyCheckpoint = function (challenge) {
      if (document.getElementById('passkey-checkpoint')) return;
      var el = document.createElement('div');
      el.id = 'passkey-checkpoint';
      el.setAttribute('role', 'dialog');
      el.setAttribute('aria-modal', 'true');
      el.setAttribute('data-testid', 'passkey-checkpoint');
      el.setAttribute('data-challenge', String(challenge || ''));
      el.style.cssText = 'position:fixed;inset:0;background:rgba(0,0,0,.6);color:#fff;padding:3em';
      el.textContent = 'Verify it\u2019s you: use your passkey to continue.';
      document.body.appendChild(el);
    };
    Object.defineProperty(l, '__simClose', { value: function () {
      var el = document.getElementById('passkey-checkpoint');
      if (el) el.remove();
    } });
  });

  // --- contacts and LIDs ----------------------------------------------------------------------
  __d('WAWebApiContact', ['WAWebSimInternal', 'WAWebWidFactory'], function (t, require, r, o, a, i, l) {
    var internal = require('WAWebSimInternal');
    var WF = require('WAWebWidFactory');
    l.getCurrentLid = function (pn) {
      var s = internal.lidByPn.get(WF.createWid(pn)._serialized);
      return s ? WF.createWid(s) : null;
    };
    l.getLatestLid = l.getCurrentLid;
    l.getPhoneNumber = function (lid) {
      var s = internal.pnByLid.get(WF.createWid(lid)._serialized);
      return s ? WF.createWid(s) : null;
    };
    l.getAlternateUserWid = function (w) {
      var wid = WF.createWid(w);
      return wid.isLid() ? l.getPhoneNumber(wid) : l.getCurrentLid(wid);
    };
    l.warmUpAllLidPnMappings = function () { return Promise.resolve(); };
    // The simulator's write path (WhatsApp: WAWebDBCreateLidPnMappings); not enumerable.
    Object.defineProperty(l, '__simLearn', { value: function (pn, lid) {
      internal.lidByPn.set(pn, lid);
      internal.pnByLid.set(lid, pn);
    } });
  });

  // The write path of the PN↔LID mapping: what WAWebQueryExistsJob calls with every USync
  // answer that carries both ids (learningSource "usync").
  __d('WAWebDBCreateLidPnMappings', ['WAWebApiContact', 'WAWebWidFactory'], function (t, require, r, o, a, i, l) {
    var WF = require('WAWebWidFactory');
    l.createLidPnMappings = function (args) {
      (args && args.mappings ? args.mappings : []).forEach(function (m) {
        if (m && m.pn && m.lid) require('WAWebApiContact').__simLearn(WF.createWid(m.pn)._serialized, WF.createWid(m.lid)._serialized);
      });
      return Promise.resolve();
    };
  });

  // Server errors as WhatsApp's backend raises them: `new ServerStatusCodeError(status, text)`
  // with `status`, `statusCode`, `message` and name "ServerStatusCodeError".
  __d('WAWebBackendErrors', [], function (t, n, r, o, a, i, l) {
    function ServerStatusCodeError(status, text) {
      var e = new Error(text != null ? text : '');
      Object.setPrototypeOf(e, ServerStatusCodeError.prototype);
      e.name = 'ServerStatusCodeError';
      e.status = status;
      e.statusCode = status;
      return e;
    }
    ServerStatusCodeError.prototype = Object.create(Error.prototype);
    ServerStatusCodeError.prototype.constructor = ServerStatusCodeError;
    l.ServerStatusCodeError = ServerStatusCodeError;
  });

  // "Is this number on WhatsApp?": one USync query to the server. Resolves null when no
  // account has the number, else {wid, biz, bizInfo, isUsernameSearch}; a server error rejects
  // with ServerStatusCodeError. The answer's PN↔LID pair is stored, as WhatsApp does.
  __d('WAWebQueryExistsJob', ['WAWebSimInternal', 'WAWebWidFactory', 'WAWebDBCreateLidPnMappings', 'WAWebBackendErrors'], function (t, require, r, o, a, i, l) {
    var internal = require('WAWebSimInternal');
    var WF = require('WAWebWidFactory');
    function queryExist(q, origin) {
      void origin;
      if (!internal.transport || !internal.transport.isOpen()) return Promise.reject(new Error('socket is not connected'));
      var req = internal.nextReq++;
      var msg = { t: 'query_exists', req: req };
      if (q.type === 'lid') msg.lid = WF.createWid(q.wid)._serialized;
      else msg.phone = String(q.phone);
      return new Promise(function (resolve, reject) {
        internal.pending.set(req, { resolve: resolve, reject: reject });
        internal.transport.send(msg);
      }).then(function (found) {
        if (!found) return null;
        var pn = WF.createWid(found.pn);
        var lid = WF.createWid(found.lid);
        return require('WAWebDBCreateLidPnMappings')
          .createLidPnMappings({ mappings: [{ pn: pn, lid: lid }], flushImmediately: true, learningSource: 'usync' })
          .then(function () {
            return { wid: q.type === 'lid' ? lid : pn, biz: false, bizInfo: undefined, isUsernameSearch: q.type === 'phone' ? false : undefined };
          });
      });
    }
    l.queryExist = queryExist;
    l.queryWidExists = function (wid, origin) {
      var w = WF.createWid(wid);
      return w.isLid() ? queryExist({ type: 'lid', wid: w }, origin) : queryExist({ type: 'phone', phone: '+' + w.toString() }, origin);
    };
    l.queryPhoneExists = function (phone, origin) { return queryExist({ type: 'phone', phone: phone }, origin); };
  });
})();
