/*
 * wafleet simulator, chunk 2: the runtime's base modules, shaped as in WhatsApp Web's own sources
 * (docs/wa-surface.md §1): the event emitter, Backbone-like models whose attributes live in
 * `__x_<name>` backing fields behind prototype accessors, collections, Wids and MsgKeys.
 *
 * A model's only own enumerable properties are its `__x_*` fields, so `Object.assign({}, model)`
 * or a spread copies no attribute under its real name, exactly as with WhatsApp's models; use
 * `toJSON()` / `serialize()` (props only: session and derived attributes are left out).
 */
(function () {
  'use strict';
  var __d = window.__d;

  // --- internal: shared between the bundles (not a WhatsApp module) ---------------------------
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
      // "Me" (WAWebUserPrefsMeUser): Wids of the linked account, null until linked.
      mePn: null,
      meLid: null,
      // PN <-> LID mapping the page has learned (WAWebApiContact), by serialized wid.
      lidByPn: new Map(),
      pnByLid: new Map(),
    };
  });

  __d('WABase64', [], function (t, n, r, o, a, i, l) {
    l.encodeB64 = function (buf) {
      var bytes = buf instanceof Uint8Array ? buf : new Uint8Array(buf);
      var s = '';
      for (var k = 0; k < bytes.length; k += 0x8000) {
        s += String.fromCharCode.apply(null, bytes.subarray(k, k + 0x8000));
      }
      return btoa(s);
    };
    l.decodeB64 = function (s) {
      var bin = atob(s);
      var out = new Uint8Array(bin.length);
      for (var k = 0; k < bin.length; k++) out[k] = bin.charCodeAt(k);
      return out.buffer;
    };
  });

  // --- events ----------------------------------------------------------------------------------
  __d('WAWebEventEmitter', [], function () {
    function store(obj) {
      if (!Object.prototype.hasOwnProperty.call(obj, '_events')) {
        // Not enumerable: a model's own enumerable keys are its __x_ fields only.
        Object.defineProperty(obj, '_events', { value: Object.create(null), writable: true, configurable: true });
      }
      return obj._events;
    }
    function add(obj, names, cb, ctx, once) {
      if (typeof cb !== 'function') return obj;
      var ev = store(obj);
      String(names).split(/\s+/).forEach(function (n) {
        if (!n) return;
        (ev[n] = ev[n] || []).push({ cb: cb, ctx: ctx, once: once });
      });
      return obj;
    }
    var Events = {
      on: function (names, cb, ctx) { return add(this, names, cb, ctx, false); },
      once: function (names, cb, ctx) { return add(this, names, cb, ctx, true); },
      off: function (names, cb) {
        var ev = store(this);
        var list = names ? String(names).split(/\s+/) : Object.keys(ev);
        list.forEach(function (n) {
          var hs = ev[n];
          if (!hs) return;
          ev[n] = cb ? hs.filter(function (h) { return h.cb !== cb; }) : [];
        });
        return this;
      },
      trigger: function (name) {
        var args = Array.prototype.slice.call(arguments, 1);
        var hs = store(this)[name];
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
      listenTo: function (other, names, cb) { other.on(names, cb, this); return this; },
      listenToOnce: function (other, names, cb) { other.once(names, cb, this); return this; },
      stopListening: function (other, names, cb) { if (other) other.off(names, cb); return this; },
    };
    // `new EventEmitter()` and mixing the methods into an object both work.
    function EventEmitter() {}
    Object.assign(EventEmitter.prototype, Events);
    return { EventEmitter: EventEmitter, Events: Events, default: EventEmitter };
  });

  // --- models (WAWebBaseModel) -------------------------------------------------------------------
  __d('WAWebBaseModel', ['WAWebEventEmitter'], function (t, require) {
    var Events = require('WAWebEventEmitter').Events;
    function prop(def) { return { kind: 'prop', def: def }; }
    function session(def) { return { kind: 'session', def: def }; }
    function derived(fn, deps) { return { kind: 'derived', fn: fn, deps: deps || [] }; }

    function BaseModel() {}
    Object.assign(BaseModel.prototype, Events);
    BaseModel.prototype.get = function (k) {
      return this.constructor.__attrs[k] ? this['__x_' + k] : undefined;
    };
    // set(key, value, opts) or set({key: value…}, opts). Attributes the model does not declare
    // are ignored (the simulator's choice; the reference is silent on it). `silent` fires nothing.
    BaseModel.prototype.set = function (a, b, c) {
      var obj, opts;
      if (typeof a === 'string') { obj = {}; obj[a] = b; opts = c; } else { obj = a || {}; opts = b; }
      var spec = this.constructor.__attrs;
      var changed = [];
      for (var k in obj) {
        if (!Object.prototype.hasOwnProperty.call(obj, k)) continue;
        var s = spec[k];
        if (!s) continue;
        if (s.kind === 'derived') throw new TypeError('Cannot set derived attribute ' + k);
        var old = this['__x_' + k];
        if (old !== obj[k]) {
          this['__x_' + k] = obj[k];
          changed.push([k, obj[k], old]);
        }
      }
      // Derived attributes depending on what changed are recomputed (cached in __x_ too).
      var self = this;
      this.constructor.__derived.forEach(function (d) {
        if (!changed.some(function (c) { return d.deps.indexOf(c[0]) >= 0; })) return;
        var old = self['__x_' + d.name];
        var v = d.fn.call(self);
        if (v !== old) { self['__x_' + d.name] = v; changed.push([d.name, v, old]); }
      });
      if (!(opts && opts.silent) && changed.length) {
        changed.forEach(function (c) { self.trigger('change:' + c[0], self, c[1], c[2]); });
        this.trigger('change', this);
      }
      return this;
    };
    BaseModel.prototype.unset = function (k, opts) { return this.set(k, undefined, opts); };
    BaseModel.prototype.trigger = function () {
      Events.trigger.apply(this, arguments);
      var args = arguments;
      // Bubble to the collections holding the model, so Msg.on('change:ack') sees every message.
      (this.__simCollections || []).forEach(function (coll) { Events.trigger.apply(coll, args); });
      return this;
    };
    // Props only (session and derived attributes are not serialized).
    BaseModel.prototype.serialize = function () {
      var out = {};
      var spec = this.constructor.__attrs;
      for (var k in spec) {
        if (spec[k].kind !== 'prop') continue;
        var v = this['__x_' + k];
        if (v !== undefined) out[k] = v;
      }
      return out;
    };
    BaseModel.prototype.toJSON = function () { return this.serialize(); };

    // defineModel(name, {attr: prop(default) | session(default) | derived(fn, deps)}, methods?,
    // Parent?) -> constructor. Each attribute is an accessor on the prototype over `__x_<attr>`.
    function defineModel(name, spec, methods, Parent) {
      Parent = Parent || BaseModel;
      var attrs = Object.assign({}, Parent.__attrs || {}, spec);
      function Model(values, opts) {
        Object.defineProperty(this, '__simCollections', { value: [], writable: true });
        for (var k in attrs) {
          if (attrs[k].kind === 'derived') continue;
          var def = attrs[k].def;
          this['__x_' + k] = typeof def === 'function' ? def() : def;
        }
        var self = this;
        Model.__derived.forEach(function (d) { self['__x_' + d.name] = d.fn.call(self); });
        if (values) this.set(values, { silent: true });
        if (this.initialize) this.initialize(values, opts);
      }
      Model.prototype = Object.create(Parent.prototype);
      Model.prototype.constructor = Model;
      Object.defineProperty(Model, 'name', { value: name });
      Model.__attrs = attrs;
      Model.__derived = Object.keys(attrs).filter(function (k) { return attrs[k].kind === 'derived'; })
        .map(function (k) { return { name: k, fn: attrs[k].fn, deps: attrs[k].deps }; });
      Object.keys(attrs).forEach(function (k) {
        if (k in BaseModel.prototype) return; // get, set, on… keep their meaning
        Object.defineProperty(Model.prototype, k, {
          configurable: true,
          get: function () { return this['__x_' + k]; },
          set: function (v) { this.set(k, v); },
        });
      });
      Object.assign(Model.prototype, methods || {});
      return Model;
    }
    return { BaseModel: BaseModel, defineModel: defineModel, prop: prop, session: session, derived: derived };
  });

  // --- collections (WAWebCollection) -----------------------------------------------------------
  __d('WAWebCollection', ['WAWebEventEmitter', 'WAWebBaseModel'], function (t, require) {
    var Events = require('WAWebEventEmitter').Events;
    var BaseModel = require('WAWebBaseModel').BaseModel;

    // The index key of a model id: its string form (Wid and MsgKey stringify to _serialized).
    function keyOf(x) {
      if (x == null) return null;
      if (typeof x === 'string') return x;
      if (x instanceof BaseModel) return keyOf(x.id);
      if (typeof x._serialized === 'string') return x._serialized;
      return String(x);
    }

    function BaseCollection(ModelClass) {
      this.model = ModelClass;
      this._models = [];
      this._index = Object.create(null);
    }
    Object.assign(BaseCollection.prototype, Events);
    Object.defineProperty(BaseCollection.prototype, 'length', { get: function () { return this._models.length; } });
    BaseCollection.prototype.get = function (x) { var k = keyOf(x); return k == null ? undefined : this._index[k]; };
    BaseCollection.prototype.add = function (items, opts) {
      opts = opts || {};
      var single = !Array.isArray(items);
      var list = single ? [items] : items;
      var out = [];
      for (var i = 0; i < list.length; i++) {
        var item = list[i];
        var m = item instanceof BaseModel ? item : null;
        var k = keyOf(m ? m.id : item && item.id);
        var existing = k != null ? this._index[k] : undefined;
        if (existing) {
          if (opts.merge && !m) existing.set(item);
          out.push(existing);
          continue;
        }
        if (!m) m = new this.model(item);
        this._models.push(m);
        if (k != null) this._index[k] = m;
        m.__simCollections.push(this);
        if (!opts.silent) Events.trigger.call(this, 'add', m, this, opts);
        out.push(m);
      }
      return single ? out[0] : out;
    };
    BaseCollection.prototype.remove = function (x, opts) {
      var m = x instanceof BaseModel ? x : this.get(x);
      if (!m || this._models.indexOf(m) < 0) return undefined;
      this._models = this._models.filter(function (o) { return o !== m; });
      delete this._index[keyOf(m.id)];
      var self = this;
      m.__simCollections = m.__simCollections.filter(function (c) { return c !== self; });
      if (!(opts && opts.silent)) Events.trigger.call(this, 'remove', m, this, opts || {});
      return m;
    };
    BaseCollection.prototype.reset = function () {
      var self = this;
      this._models.forEach(function (m) { m.__simCollections = m.__simCollections.filter(function (c) { return c !== self; }); });
      this._models = [];
      this._index = Object.create(null);
      Events.trigger.call(this, 'reset', this);
    };
    BaseCollection.prototype.getModelsArray = function () { return this._models.slice(); };
    BaseCollection.prototype.toArray = BaseCollection.prototype.getModelsArray;
    BaseCollection.prototype.at = function (i) { return this._models[i]; };
    BaseCollection.prototype.last = function () { return this._models[this._models.length - 1]; };
    BaseCollection.prototype.forEach = function (f, c) { return this._models.slice().forEach(f, c); };
    BaseCollection.prototype.filter = function (f, c) { return this._models.filter(f, c); };
    BaseCollection.prototype.map = function (f, c) { return this._models.map(f, c); };
    BaseCollection.prototype.where = function (attrs) {
      return this._models.filter(function (m) {
        for (var k in attrs) if (m.get(k) !== attrs[k]) return false;
        return true;
      });
    };
    BaseCollection.prototype.serialize = function () { return this._models.map(function (m) { return m.serialize(); }); };
    return { BaseCollection: BaseCollection, keyOf: keyOf };
  });

  // --- ids ---------------------------------------------------------------------------------------
  __d('WAWebWid', [], function (t, n, r, o, a, module) {
    var RE = /^([0-9A-Za-z.:_-]{1,64})@(c\.us|g\.us|lid|s\.whatsapp\.net|broadcast|newsletter|bot)$/;
    function Wid(s) {
      var m = RE.exec(String(s));
      if (!m) throw new Error('invalid wid: ' + s);
      this.user = m[1];
      this.server = m[2] === 's.whatsapp.net' ? 'c.us' : m[2];
      this._serialized = this.user + '@' + this.server;
    }
    Wid.prototype.toString = function () { return this._serialized; };
    Wid.prototype.toJSON = function () { return this._serialized; };
    Wid.prototype.equals = function (o) { return o != null && (o._serialized || String(o)) === this._serialized; };
    Wid.prototype.isUser = function () { return this.server === 'c.us' || this.server === 'lid'; };
    Wid.prototype.isLid = function () { return this.server === 'lid'; };
    Wid.prototype.isGroup = function () { return this.server === 'g.us'; };
    Wid.prototype.isStatus = function () { return this._serialized === 'status@broadcast'; };
    Wid.prototype.isBroadcast = function () { return this.server === 'broadcast'; };
    Wid.prototype.isNewsletter = function () { return this.server === 'newsletter'; };
    Wid.prototype.isBot = function () { return this.server === 'bot'; };
    Wid.isWid = function (x) { return x instanceof Wid; };
    module.exports = Wid;
  });

  __d('WAWebWidFactory', ['WAWebWid', 'WAWebSimBuild'], function (t, require, r, o, a, i, l) {
    var Wid = require('WAWebWid');
    function createWid(s) { return s instanceof Wid ? s : new Wid(s && s._serialized ? s._serialized : s); }
    function userOrThrow(user, server) {
      var u = String(user);
      if (!/^[0-9]{1,20}$/.test(u)) throw new Error('invalid user: ' + user);
      return new Wid(u + '@' + server);
    }
    l.createWid = createWid;
    l.isWidlike = function (x) { return x instanceof Wid || (x != null && typeof x === 'object' && typeof x.user === 'string' && typeof x.server === 'string'); };
    l.createWidFromWidLike = function (x) { return x instanceof Wid ? x : new Wid(x.user + '@' + x.server); };
    l.createUserWidOrThrow = function (user, server) { return userOrThrow(user, server || 'c.us'); };
    l.createUserLidOrThrow = function (user) { return userOrThrow(user, 'lid'); };
    l.asUserWidOrThrow = function (w) {
      var wid = createWid(w);
      if (!wid.isUser()) throw new Error('not a user wid: ' + wid);
      return wid;
    };
    l.asChatWid = function (w) {
      var wid = createWid(w);
      return wid.isUser() || wid.isGroup() || wid.isBroadcast() || wid.isNewsletter() ? wid : null;
    };
    l.asGroupWidOrThrow = function (w) {
      var wid = createWid(w);
      if (!wid.isGroup()) throw new Error('not a group wid: ' + wid);
      return wid;
    };
    // The July-2025 name (renamed to createUserWidOrThrow since; docs/wa-surface.md §4).
    if (require('WAWebSimBuild').legacy) {
      l.createUserWid = function (user, server) { return userOrThrow(user, server || 'c.us'); };
    }
  });

  // "Me" as the current builds expose it (no getMeUser: that name is gone from the newest).
  __d('WAWebUserPrefsMeUser', ['WAWebSimInternal', 'WAWebSimBuild'], function (t, require, r, o, a, i, l) {
    var internal = require('WAWebSimInternal');
    l.getMaybeMePnUser = function () { return internal.mePn; };
    l.getMaybeMeLidUser = function () { return internal.meLid; };
    l.getMeUserOrThrow = function () {
      if (!internal.mePn) throw new Error('getMeUserOrThrow: me is undefined');
      return internal.mePn;
    };
    l.getMeLidUserOrThrow = function () {
      if (!internal.meLid) throw new Error('getMeLidUserOrThrow: me lid is undefined');
      return internal.meLid;
    };
    l.isMeAccount = function (w) {
      return !!w && ((internal.mePn && internal.mePn.equals(w)) || (internal.meLid && internal.meLid.equals(w)));
    };
    if (require('WAWebSimBuild').legacy) l.getMeUser = l.getMeUserOrThrow;
  });

  __d('WAWebMsgKey', ['WAWebWidFactory', 'WAWebUserPrefsMeUser'], function (t, require, r, o, a, module) {
    var WF = require('WAWebWidFactory');
    var Me = require('WAWebUserPrefsMeUser');
    // new MsgKey({from, to, id, participant?, selfDir}) or ({fromMe, remote, id, participant?}).
    function MsgKey(o) {
      if (!o || typeof o !== 'object') throw new Error('MsgKey: no options');
      if (!Me.getMaybeMePnUser()) throw new Error('MsgKey error: me is undefined');
      if (o.remote !== undefined) {
        this.fromMe = !!o.fromMe;
        this.remote = WF.createWid(o.remote);
      } else {
        if (o.selfDir !== 'in' && o.selfDir !== 'out') throw new Error('MsgKey: selfDir must be in or out');
        this.fromMe = o.selfDir === 'out';
        this.remote = WF.createWid(this.fromMe ? o.to : o.from);
      }
      if (typeof o.id !== 'string' || !/^[A-Za-z0-9]{1,64}$/.test(o.id)) throw new Error('MsgKey: bad id ' + o.id);
      this.id = o.id;
      this.participant = o.participant ? WF.createWid(o.participant) : undefined;
      this._serialized = String(this.fromMe) + '_' + this.remote._serialized + '_' + this.id +
        (this.participant ? '_' + this.participant._serialized : '');
    }
    MsgKey.prototype.toString = function () { return this._serialized; };
    MsgKey.prototype.equals = function (o) { return o != null && (o._serialized || String(o)) === this._serialized; };
    MsgKey.prototype.clone = function () { return new MsgKey({ fromMe: this.fromMe, remote: this.remote, id: this.id, participant: this.participant }); };
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
    MsgKey.from = function (x) { return x instanceof MsgKey ? x : typeof x === 'string' ? MsgKey.fromString(x) : new MsgKey(x); };
    MsgKey.isMsgKey = function (x) { return x instanceof MsgKey; };
    module.exports = MsgKey;
  });
})();
