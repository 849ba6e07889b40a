/*
 * wafleet simulator, chunk: events around messages (issue #12) — reactions, edits, revokes'
 * neighbours, calls and presence, as WhatsApp Web's own modules hold them (docs/wa-surface.md
 * "C2", "C4", "C5", "Events (issue #12)"):
 *
 *  - WAWebAddonReactionTableMode.reactionTableMode: the reaction table; every incoming reaction
 *    is upserted there (`bulkUpsert`), and `markAsRead` upserts the same rows again with
 *    `read: true`, as WhatsApp's does (so a wrapper sees read receipts too).
 *  - WAWebCallCollection: the call collection, WhatsApp's default export (`exports.default`);
 *    an offer is added with `{merge: true}`.
 *  - WAWap / WADeprecatedSendIq: stanza building and fire-and-forget sending; the server sees a
 *    `call` stanza with a `reject` child and records the rejection (`GET /sim/calls`).
 *  - WAWebPresenceCollection.PresenceCollection: presence models (one `chatstate` for a person,
 *    `chatstates` for a group's members); `find(wid)` subscribes (1:1 by LID only, as the real
 *    one), and the server sends presence only for subscribed chats.
 *
 * The server's messages (`reaction`, `edit`, `call`, `presence`) are handled by the simulator's
 * own module WAWebSimEvents, which the app bundle's dispatcher consults.
 */
