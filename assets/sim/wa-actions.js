/*
 * wafleet simulator, chunk: acting on a message already in a chat (issue 12), shaped as WhatsApp
 * Web's own action modules (docs/wa-surface.md, "Send types"): a reaction
 * (WAWebSendReactionMsgAction.sendReactionToMsg), an edit (WAWebSendMessageEditAction
 * .sendMessageEdit), delete for everyone (WAWebChatSendMessages.sendRevokeMsgs) and forwarding
 * (WAWebForwardMessagesToChat.forwardMessagesToChats); and the link preview a text gets
 * (WAWebLinkPreviewChatAction.getLinkPreview, the phone's minimal answer).
 *
 * As in WhatsApp, a reaction, an edit and a revoke are messages of their own on the wire (their
 * own key, addressed like any message of the chat) that never join the message collection: the
 * edit changes the original's body, the revoke turns the original into a `revoked` model. A
 * forward is a new message of the target chat, a copy with `isForwarded`.
 */
(function () {
  'use strict';
  var __d = window.__d;

  // The chat of a message, our `from` for it, and a new key of ours in it.
  function outKey(require, msg, legacyId) {
    var C = require('WAWebCollections');
    var MsgKey = require('WAWebMsgKey');
    var chat = C.Chat.get(msg.id.remote);
    if (!chat) throw new Error('chat not found: ' + msg.id.remote);
    var from = require('WAWebLidMigrationUtils').getMeUserLidOrJidForChat(chat);
    var participant = chat.id.isGroup() ? from : undefined;
    return Promise.resolve(legacyId ? MsgKey.newId_DEPRECATED() : MsgKey.newId()).then(function (id) {
      var key = new MsgKey({ from: from, to: chat.id, id: id, participant: participant, selfDir: 'out' });
      return { chat: chat, from: from, key: key, participant: participant };
    });
  }

  function wireOf(k, fields) {
    return Object.assign({
      id: k.key._serialized, to: k.chat.id._serialized, from: k.from._serialized,
      participant: k.participant ? k.participant._serialized : undefined,
    }, fields);
  }

  __d('WAWebSendReactionMsgAction', ['WAWebSimInternal', 'WAWebCollections', 'WAWebMsgKey', 'WAWebLidMigrationUtils'], function (t, require, r, o, a, i, l) {
    // sendReactionToMsg(msg, reactionText): "" removes our reaction. Resolves undefined; throws
    // "Reaction send error" when the server refuses it.
    l.sendReactionToMsg = function (msg, text) {
      return outKey(require, msg, false).then(function (k) {
        var wire = wireOf(k, { type: 'reaction', reactionText: String(text), reactionParentKey: msg.id._serialized });
        return require('WAWebSimInternal').transmit(k.key._serialized, wire);
      }).then(function (res) {
        if (!res || res.messageSendResult !== 'OK') throw new Error('Reaction send error');
      });
    };
  });

  __d('WAWebSendMessageEditAction', ['WAWebSimInternal', 'WAWebCollections', 'WAWebMsgKey', 'WAWebLidMigrationUtils'], function (t, require, r, o, a, i, l) {
    // sendMessageEdit(msg, text, options): only our own text or caption can be edited.
    l.sendMessageEdit = function (msg, text, options) {
      var canText = msg.id.fromMe && msg.type === 'chat';
      var canCaption = msg.id.fromMe && ['image', 'video', 'document'].indexOf(msg.type) >= 0;
      if (!canText && !canCaption) return Promise.reject(new Error('Cannot edit message'));
      var body = String(text).trim();
      return outKey(require, msg, true).then(function (k) {
        var fields = { type: 'protocol', subtype: 'message_edit', protocolMessageKey: msg.id._serialized, editMsgType: msg.type };
        if (canText) fields.body = body; else fields.caption = body;
        var opts = options || {};
        if (Array.isArray(opts.mentionedJidList)) fields.mentionedJidList = opts.mentionedJidList.map(String);
        // As in WhatsApp, a failed edit resolves and marks the original (isSendFailure).
        return require('WAWebSimInternal').transmit(k.key._serialized, wireOf(k, fields)).then(function (res) {
          if (!res || res.messageSendResult !== 'OK') { msg.set('isSendFailure', true); return; }
          msg.set(canText ? { body: body, latestEditMsgKey: k.key, isSendFailure: false } : { caption: body, latestEditMsgKey: k.key, isSendFailure: false });
        }, function () { msg.set('isSendFailure', true); });
      });
    };
  });

  __d('WAWebChatSendMessages', ['WAWebSimInternal', 'WAWebCollections', 'WAWebMsgKey', 'WAWebLidMigrationUtils'], function (t, require, r, o, a, i, l) {
    // sendRevokeMsgs(chat, {type: 'message', list: [msg]}, {clearMedia}): delete for everyone.
    l.sendRevokeMsgs = function (chat, what, opts) {
      if (!what || what.type !== 'message' || !Array.isArray(what.list)) return Promise.reject(new Error('sendRevokeMsgs: {type: "message", list} expected'));
      var C = require('WAWebCollections');
      return Promise.all(what.list.map(function (msg) {
        if (!msg.id.fromMe) return Promise.reject(new Error('sendRevokeMsgs: only your own messages (admin revoke is not simulated)'));
        return outKey(require, msg, false).then(function (k) {
          var wire = wireOf(k, { type: 'protocol', subtype: 'revoke', protocolMessageKey: msg.id._serialized });
          return require('WAWebSimInternal').transmit(k.key._serialized, wire);
        }).then(function () {
          var orig = C.Msg.get(msg.id);
          if (!orig) return;
          C.Msg.remove(orig);
          C.Msg.add({
            id: orig.id, from: orig.from, to: orig.to, author: orig.author, type: 'revoked', subtype: 'sender',
            revokeSender: orig.author || orig.from, protocolMessageKey: orig.id, t: orig.t, ack: orig.ack,
            self: orig.self, local: true, isNewMsg: false,
          });
        });
      }));
    };
  });

  __d('WAWebLinkPreviewChatAction', [], function (t, require, r, o, a, i, l) {
    // getLinkPreview(link, chat): link is WALinkify.findLink's {url, domain}. WhatsApp asks the
    // primary phone and, when it has nothing richer, builds the minimal preview
    // (WAWebGenMinimalLinkPreviewChatAction through WAWebLinkPreviewUtils.genLinkPreview):
    // {url, data: {matchedText: url, title: domain, description: url, richPreviewType: 0 (NONE),
    // doNotPlayInline: true}}. The simulated phone fetches nothing, so it is always that one;
    // null for a missing or non-http(s) link, as WhatsApp gives for what it cannot preview.
    l.getLinkPreview = function (link, chat) {
      var url = link && typeof link.url === 'string' ? link.url : '';
      var domain;
      try { domain = link.domain || new URL(url).hostname; } catch (e) { return Promise.resolve(null); }
      if (!/^https?:\/\//i.test(url) || url.length > 2048) return Promise.resolve(null);
      return Promise.resolve({
        url: url,
        data: { matchedText: url, title: domain, description: url, richPreviewType: 0, doNotPlayInline: true },
      });
    };
  });

  __d('WAWebForwardMessagesToChat', ['WAWebCollections', 'WAWebMsgKey', 'WAWebLidMigrationUtils', 'WAWebSendMsgChatAction'], function (t, require, r, o, a, i, l) {
    var COPY = ['type', 'body', 'mimetype', 'filename', 'size', 'filehash', 'encFilehash', 'mediaKey',
      'mediaKeyTimestamp', 'directPath', 'deprecatedMms3Url', 'lat', 'lng', 'loc', 'vcardFormattedName'];
    // forwardMessagesToChats({msgs, chats, includeCaption, appendedText}) -> true; throws when a
    // message cannot be forwarded (revoked, polls, …).
    l.forwardMessagesToChats = function (opts) {
      var MsgKey = require('WAWebMsgKey');
      var msgs = (opts && opts.msgs) || [];
      var chats = (opts && opts.chats) || [];
      return Promise.all(chats.map(function (chat) {
        return Promise.all(msgs.map(function (m) {
          if (['revoked', 'poll_creation', 'protocol'].indexOf(m.type) >= 0) return Promise.reject(new Error('This message cannot be forwarded'));
          var from = require('WAWebLidMigrationUtils').getMeUserLidOrJidForChat(chat);
          return MsgKey.newId().then(function (id) {
            var participant = chat.id.isGroup() ? from : undefined;
            var key = new MsgKey({ from: from, to: chat.id, id: id, participant: participant, selfDir: 'out' });
            var data = { id: key, from: from, to: chat.id, participant: participant, isForwarded: true, forwardingScore: (m.forwardingScore || 0) + 1 };
            COPY.forEach(function (f) { var v = m.get ? m.get(f) : m[f]; if (v != null) data[f] = v; });
            if (opts.includeCaption && m.caption != null) data.caption = m.caption;
            return require('WAWebSendMsgChatAction').addAndSendMsgToChat(chat, data)[1];
          });
        }));
      })).then(function () { return true; });
    };
  });
})();
