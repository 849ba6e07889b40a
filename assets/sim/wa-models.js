/*
 * wafleet simulator, chunk 2 of 3: models, collections and the WAWeb* modules.
 *
 * The names and shapes follow what whatsapp-web.js calls (docs/simulator.md §1). The models are
 * Backbone-like: attributes are also properties, changes fire `change:<attr>` with
 * (model, value) and bubble to the collections holding the model.
 */
(function () {
  'use strict';
  var __d = window.__d;

  // --- internal: shared between this chunk and the app chunk --------------------------------
  __d('WAWebSimInternal', [], function () {
    return {
      // Set by the app: {send(obj) -> bool, isOpen() -> bool}.
      transport: null,
      // Set by the app: a promise of {noise, identity, adv, noisePriv, identityPriv} (base64).
      keys: null,
      // Pending requests by correlation id.
      pending: new Map(),
      nextReq: 1,
      // Outbound messages not yet acked by the server, by serialized id.
      unsent: new Map(),
      pairingType: 'QR_CODE',
    };
  });

  __d('WABase64', [], function () {
    function encodeB64(buf) {
      var bytes = buf instanceof Uint8Array ? buf : new Uint8Array(buf);
      var s = '';
      for (var i = 0; i < bytes.length; i += 0x8000) {
        s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
      }
      return btoa(s);
    }
    function decodeB64(s) {
      var bin = atob(s);
      var out = new Uint8Array(bin.length);
      for (var i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
      return out.buffer;
    }
    return { encodeB64: encodeB64, decodeB64: decodeB64 };
  });

  // --- events, models, collections -------------------------------------------------------------
  __d('WAWebSimEvents', [], function () {
    function add(obj, names, cb, ctx, once) {
      if (typeof cb !== 'function') return obj;
      obj._events = obj._events || Object.create(null);
      String(names).split(/\s+/).forEach(function (n) {
        if (!n) return;
        (obj._events[n] = obj._events[n] || []).push({ cb: cb, ctx: ctx, once: once });
      });
      return obj;
    }
    var Events = {
      on: function (names, cb, ctx) { return add(this, names, cb, ctx, false); },
      once: function (names, cb, ctx) { return add(this, names, cb, ctx, true); },
      off: function (names, cb) {
        if (!this._events) return this;
        var list = names ? String(names).split(/\s+/) : Object.keys(this._events);
        var self = this;
        list.forEach(function (n) {
          var hs = self._events[n];
          if (!hs) return;
          self._events[n] = cb ? hs.filter(function (h) { return h.cb !== cb; }) : [];
        });
        return this;
      },
      trigger: function (name) {
        var args = Array.prototype.slice.call(arguments, 1);
        var hs = this._events && this._events[name];
        if (hs && hs.length) {
          var self = this;
          hs.slice().forEach(function (h) {
            if (h.once) self.off(name, h.cb);
            try {
              h.cb.apply(h.ctx || self, args);
            } catch (e) {
              // A failing listener must not break the app (or the other listeners).
              console.error('listener of ' + name + ' failed', e);
            }
          });
        }
        return this;
      },
    };
    Events.listenTo = function (other, names, cb) { other.on(names, cb, this); return this; };
    Events.stopListening = function (other, names, cb) { if (other) other.off(names, cb); return this; };
    return Events;
  });

  __d('WAWebSimModel', ['WAWebSimEvents'], function (t, require) {
    var Events = require('WAWebSimEvents');
    var RESERVED = { attributes: 1, _events: 1, _collections: 1 };

    function Model(attrs) {
      Object.defineProperty(this, 'attributes', { value: {}, writable: true });
      Object.defineProperty(this, '_collections', { value: [], writable: true });
      this.set(attrs || {}, { silent: true });
    }
    Object.assign(Model.prototype, Events);
    Model.prototype.get = function (k) { return this.attributes[k]; };
    Model.prototype.set = function (obj, opts) {
      var changed = [];
      for (var k in obj) {
        if (!Object.prototype.hasOwnProperty.call(obj, k) || RESERVED[k]) continue;
        // Methods (get, set, on, serialize…) keep their names; other attributes become properties.
        if (!Object.prototype.hasOwnProperty.call(this, k) && !(k in this)) defineAttr(this, k);
        if (this.attributes[k] !== obj[k]) {
          this.attributes[k] = obj[k];
          changed.push(k);
        }
      }
      if (!(opts && opts.silent)) {
        var self = this;
        changed.forEach(function (k) { self.trigger('change:' + k, self, self.attributes[k]); });
        if (changed.length) this.trigger('change', this);
      }
      return this;
    };
    Model.prototype.trigger = function () {
      Events.trigger.apply(this, arguments);
      var args = arguments;
      // Bubble to collections, as Backbone does, so Msg.on('change:ack') sees every message.
      this._collections.forEach(function (c) { Events.trigger.apply(c, args); });
      return this;
    };
    Model.prototype.serialize = function () {
      return JSON.parse(JSON.stringify(this.attributes));
    };
    Model.prototype.toJSON = function () { return this.serialize(); };
    function defineAttr(model, k) {
      Object.defineProperty(model, k, {
        enumerable: true,
        configurable: true,
        get: function () { return this.attributes[k]; },
        set: function (v) { var o = {}; o[k] = v; this.set(o); },
      });
    }

    function idOf(x) {
      if (x == null) return null;
      if (typeof x === 'string') return x;
      if (typeof x._serialized === 'string') return x._serialized;
      if (x.attributes && x.attributes.id != null) return idOf(x.attributes.id);
      if (x.id != null && x.id !== x) return idOf(x.id);
      return String(x);
    }

    function Collection(ModelClass) {
      this.model = ModelClass || Model;
      this.models = [];
      this._byId = new Map();
    }
    Object.assign(Collection.prototype, Events);
    Object.defineProperty(Collection.prototype, 'length', {
      get: function () { return this.models.length; },
    });
    Collection.prototype.get = function (x) { return this._byId.get(idOf(x)); };
    Collection.prototype.add = function (items, opts) {
      var single = !Array.isArray(items);
      var list = single ? [items] : items;
      var out = [];
      for (var i = 0; i < list.length; i++) {
        var item = list[i];
        var m = item instanceof Model ? item : new this.model(item);
        var id = idOf(m.get('id'));
        var existing = id != null ? this._byId.get(id) : undefined;
        if (existing) {
          if (!(item instanceof Model)) existing.set(item);
          out.push(existing);
          continue;
        }
        this.models.push(m);
        if (id != null) this._byId.set(id, m);
        m._collections.push(this);
        if (!(opts && opts.silent)) Events.trigger.call(this, 'add', m, this, opts || {});
        out.push(m);
      }
      return single ? out[0] : out;
    };
    Collection.prototype.remove = function (x) {
      var m = x instanceof Model ? x : this.get(x);
      if (!m) return undefined;
      this.models = this.models.filter(function (o) { return o !== m; });
      this._byId.delete(idOf(m.get('id')));
      m._collections = m._collections.filter(function (c) { return c !== this; }, this);
      Events.trigger.call(this, 'remove', m, this);
      return m;
    };
    Collection.prototype.getModelsArray = function () { return this.models.slice(); };
    Collection.prototype.toArray = Collection.prototype.getModelsArray;
    Collection.prototype.forEach = function (f, c) { return this.models.slice().forEach(f, c); };
    Collection.prototype.filter = function (f, c) { return this.models.filter(f, c); };
    Collection.prototype.map = function (f, c) { return this.models.map(f, c); };
    Collection.prototype.where = function (attrs) {
      return this.models.filter(function (m) {
        for (var k in attrs) if (m.get(k) !== attrs[k]) return false;
        return true;
      });
    };
    Collection.prototype.serialize = function () {
      return this.models.map(function (m) { return m.serialize(); });
    };

    return { Model: Model, Collection: Collection, idOf: idOf };
  });

  // --- ids -------------------------------------------------------------------------------------
  __d('WAWebWidFactory', [], function () {
    var RE = /^([0-9A-Za-z.:_-]{1,64})@(c\.us|g\.us|lid|s\.whatsapp\.net|broadcast|newsletter)$/;
    function Wid(s) {
      var m = RE.exec(String(s));
      if (!m) throw new Error('invalid wid: ' + s);
      this.user = m[1];
      this.server = m[2] === 's.whatsapp.net' ? 'c.us' : m[2];
      this._serialized = this.user + '@' + this.server;
    }
    Wid.prototype.toString = function () { return this._serialized; };
    Wid.prototype.toJSON = function () { return this._serialized; };
    Wid.prototype.equals = function (o) {
      return o != null && (o._serialized || String(o)) === this._serialized;
    };
    Wid.prototype.isUser = function () { return this.server === 'c.us' || this.server === 'lid'; };
    Wid.prototype.isGroup = function () { return this.server === 'g.us'; };
    Wid.prototype.isLid = function () { return this.server === 'lid'; };
    function createWid(s) {
      if (s instanceof Wid) return s;
      if (s && typeof s._serialized === 'string') return new Wid(s._serialized);
      return new Wid(s);
    }
    function createUserWid(user, server) { return new Wid(String(user) + '@' + (server || 'c.us')); }
    function isWid(x) { return x instanceof Wid; }
    return { Wid: Wid, createWid: createWid, createUserWid: createUserWid, isWid: isWid };
  });

  __d('WAWebMsgKey', ['WAWebWidFactory'], function (t, require) {
    var WF = require('WAWebWidFactory');
    var ID_RE = /^[A-Za-z0-9]{1,64}$/;
    function MsgKey(o) {
      if (!o || typeof o !== 'object') throw new Error('MsgKey: expected an object');
      var fromMe, remote;
      if ('fromMe' in o) {
        fromMe = !!o.fromMe;
        remote = o.remote;
      } else if (o.selfDir === 'out' || o.selfDir === 'in') {
        fromMe = o.selfDir === 'out';
        remote = fromMe ? o.to : o.from;
      } else {
        throw new Error('MsgKey: need fromMe/remote or from/to/selfDir');
      }
      if (!ID_RE.test(String(o.id))) throw new Error('MsgKey: bad id ' + o.id);
      this.fromMe = fromMe;
      this.remote = WF.createWid(remote);
      this.id = String(o.id);
      this.participant = o.participant ? WF.createWid(o.participant) : undefined;
      this._serialized = String(fromMe) + '_' + this.remote._serialized + '_' + this.id +
        (this.participant ? '_' + this.participant._serialized : '');
    }
    MsgKey.prototype.toString = function () { return this._serialized; };
    MsgKey.prototype.toJSON = function () {
      var o = { fromMe: this.fromMe, remote: this.remote._serialized, id: this.id, _serialized: this._serialized };
      if (this.participant) o.participant = this.participant._serialized;
      return o;
    };
    MsgKey.prototype.equals = function (o) {
      return o != null && (o._serialized || String(o)) === this._serialized;
    };
    MsgKey.newId = function () {
      var b = new Uint8Array(8);
      crypto.getRandomValues(b);
      var hex = '';
      for (var i = 0; i < b.length; i++) hex += (b[i] < 16 ? '0' : '') + b[i].toString(16);
      return Promise.resolve('3EB0' + hex.toUpperCase());
    };
    MsgKey.newId_DEPRECATED = function () {
      return '3EB0' + Math.random().toString(16).slice(2, 18).toUpperCase();
    };
    MsgKey.fromString = function (s) {
      var m = /^(true|false)_([^_]+)_([A-Za-z0-9]{1,64})(?:_(.+))?$/.exec(String(s));
      if (!m) throw new Error('MsgKey: cannot parse ' + s);
      return new MsgKey({ fromMe: m[1] === 'true', remote: m[2], id: m[3], participant: m[4] });
    };
    MsgKey.from = MsgKey.fromString;
    MsgKey.isMsgKey = function (x) { return x instanceof MsgKey; };
    return MsgKey;
  });

  // --- connection state --------------------------------------------------------------------------
  __d('WAWebSocketConstants', [], function () {
    var STATE = {};
    ['OPENING', 'PAIRING', 'UNPAIRED', 'UNPAIRED_IDLE', 'CONNECTED', 'TIMEOUT', 'CONFLICT',
      'UNLAUNCHED', 'PROXYBLOCK', 'TOS_BLOCK', 'SMB_TOS_BLOCK', 'DEPRECATED_VERSION']
      .forEach(function (s) { STATE[s] = s; });
    return { SOCKET_STATE: STATE, SOCKET_STREAM: { DISCONNECTED: 'DISCONNECTED', CONNECTED: 'CONNECTED', RESUMING: 'RESUMING', SYNCING: 'SYNCING' } };
  });

  __d('WAWebSocketModel', ['WAWebSimModel', 'WAWebSimInternal'], function (t, require) {
    var M = require('WAWebSimModel');
    var internal = require('WAWebSimInternal');
    var Socket = new M.Model({ id: 'socket', state: 'UNLAUNCHED', stream: 'DISCONNECTED', hasSynced: false });
    Socket.logout = function () {
      if (internal.onLogout) return internal.onLogout();
      return Promise.resolve();
    };
    Socket.takeover = function () {
      if (internal.transport) internal.transport.send({ t: 'takeover' });
    };
    Socket.poke = function () {};
    return { Socket: Socket, SocketModel: Socket };
  });

  __d('WAWebConnModel', ['WAWebSimModel'], function (t, require) {
    var M = require('WAWebSimModel');
    var Conn = new M.Model({ id: 'conn', ref: null, wid: null, me: null, platform: null, pushname: null, battery: 100, plugged: true });
    Conn.serialize = function () {
      return {
        ref: this.ref,
        wid: this.wid ? this.wid._serialized : null,
        me: this.me ? this.me._serialized : null,
        platform: this.platform,
        pushname: this.pushname,
        battery: this.battery,
        plugged: this.plugged,
      };
    };
    return { Conn: Conn };
  });

  __d('WAWebCmd', ['WAWebSimEvents', 'WAWebSimInternal'], function (t, require) {
    var Events = require('WAWebSimEvents');
    var internal = require('WAWebSimInternal');
    var Cmd = Object.assign({}, Events);
    Cmd.refreshQR = function () {
      if (internal.transport) internal.transport.send({ t: 'refresh_qr' });
    };
    return { Cmd: Cmd, CmdImpl: Cmd };
  });

  __d('WAWebUserPrefsMeUser', ['WAWebConnModel'], function (t, require) {
    var Conn = require('WAWebConnModel').Conn;
    return {
      getMaybeMePnUser: function () { return Conn.wid || null; },
      getMaybeMeLidUser: function () { return null; },
      getMeUser: function () { return Conn.wid || null; },
      getMaybeMeUser: function () { return Conn.wid || null; },
    };
  });

  // --- key material (the QR string's parts) -----------------------------------------------------
  __d('WAWebUserPrefsInfoStore', ['WAWebSimInternal', 'WABase64'], function (t, require) {
    var internal = require('WAWebSimInternal');
    var B = require('WABase64');
    return {
      waNoiseInfo: {
        get: function () {
          return Promise.resolve(internal.keys).then(function (k) {
            if (!k) return null;
            return { staticKeyPair: { pubKey: B.decodeB64(k.noise), privKey: B.decodeB64(k.noisePriv) } };
          });
        },
      },
    };
  });

  __d('WAWebSignalStoreApi', ['WAWebSimInternal', 'WABase64'], function (t, require) {
    var internal = require('WAWebSimInternal');
    var B = require('WABase64');
    return {
      waSignalStore: {
        getRegistrationInfo: function () {
          return Promise.resolve(internal.keys).then(function (k) {
            if (!k) return null;
            return {
              registrationId: k.registrationId || 1,
              identityKeyPair: { pubKey: B.decodeB64(k.identity), privKey: B.decodeB64(k.identityPriv) },
            };
          });
        },
      },
    };
  });

  __d('WAWebAdvSignatureApi', ['WAWebSimInternal'], function (t, require) {
    var internal = require('WAWebSimInternal');
    return {
      getADVSecretKey: function () {
        return Promise.resolve(internal.keys).then(function (k) {
          if (!k) throw new Error('secretKey is null or undefined');
          return k.adv;
        });
      },
    };
  });

  __d('WAWebCompanionRegClientUtils', [], function () {
    return { DEVICE_PLATFORM: 'WEB' };
  });

  __d('WAWebOfflineHandler', [], function () {
    var progress = 0;
    return {
      OfflineMessageHandler: {
        getOfflineDeliveryProgress: function () { return progress; },
        getOfflineMessageCount: function () { return 0; },
        // The app's own setter (the simulator's stand-in for the offline handler's bookkeeping).
        setProgress: function (p) { progress = p; },
      },
    };
  });

  __d('WAWebUserPrefsMultiDevice', ['WAWebSimEvents'], function (t, require) {
    var Events = require('WAWebSimEvents');
    // Fires `change` whenever the ADV secret is replaced (with every new batch of QR refs).
    return { advSecretEventEmitter: Object.assign({}, Events) };
  });

  // --- pairing code -------------------------------------------------------------------------------
  __d('WAWebAltDeviceLinkingApi', ['WAWebSimInternal', 'WAWebSocketModel'], function (t, require) {
    var internal = require('WAWebSimInternal');
    var Socket = require('WAWebSocketModel').Socket;
    return {
      setPairingType: function (t) {
        if (t !== 'ALT_DEVICE_LINKING' && t !== 'QR_CODE') throw new Error('unknown pairing type ' + t);
        internal.pairingType = t;
      },
      getPairingType: function () { return internal.pairingType; },
      initializeAltDeviceLinking: function () { internal.pairingType = 'ALT_DEVICE_LINKING'; return Promise.resolve(); },
      initializeQRLinking: function () { internal.pairingType = 'QR_CODE'; return Promise.resolve(); },
      startAltLinkingFlow: function (phone, showNotification) {
        void showNotification;
        if (internal.pairingType !== 'ALT_DEVICE_LINKING') {
          return Promise.reject(new Error('pairing type is not ALT_DEVICE_LINKING'));
        }
        if (Socket.state !== 'UNPAIRED' && Socket.state !== 'UNPAIRED_IDLE') {
          return Promise.reject(new Error('cannot pair in state ' + Socket.state));
        }
        var digits = String(phone).replace(/\D/g, '');
        if (!internal.transport || !internal.transport.isOpen()) {
          return Promise.reject(new Error('socket is not connected'));
        }
        var req = internal.nextReq++;
        return new Promise(function (resolve, reject) {
          internal.pending.set(req, { resolve: resolve, reject: reject });
          internal.transport.send({ t: 'pair_code_request', req: req, phone: digits });
        });
      },
    };
  });

  // --- collections ------------------------------------------------------------------------------
  __d('WAWebCollections', ['WAWebSimModel', 'WAWebWidFactory'], function (t, require) {
    var M = require('WAWebSimModel');
    var WF = require('WAWebWidFactory');

    function MsgModel(attrs) { M.Model.call(this, attrs); }
    MsgModel.prototype = Object.create(M.Model.prototype);
    MsgModel.prototype.constructor = MsgModel;

    function ChatModel(attrs) { M.Model.call(this, attrs); }
    ChatModel.prototype = Object.create(M.Model.prototype);
    ChatModel.prototype.constructor = ChatModel;

    function ContactModel(attrs) { M.Model.call(this, attrs); }
    ContactModel.prototype = Object.create(M.Model.prototype);
    ContactModel.prototype.constructor = ContactModel;

    var Msg = new M.Collection(MsgModel);
    var Chat = new M.Collection(ChatModel);
    var Contact = new M.Collection(ContactModel);

    function ensureContact(wid) {
      return Contact.get(wid) || Contact.add({ id: wid, name: undefined, pushname: undefined, isMyContact: false, isUser: wid.isUser(), isGroup: wid.isGroup() });
    }
    function ensureChat(wid) {
      wid = WF.createWid(wid);
      var chat = Chat.get(wid);
      if (chat) return { chat: chat, created: false };
      if (wid.isUser()) ensureContact(wid);
      chat = Chat.add({ id: wid, unreadCount: 0, archive: false, isGroup: wid.isGroup(), t: Math.floor(Date.now() / 1000) });
      return { chat: chat, created: true };
    }
    // Backbone's find(fn) for a function, WhatsApp's async lookup for a wid.
    Chat.find = function (x) {
      if (typeof x === 'function') return this.models.find(x);
      try {
        return Promise.resolve(ensureChat(x).chat);
      } catch (e) {
        return Promise.reject(e);
      }
    };
    Contact.find = function (x) {
      if (typeof x === 'function') return this.models.find(x);
      try {
        return Promise.resolve(ensureContact(WF.createWid(x)));
      } catch (e) {
        return Promise.reject(e);
      }
    };
    Object.defineProperty(Chat, '_ensure', { value: ensureChat });
    return { Msg: Msg, Chat: Chat, Contact: Contact, MsgModel: MsgModel, ChatModel: ChatModel, ContactModel: ContactModel };
  });

  __d('WAWebFindChatAction', ['WAWebCollections'], function (t, require) {
    var C = require('WAWebCollections');
    return {
      findOrCreateLatestChat: function (wid) {
        try {
          return Promise.resolve(C.Chat._ensure(wid));
        } catch (e) {
          return Promise.reject(e);
        }
      },
      findChat: function (wid) { return C.Chat.find(wid); },
    };
  });

  // --- sending ----------------------------------------------------------------------------------
  __d('WAWebSendMsgChatAction', ['WAWebSimInternal', 'WAWebCollections', 'WAWebMsgKey', 'WAWebWidFactory', 'WAWebConnModel'], function (t, require) {
    var internal = require('WAWebSimInternal');
    var C = require('WAWebCollections');
    var MsgKey = require('WAWebMsgKey');
    var WF = require('WAWebWidFactory');
    var Conn = require('WAWebConnModel').Conn;
    var MEDIA = { image: 1, video: 1, audio: 1, ptt: 1, document: 1, sticker: 1 };

    function prepare(chat, data) {
      if (!chat || !chat.id) throw new Error('addAndSendMsgToChat: no chat');
      if (!data || typeof data !== 'object') throw new Error('addAndSendMsgToChat: no message');
      if (!Conn.wid) throw new Error('addAndSendMsgToChat: not logged in');
      var to = WF.createWid(data.to || chat.id);
      var key = data.id instanceof MsgKey ? data.id
        : (data.id && typeof data.id === 'object') ? new MsgKey(data.id)
          : MsgKey.fromString(data.id);
      if (!key.fromMe) throw new Error('addAndSendMsgToChat: id must be fromMe');
      var type = data.type || 'chat';
      if (type !== 'chat' && !MEDIA[type]) throw new Error('addAndSendMsgToChat: unsupported type ' + type);
      var wire = { id: key._serialized, to: to._serialized, type: type };
      var attrs = {};
      for (var k in data) if (Object.prototype.hasOwnProperty.call(data, k) && k !== 'data') attrs[k] = data[k];
      attrs.id = key;
      attrs.to = to;
      attrs.from = data.from ? WF.createWid(data.from) : Conn.wid;
      attrs.ack = 0;
      attrs.self = 'out';
      attrs.local = true;
      attrs.isNewMsg = true;
      attrs.type = type;
      attrs.t = data.t || Math.floor(Date.now() / 1000);
      if (type === 'chat') {
        if (typeof data.body !== 'string') throw new Error('addAndSendMsgToChat: body must be a string');
        wire.body = data.body;
      } else {
        if (typeof data.mimetype !== 'string') throw new Error('addAndSendMsgToChat: media needs a mimetype');
        wire.mimetype = data.mimetype;
        if (data.filename != null) wire.filename = String(data.filename);
        if (data.caption != null) wire.caption = String(data.caption);
        else if (typeof data.body === 'string' && data.body.length < 65536) wire.caption = data.body;
        if (typeof data.data === 'string') {
          var b64 = data.data.indexOf(',') >= 0 ? data.data.slice(data.data.indexOf(',') + 1) : data.data;
          wire.data = b64;
          attrs.size = Math.floor(b64.replace(/=+$/, '').length * 3 / 4);
        } else if (typeof data.size === 'number') {
          wire.size = data.size;
          if (typeof data.filehash === 'string') wire.filehash = data.filehash;
        } else {
          throw new Error('addAndSendMsgToChat: media needs data (base64) or size');
        }
        // The bytes live on the wire only, never in the model (WhatsApp keeps them in a blob store).
        delete attrs.body;
        if (wire.caption != null) attrs.caption = wire.caption;
        attrs.isMedia = true;
      }
      return { key: key, wire: wire, attrs: attrs };
    }

    function addAndSendMsgToChat(chat, data) {
      var msgPromise, sendPromise;
      try {
        var p = prepare(chat, data);
        var existing = C.Msg.get(p.key);
        var msg = existing || C.Msg.add(p.attrs);
        msgPromise = Promise.resolve(msg);
        sendPromise = new Promise(function (resolve, reject) {
          internal.unsent.set(p.key._serialized, { wire: p.wire, resolve: resolve, reject: reject });
        });
        if (internal.transport && internal.transport.isOpen()) {
          internal.transport.send({ t: 'send', msg: p.wire });
        }
        // Otherwise it goes out when the socket is back (see wa-app.js, flushUnsent).
      } catch (e) {
        msgPromise = Promise.reject(e);
        sendPromise = Promise.reject(e);
        msgPromise.catch(function () {});
        sendPromise.catch(function () {});
      }
      var result = [msgPromise, sendPromise];
      // WhatsApp Web returns the pair; older callers simply await the call.
      result.then = function (a, b) { return sendPromise.then(a, b); };
      result.catch = function (b) { return sendPromise.catch(b); };
      return result;
    }
    return { addAndSendMsgToChat: addAndSendMsgToChat };
  });
})();
