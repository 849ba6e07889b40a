/*
 * wafleet simulator, chunk 4: chats, contacts, group metadata and messages — the Msg, Chat,
 * Contact and GroupMetadata models and collections, WAWebFindChatAction and
 * WAWebSendMsgChatAction (docs/wa-surface.md §4).
 *
 * Sending checks what WhatsApp's own send path checks on the page (the key's remote is the
 * chat); the addressing rules (LID `from` for `@lid` chats, a `participant` in groups) and the
 * media rules (only what went through the upload pipeline) are the server's, as on WhatsApp:
 * a refused send gets ack -1 and a rejected send promise.
 */
(function () {
  'use strict';
  var __d = window.__d;

  __d('WAWebCollections', ['WAWebBaseModel', 'WAWebCollection', 'WAWebWidFactory'], function (t, require, r, o, a, i, l) {
    var B = require('WAWebBaseModel');
    var BaseCollection = require('WAWebCollection').BaseCollection;
    var WF = require('WAWebWidFactory');
    var p = B.prop;

    var MSG_PROPS = ['id', 'from', 'to', 'author', 'participant', 't', 'type', 'subtype', 'body',
      'caption', 'mimetype', 'filename', 'ack', 'local', 'self', 'notifyName', 'size', 'filehash',
      'encFilehash', 'mediaKey', 'mediaKeyTimestamp', 'directPath', 'deprecatedMms3Url',
      'streamingSidecar', 'firstFrameSidecar', 'isViewOnce', 'revokeSender', 'protocolMessageKey',
      'quotedMsg', 'quotedStanzaID', 'quotedParticipant', 'quotedRemoteJid', 'mentionedJidList', 'isForwarded',
      'forwardingScore', 'recipients'];
    // Structured messages and edits (issue 12): location, contact card, poll, the latest edit.
    MSG_PROPS.push('lat', 'lng', 'loc', 'vcardFormattedName', 'pollName', 'pollOptions',
      'pollSelectableOptionsCount', 'messageSecret', 'latestEditMsgKey', 'latestEditSenderTimestampMs', 'isSendFailure', 'errorCode');
    var msgSpec = {};
    MSG_PROPS.forEach(function (k) { msgSpec[k] = p(undefined); });
    // Session attributes of a Msg: not in serialize().
    msgSpec.isNewMsg = B.session(false);
    msgSpec.isMedia = B.derived(function () {
      return ['image', 'video', 'audio', 'ptt', 'document', 'sticker'].indexOf(this.type) >= 0;
    }, ['type']);
    var MsgModel = B.defineModel('Msg', msgSpec);
    // The context a reply to this message carries (WhatsApp's Msg model method).
    MsgModel.prototype.msgContextInfo = function (chatId) {
      var id = this.id;
      return {
        quotedMsg: { type: this.type, body: this.body, caption: this.caption },
        quotedStanzaID: id.id,
        quotedParticipant: id.participant || this.author || (id.fromMe ? this.from : id.remote),
        quotedRemoteJid: chatId && chatId.equals && !chatId.equals(id.remote) ? id.remote : undefined,
      };
    };

    var ParticipantModel = B.defineModel('Participant', {
      id: p(undefined), isAdmin: p(false), isSuperAdmin: p(false),
    });
    var GroupMetadataModel = B.defineModel('GroupMetadata', {
      id: p(undefined), subject: p(''), owner: p(undefined), creation: p(undefined),
      isLidAddressingMode: p(false), participants: p(undefined), desc: p(undefined),
      descId: p(undefined), announce: p(false), restrict: p(false),
      inviteCode: B.session(undefined),
    });
    var ChatModel = B.defineModel('Chat', {
      id: p(undefined), name: p(undefined), t: p(undefined), unreadCount: p(0), archive: p(false),
      isGroup: p(false), groupMetadata: B.session(undefined), pin: p(undefined), muteExpiration: p(0),
    });
    var ContactModel = B.defineModel('Contact', {
      id: p(undefined), name: p(undefined), pushname: p(undefined), isMyContact: p(false),
      phoneNumber: p(undefined), isUser: p(true), isGroup: p(false), isBusiness: p(false),
      isContactBlocked: p(false),
    });

    function Coll(Model) { BaseCollection.call(this, Model); }
    Coll.prototype = Object.create(BaseCollection.prototype);
    Coll.prototype.constructor = Coll;

    var Msg = new Coll(MsgModel);
    var Chat = new Coll(ChatModel);
    var Contact = new Coll(ContactModel);
    var GroupMetadata = new Coll(GroupMetadataModel);

    function ensureContact(wid) {
      return Contact.get(wid) || Contact.add({ id: wid, isUser: wid.isUser(), isGroup: wid.isGroup() });
    }
    function ensureChat(w) {
      var wid = WF.createWid(w);
      var chat = Chat.get(wid);
      if (chat) return { chat: chat, created: false };
      // A group chat exists only once the server told the page about the group.
      if (wid.isGroup()) throw new Error('chat not found: ' + wid);
      if (!wid.isUser()) throw new Error('cannot open a chat with ' + wid);
      ensureContact(wid);
      chat = Chat.add({ id: wid, t: Math.floor(Date.now() / 1000) });
      return { chat: chat, created: true };
    }
    // Backbone's find(fn) for a function, WhatsApp's async lookup for a wid.
    Chat.find = function (x) {
      if (typeof x === 'function') return this._models.find(x);
      try { return Promise.resolve(ensureChat(x).chat); } catch (e) { return Promise.reject(e); }
    };
    Contact.find = function (x) {
      if (typeof x === 'function') return this._models.find(x);
      try { return Promise.resolve(ensureContact(WF.createWid(x))); } catch (e) { return Promise.reject(e); }
    };
    // The simulator's helpers for the app (not WhatsApp members; not enumerable).
    Object.defineProperty(Chat, '__simEnsure', { value: ensureChat });
    Object.defineProperty(Contact, '__simEnsure', { value: ensureContact });
    Object.defineProperty(GroupMetadata, '__simUpsert', { value: function (g) {
      var gid = WF.createWid(g.id);
      var parts = new Coll(ParticipantModel);
      var admins = g.admins || [];
      g.participants.forEach(function (x) {
        parts.add({ id: WF.createWid(x), isAdmin: admins.indexOf(x) >= 0, isSuperAdmin: g.owner === x });
      });
      var meta = GroupMetadata.get(gid);
      var attrs = { id: gid, subject: g.subject, isLidAddressingMode: !!g.lid_addressing, participants: parts, creation: g.creation,
        owner: g.owner ? WF.createWid(g.owner) : undefined, desc: g.desc || undefined };
      if (meta) meta.set(attrs); else meta = GroupMetadata.add(attrs);
      var chat = Chat.get(gid);
      if (chat) chat.set({ name: g.subject, groupMetadata: meta });
      else Chat.add({ id: gid, name: g.subject, isGroup: true, groupMetadata: meta, t: g.creation });
      return meta;
    } });

    l.Msg = Msg;
    l.Chat = Chat;
    l.Contact = Contact;
    l.GroupMetadata = GroupMetadata;
    l.MsgModel = MsgModel;
    l.ChatModel = ChatModel;
    l.ContactModel = ContactModel;
  });

  __d('WAWebMsgCollection', ['WAWebCollections'], function (t, require, r, o, a, i, l) {
    l.MsgCollection = require('WAWebCollections').Msg;
  });
  __d('WAWebChatCollection', ['WAWebCollections'], function (t, require, r, o, a, i, l) {
    l.ChatCollection = require('WAWebCollections').Chat;
  });
  __d('WAWebContactCollection', ['WAWebCollections'], function (t, require, r, o, a, i, l) {
    l.ContactCollection = require('WAWebCollections').Contact;
  });

  __d('WAWebFindChatAction', ['WAWebCollections'], function (t, require, r, o, a, i, l) {
    l.findOrCreateLatestChat = function (wid) {
      try { return Promise.resolve(require('WAWebCollections').Chat.__simEnsure(wid)); } catch (e) { return Promise.reject(e); }
    };
    l.findExistingChat = function (wid) {
      var c = require('WAWebCollections').Chat.get(wid);
      return Promise.resolve(c || null);
    };
  });

  // WhatsApp's own choice of our `from` for a chat: the LID user for `@lid` chats and
  // LID-addressed groups, the phone-number user otherwise.
  __d('WAWebLidMigrationUtils', ['WAWebUserPrefsMeUser'], function (t, require, r, o, a, i, l) {
    l.getMeUserLidOrJidForChat = function (chat) {
      var Me = require('WAWebUserPrefsMeUser');
      var meta = chat && chat.groupMetadata;
      var lid = chat && chat.id && (chat.id.isLid() || (chat.id.isGroup() && meta && meta.isLidAddressingMode));
      return lid ? Me.getMeLidUserOrThrow() : Me.getMeUserOrThrow();
    };
  });

  // --- sending ----------------------------------------------------------------------------------
  __d('WAWebSendMsgChatAction', ['WAWebSimInternal', 'WAWebCollections', 'WAWebMsgKey', 'WAWebWidFactory', 'WAWebUserPrefsMeUser'], function (t, require, r, o, a, i, l) {
    var internal = require('WAWebSimInternal');
    var MsgKey = require('WAWebMsgKey');
    var WF = require('WAWebWidFactory');
    var TYPES = { chat: 1, image: 1, video: 1, audio: 1, ptt: 1, document: 1, sticker: 1, location: 1, vcard: 1, poll_creation: 1 };
    // Inline data is cut to this much on the wire: enough for the server to see (and refuse) it.
    var INLINE_PREVIEW = 256;

    function widStr(x) { return x == null ? undefined : WF.createWid(x)._serialized; }
    function clip(s) { return typeof s === 'string' ? s.slice(0, INLINE_PREVIEW) : undefined; }

    function prepare(chat, data) {
      if (!chat || !chat.id) throw new Error('addAndSendMsgToChat: no chat');
      if (!data || typeof data !== 'object') throw new Error('addAndSendMsgToChat: no message');
      if (!require('WAWebUserPrefsMeUser').getMaybeMePnUser()) throw new Error('addAndSendMsgToChat: not logged in');
      var key = MsgKey.from(data.id);
      if (!key.fromMe) throw new Error('addAndSendMsgToChat: id must be fromMe');
      if (!key.remote.equals(chat.id)) throw new Error('addAndSendMsgToChat: the id is not of this chat');
      var type = data.type || 'chat';
      if (!TYPES[type]) throw new Error('addAndSendMsgToChat: unsupported type ' + type);
      var wire = {
        id: key._serialized, to: chat.id._serialized, type: type,
        from: widStr(data.from), participant: widStr(data.participant || key.participant),
      };
      // A reply, mentions and a forward are fields of any message type.
      if (data.quotedStanzaID != null) {
        wire.quotedStanzaID = String(data.quotedStanzaID);
        wire.quotedParticipant = widStr(data.quotedParticipant);
      }
      if (Array.isArray(data.mentionedJidList)) wire.mentionedJidList = data.mentionedJidList.map(widStr);
      if (data.isForwarded) { wire.isForwarded = true; wire.forwardingScore = Number(data.forwardingScore) || 1; }
      if (type === 'chat') {
        if (typeof data.body !== 'string') throw new Error('addAndSendMsgToChat: body must be a string');
        wire.body = data.body;
        if (typeof data.matchedText === 'string') wire.matchedText = data.matchedText;
        // A link preview (WAWebLinkPreviewChatAction's data spread into the message).
        ['title', 'description', 'canonicalUrl'].forEach(function (f) {
          if (typeof data[f] === 'string') wire[f] = data[f];
        });
        if (data.subtype === 'url') wire.subtype = 'url';
      } else if (type === 'location') {
        wire.lat = data.lat; wire.lng = data.lng;
        if (data.loc != null) wire.loc = String(data.loc);
      } else if (type === 'vcard') {
        wire.body = data.body; wire.vcardFormattedName = data.vcardFormattedName;
      } else if (type === 'poll_creation') {
        wire.pollName = data.pollName;
        wire.pollOptions = Array.isArray(data.pollOptions) ? data.pollOptions.map(function (o) { return o && o.name; }) : null;
        wire.pollSelectableOptionsCount = data.pollSelectableOptionsCount;
        // Votes are encrypted to the secret: WhatsApp refuses a poll without 32 bytes of it.
        wire.messageSecretLen = data.messageSecret && data.messageSecret.length;
      } else {
        ['mimetype', 'filename', 'caption', 'directPath', 'deprecatedMms3Url', 'encFilehash', 'filehash', 'mediaKey']
          .forEach(function (k) { if (data[k] != null) wire[k] = String(data[k]); });
        if (typeof data.size === 'number') wire.size = data.size;
        if (typeof data.mediaKeyTimestamp === 'number') wire.mediaKeyTimestamp = data.mediaKeyTimestamp;
        // A media body is the JPEG preview; inline bytes (`data`, a `data:` body) go to the
        // server clipped, so it can refuse them as WhatsApp's servers would.
        if (data.data != null) wire.data = clip(String(data.data));
        if (typeof data.body === 'string' && data.body.slice(0, 5) === 'data:') wire.body = clip(data.body);
      }
      var attrs = Object.assign({}, data);
      delete attrs.data;
      attrs.id = key;
      attrs.to = chat.id;
      attrs.from = data.from ? WF.createWid(data.from) : undefined;
      attrs.ack = 0;
      attrs.self = 'out';
      attrs.local = true;
      attrs.isNewMsg = true;
      attrs.type = type;
      attrs.t = data.t || Math.floor(Date.now() / 1000);
      return { key: key, wire: wire, attrs: attrs };
    }

    // Puts a prepared wire message on the socket; resolves when the server acks it (the send
    // actions of wa-actions.js use it too).
    function transmit(key, wire) {
      return new Promise(function (resolve, reject) {
        internal.unsent.set(key, { wire: wire, resolve: resolve, reject: reject });
        // Otherwise it goes out when the socket is back (wa-app.js, flushUnsent).
        if (internal.transport && internal.transport.isOpen()) internal.transport.send({ t: 'send', msg: wire });
      });
    }
    internal.transmit = transmit;

    // addAndSendMsgToChat(chat, msgData) -> [added (the Msg model), sent ({messageSendResult})];
    // msgData may be a promise, as in WhatsApp.
    l.addAndSendMsgToChat = function (chat, msgData) {
      var prepared = Promise.resolve(msgData).then(function (data) { return prepare(chat, data); });
      var added = prepared.then(function (pr) {
        var C = require('WAWebCollections');
        return C.Msg.get(pr.key) || C.Msg.add(pr.attrs);
      });
      var sent = added.then(function () {
        return prepared.then(function (pr) {
          return transmit(pr.key._serialized, pr.wire);
        });
      });
      added.catch(function () {});
      sent.catch(function () {});
      return [added, sent];
    };
  });
})();