(function () {
  'use strict';
  var __d = window.__d;

  __d('WAWebAddonReactionTableMode', ['WAWebSimInternal'], function (t, require, r, o, a, i, l) {
    var rows = new Map();
    var table = {
      mode: 'reactions',
      bulkUpsert: function (datas) {
        (datas || []).forEach(function (d) {
          var key = d.id && d.id._serialized ? d.id._serialized : String(d.id);
          rows.set(key, Object.assign({}, rows.get(key) || {}, d));
        });
        return Promise.resolve();
      },
      getByMsgKey: function (k) { return Promise.resolve(rows.get(k && k._serialized ? k._serialized : String(k))); },
      bulkGetByParentMsgKey: function (keys) {
        var want = (keys || []).map(function (k) { return k && k._serialized ? k._serialized : String(k); });
        return Promise.resolve(Array.from(rows.values()).filter(function (d) {
          return d.reactionParentKey && want.indexOf(d.reactionParentKey._serialized) >= 0;
        }));
      },
      // Re-enters bulkUpsert through the table object, as WhatsApp's own markAsRead does.
      markAsRead: function (keys) {
        var again = (keys || []).map(function (k) { return rows.get(k && k._serialized ? k._serialized : String(k)); })
          .filter(Boolean).map(function (d) { return Object.assign({}, d, { read: true }); });
        return table.bulkUpsert(again);
      },
      getTableSize: function () { return Promise.resolve(rows.size); },
    };
    l.reactionTableMode = table;
  });

  __d('WAWebCallCollection', ['WAWebBaseModel', 'WAWebCollection'], function (t, require, r, o, a, i, l) {
    var B = require('WAWebBaseModel');
    var BaseCollection = require('WAWebCollection').BaseCollection;
    var p = B.prop;
    var CallModel = B.defineModel('Call', {
      id: p(undefined), peerJid: p(undefined), offerTime: p(undefined), isVideo: p(false),
      isGroup: p(false), outgoing: p(false), isSilenced: p(false),
    });
    function CallCollection() { BaseCollection.call(this, CallModel); }
    CallCollection.prototype = Object.create(BaseCollection.prototype);
    CallCollection.prototype.processIncomingCall = function (callId, peerJid, opts) {
      var o = opts || {};
      return this.add({ id: callId, peerJid: peerJid, isVideo: !!o.isVideo, offerTime: o.offerTime, isSilenced: !!o.isSilenced, isGroup: !!o.isGroup }, { merge: true });
    };
    l.default = new CallCollection();
  });

  __d('WAWap', [], function (t, n, r, o, a, i, l) {
    var seq = 0;
    l.wap = function (tag, attrs, content) { return { tag: String(tag), attrs: attrs || {}, content: content === undefined ? null : content }; };
    l.generateId = function () { seq += 1; return Date.now().toString(36) + '.' + seq; };
  });

  __d('WADeprecatedSendIq', ['WAWebSimInternal'], function (t, require, r, o, a, i, l) {
    var internal = require('WAWebSimInternal');
    // Fire and forget, as WhatsApp's: nothing comes back for a cast stanza.
    l.deprecatedCastStanza = function (stanza) {
      internal.transport.send({ t: 'stanza', stanza: stanza });
    };
  });

  __d('WAWebPresenceCollection', ['WAWebSimInternal', 'WAWebBaseModel', 'WAWebCollection', 'WAWebWidFactory', 'WAWebUserPrefsMeUser'], function (t, require, r, o, a, i, l) {
    var internal = require('WAWebSimInternal');
    var B = require('WAWebBaseModel');
    var BaseCollection = require('WAWebCollection').BaseCollection;
    var WF = require('WAWebWidFactory');
    var p = B.prop;
    var Chatstate = B.defineModel('Chatstate', { id: p(undefined), type: p(undefined), t: p(undefined), deny: p(false) });
    function States() { BaseCollection.call(this, Chatstate); }
    States.prototype = Object.create(BaseCollection.prototype);
    States.prototype.gadd = function (id) { return this.get(id) || this.add({ id: id }); };
    var Presence = B.defineModel('Presence', {
      id: p(undefined), isOnline: p(false), isGroup: p(false), isUser: p(true), isSubscribed: p(false),
      stale: p(true), hasData: p(false), forceDisplay: p(false),
    });
    function Coll() { BaseCollection.call(this, Presence); }
    Coll.prototype = Object.create(BaseCollection.prototype);
    Coll.prototype.gadd = function (w) {
      var wid = WF.createWid(w);
      var m = this.get(wid);
      if (m) return m;
      m = new Presence({ id: wid, isGroup: wid.isGroup(), isUser: wid.isUser() });
      m.chatstate = new Chatstate({ id: wid });
      m.chatstates = new States();
      return this.add(m);
    };
    // Subscribes the way the real findImpl does: groups by their id, people by LID only (a PN
    // key is not subscribed), never me.
    Coll.prototype.find = function (w) {
      var wid = WF.createWid(w);
      var m = this.gadd(wid);
      if (require('WAWebUserPrefsMeUser').isMeAccount(wid)) return Promise.resolve(m);
      if (!wid.isGroup() && !wid.isLid()) return Promise.resolve(m);
      internal.transport.send({ t: 'presence_subscribe', jid: wid._serialized });
      m.set({ isSubscribed: true });
      return Promise.resolve(m);
    };
    l.PresenceCollection = new Coll();
  });

  // --- the server's messages -------------------------------------------------------------------

  function handlers(req) {
    var WF = req('WAWebWidFactory');
    var MsgKey = req('WAWebMsgKey');
    return {
      // A contact reacted (or removed its reaction: text "").
      reaction: function (m) {
        var target = MsgKey.fromString(m.target);
        var key = new MsgKey({ fromMe: false, remote: m.chat, id: m.id, participant: m.author });
        req('WAWebAddonReactionTableMode').reactionTableMode.bulkUpsert([{
          id: key, msgKey: key, parentMsgKey: target, reactionParentKey: target, type: 'reaction',
          reactionText: m.text, reactionTimestamp: m.ts_ms, from: WF.createWid(m.chat),
          author: m.author ? WF.createWid(m.author) : undefined, senderUserJid: WF.createWid(m.author || m.chat),
          read: false, orphan: 0, ack: 1,
        }]);
      },
      // The sender edited its message: the model is updated in place.
      edit: function (m) {
        var C = req('WAWebCollections');
        var msg = C.Msg.get(m.target);
        if (!msg) return;
        var editKey = new MsgKey({ fromMe: false, remote: m.chat, id: m.edit_id, participant: m.author });
        var attrs = { latestEditMsgKey: editKey, latestEditSenderTimestampMs: m.ts_ms };
        if (msg.caption !== undefined && msg.type !== 'chat') attrs.caption = m.body; else attrs.body = m.body;
        msg.set(attrs);
      },
      call: function (m) {
        req('WAWebCallCollection').default.processIncomingCall(m.id, WF.createWid(m.from), {
          isVideo: !!m.video, isGroup: !!m.group, offerTime: m.ts,
        });
      },
      // WAWebChangePresenceHandlerAction's effect on a subscribed presence model.
      presence: function (m) {
        var P = req('WAWebPresenceCollection').PresenceCollection;
        var pm = P.get(m.chat);
        if (!pm || !pm.isSubscribed) return;
        var cs = pm.isGroup ? pm.chatstates.gadd(WF.createWid(m.participant)) : pm.chatstate;
        if (m.type === 'available' || m.type === 'unavailable') pm.set({ isOnline: m.type === 'available' });
        cs.set({ type: m.type, t: m.last_seen === undefined ? undefined : m.last_seen });
        pm.set({ hasData: true, stale: false });
      },
    };
  }

  // The simulator's own dispatch table (not a WhatsApp module), read by the app bundle.
  __d('WAWebSimEvents', ['WAWebWidFactory', 'WAWebMsgKey'], function (t, req, r, o, a, i, l) {
    Object.assign(l, handlers(req));
  });
})();
