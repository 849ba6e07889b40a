/*
 * wafleet simulator, chunk 5: chats, history and contact actions, shaped as WhatsApp Web's own
 * modules (docs/wa-surface.md, "Chats"): each chat's message chunk (`chat.msgs`, with
 * `msgLoadState` and `head()`), WAWebChatLoadMessages.loadEarlierMsgs over
 * MsgCollection.loadMessagesQuery, WAWebUpdateUnreadChatAction.sendSeen over
 * WAWebChatSeenBridge, WAWebSetArchiveChatAction.setArchive over WAWebChatArchiveBridge,
 * WAWebChatStateBridge, WAWebContactProfilePicThumbBridge.requestProfilePicFromServer,
 * WAWebBlockContactAction and WAWebBlocklistCollection.
 *
 * What reaches WhatsApp's servers goes to the simulator server (`load_msgs`, `chat_action`),
 * which records it for the control API; a chat arrives from the server with only its newest
 * messages, so reading further back loads earlier pages as WhatsApp Web does.
 */
(function () {
  'use strict';
  var __d = window.__d;

  // --- the server round trip of these modules (not a WhatsApp module) -------------------------
  __d('WAWebSimChatRpc', ['WAWebSimInternal'], function (t, require, r, o, a, i, l) {
    var internal = require('WAWebSimInternal');
    l.call = function (msg) {
      if (!internal.transport || !internal.transport.isOpen()) return Promise.reject(new Error('socket is not connected'));
      var req = internal.nextReq++;
      return new Promise(function (resolve, reject) {
        internal.pending.set(req, { resolve: resolve, reject: reject });
        internal.transport.send(Object.assign({ req: req }, msg));
      });
    };
    // A non-200 answer as WhatsApp's backend raises it.
    l.check = function (answer) {
      if (answer && answer.status === 200) return answer;
      var E = require('WAWebBackendErrors').ServerStatusCodeError;
      throw new E(answer ? answer.status : 500, 'simulated server status');
    };
  });

  // --- each chat's message chunk ------------------------------------------------------------------
  __d('WAWebChatMsgsCollection', ['WAWebCollection', 'WAWebCollections'], function (t, require, r, o, a, i, l) {
    var BaseCollection = require('WAWebCollection').BaseCollection;
    var C = require('WAWebCollections');
    // Ordered by time (earlier pages are inserted in front), with the load state WhatsApp's
    // loaders read and set.
    function ChatMsgsCollection() {
      BaseCollection.call(this, C.MsgModel);
      this.msgLoadState = { noEarlierMsgs: false, isLoadingEarlierMsgs: false, isLoadingRecentMsgs: false };
    }
    ChatMsgsCollection.prototype = Object.create(BaseCollection.prototype);
    ChatMsgsCollection.prototype.constructor = ChatMsgsCollection;
    ChatMsgsCollection.prototype.add = function (items, opts) {
      var out = BaseCollection.prototype.add.call(this, items, opts);
      this._models.sort(function (x, y) { return (x.t || 0) - (y.t || 0); });
      return out;
    };
    ChatMsgsCollection.prototype.head = function () { return this._models[0]; };
    l.ChatMsgsCollection = ChatMsgsCollection;

    // `chat.msgs`: the chat's chunk, made on first use; every message of the chat that the Msg
    // collection gets is in it.
    var msgsKey = '__simMsgs';
    Object.defineProperty(C.ChatModel.prototype, 'msgs', {
      configurable: true,
      get: function () {
        if (!this[msgsKey]) Object.defineProperty(this, msgsKey, { value: new ChatMsgsCollection() });
        return this[msgsKey];
      },
    });
    function chatOf(msg) {
      var remote = msg && msg.id && msg.id.remote;
      return remote ? C.Chat.get(remote) : undefined;
    }
    C.Msg.on('add', function (msg) {
      var chat = chatOf(msg);
      if (chat && !chat.msgs.get(msg.id)) chat.msgs.add(msg);
    });
    C.Msg.on('remove', function (msg) {
      var chat = chatOf(msg);
      if (chat) chat.msgs.remove(msg);
    });

    // MsgCollection.loadMessagesQuery({anchor, count, direction}): the message store's page
    // before (or after) an anchor, as message attributes, oldest first.
    Object.defineProperty(C.Msg, 'loadMessagesQuery', {
      configurable: true, enumerable: false, writable: true,
      value: function (q) {
        var anchor = q && q.anchor;
        var remote = anchor && anchor.remote ? String(anchor.remote._serialized || anchor.remote) : null;
        if (!remote) return Promise.reject(new Error('loadMessagesQuery: no anchor'));
        if (q.direction !== 'before') return Promise.resolve([]);
        return require('WAWebSimChatRpc').call({
          t: 'load_msgs', chat: remote, before: anchor.id && anchor.fromMe !== undefined ? anchor.id : null,
          count: Number(q.count) || 50,
        }).then(function (answer) {
          // WhatsApp's loader retries, then rejects with 404 for an unknown chat.
          if (!answer || answer.status !== 200) throw 404;
          return answer;
        });
      },
    });
  });

  // Messages of a chat from the server, as Msg models (not new: they are history).
  __d('WAWebSimHistory', ['WAWebCollections', 'WAWebChatMsgsCollection', 'WAWebMsgKey', 'WAWebWidFactory', 'WAWebUserPrefsMeUser'], function (t, require, r, o, a, i, l) {
    var C = require('WAWebCollections');
    var WF = require('WAWebWidFactory');
    l.add = function (chat, rows) {
      var MsgKey = require('WAWebMsgKey');
      var me = require('WAWebUserPrefsMeUser').getMaybeMePnUser();
      return rows.map(function (m) {
        var key = new MsgKey({ fromMe: !!m.from_me, remote: chat.id, id: m.id });
        var found = C.Msg.get(key);
        if (found) return found;
        return C.Msg.add({
          id: key, from: m.from_me ? me : chat.id, to: m.from_me ? chat.id : me, body: m.body, type: 'chat',
          t: m.ts, ack: m.from_me ? 3 : 1, self: m.from_me ? 'out' : 'in', local: false, isNewMsg: false,
        });
      });
    };
    // A chat from the server: created or updated, with its newest messages.
    l.chat = function (v) {
      var wid = WF.createWid(v.id);
      if (wid.isUser()) C.Contact.__simEnsure(wid);
      var attrs = {
        name: v.name, unreadCount: v.unread, archive: !!v.archive, pin: v.pin || undefined,
        muteExpiration: v.mute || 0, t: v.t,
      };
      var chat = C.Chat.get(wid);
      if (chat) chat.set(attrs);
      else chat = C.Chat.add(Object.assign({ id: wid, isGroup: wid.isGroup() }, attrs));
      l.add(chat, v.msgs || []);
      chat.msgs.msgLoadState.noEarlierMsgs = !v.earlier;
      return chat;
    };
    l.contact = function (v) {
      var wid = WF.createWid(v.id);
      var attrs = {
        name: v.name, pushname: v.pushname, isMyContact: !!v.is_my_contact, isBusiness: !!v.is_business,
        isContactBlocked: !!v.blocked,
      };
      var c = C.Contact.get(wid);
      if (c) c.set(attrs); else c = C.Contact.add(Object.assign({ id: wid, isUser: true }, attrs));
      var list = require('WAWebBlocklistCollection').BlocklistCollection;
      if (v.blocked) { if (!list.get(wid)) list.add({ id: wid }); } else list.remove(wid);
      return c;
    };
  });

  __d('WAWebChatLoadMessages', ['WAWebCollections', 'WAWebSimHistory'], function (t, require, r, o, a, i, l) {
    // loadEarlierMsgs({chat, msgCollection?}) -> the messages it added (an empty array, with
    // msgLoadState.noEarlierMsgs set, once the history is exhausted).
    l.loadEarlierMsgs = function (args) {
      var chat = args && args.chat;
      if (!chat) return Promise.reject(new Error('loadEarlierMsgs: no chat'));
      var coll = (args && args.msgCollection) || chat.msgs;
      var state = coll.msgLoadState;
      if (state.noEarlierMsgs) return Promise.resolve();
      if (state.isLoadingEarlierMsgs) return coll.loadEarlierPromise;
      var head = coll.head();
      var anchor = head ? head.id : { remote: chat.id };
      state.isLoadingEarlierMsgs = true;
      var C = require('WAWebCollections');
      coll.loadEarlierPromise = C.Msg.loadMessagesQuery({ anchor: anchor, count: 50, direction: 'before', threadId: null })
        .then(function (answer) {
          var added = require('WAWebSimHistory').add(chat, answer.msgs || []);
          if (!answer.more) state.noEarlierMsgs = true;
          return added;
        })
        .finally(function () { state.isLoadingEarlierMsgs = false; });
      return coll.loadEarlierPromise;
    };
  });

  // --- read receipts, archive -------------------------------------------------------------------
  __d('WAWebChatSeenBridge', ['WAWebSimChatRpc'], function (t, require, r, o, a, i, l) {
    var Rpc = require('WAWebSimChatRpc');
    l.sendConversationSeen = function (args) {
      return Rpc.call({ t: 'chat_action', action: 'seen', chat: args.chat.id._serialized }).then(Rpc.check).then(function () {
        var delta = Number(args.unreadDelta) || 0;
        return { chatUnreadUpdate: { unreadCount: 0, unreadDividerOffset: 0, markedAsReadCount: delta }, fullyReadThreadIds: [] };
      });
    };
  });

  __d('WAWebUpdateUnreadChatAction', ['WAWebChatSeenBridge'], function (t, require, r, o, a, i, l) {
    // sendSeen({chat, threadId?, afterAvailable?}): nothing to do for a chat without unread
    // messages; otherwise the seen stanza, then the unread count the server answered.
    l.sendSeen = function (args) {
      var chat = args && args.chat;
      if (!chat) return Promise.reject(new Error('sendSeen: no chat'));
      if (!chat.unreadCount) return Promise.resolve();
      var delta = chat.unreadCount;
      return require('WAWebChatSeenBridge')
        .sendConversationSeen({ chat: chat, key: chat.msgs.last() ? chat.msgs.last().id : undefined, unreadDelta: delta })
        .then(function (res) { chat.set('unreadCount', res.chatUnreadUpdate.unreadCount); });
    };
  });

  __d('WAWebChatArchiveBridge', ['WAWebSimChatRpc'], function (t, require, r, o, a, i, l) {
    var Rpc = require('WAWebSimChatRpc');
    l.sendConversationArchive = function (wid, archive, key) {
      void key;
      return Rpc.call({ t: 'chat_action', action: archive ? 'archive' : 'unarchive', chat: String(wid._serialized || wid) })
        .then(function (answer) { return { status: answer.status }; });
    };
  });

  __d('WAWebSetArchiveChatAction', ['WAWebChatArchiveBridge'], function (t, require, r, o, a, i, l) {
    function ActionError() { var e = new Error('ActionError'); e.name = 'ActionError'; return e; }
    // setArchive(chat, archive, showToast): an unchanged chat rejects (ActionError); on 200 the
    // chat's archive flag changes (and an archived chat is unpinned).
    l.setArchive = function (chat, archive, showToast) {
      void showToast;
      if (!!chat.archive === !!archive) return Promise.reject(ActionError());
      return require('WAWebChatArchiveBridge').sendConversationArchive(chat.id, !!archive).then(function (res) {
        if (res.status === 200) {
          chat.set('archive', !!archive);
          if (archive) chat.set('pin', undefined);
        }
      });
    };
  });

  // --- chat states --------------------------------------------------------------------------------
  __d('WAWebChatStateBridge', ['WAWebSimChatRpc', 'WAWebWidFactory'], function (t, require, r, o, a, i, l) {
    var Rpc = require('WAWebSimChatRpc');
    // The protocol's names, as the real bridge passes them to sendChatStateProtocol.
    function send(wid, state) {
      var id = require('WAWebWidFactory').createWid(wid)._serialized;
      return Rpc.call({ t: 'chat_action', action: 'chatstate', chat: id, state: state }).then(Rpc.check).then(function () {});
    }
    l.sendChatStatePaused = function (wid) { return send(wid, 'idle'); };
    l.sendChatStateRecording = function (wid) { return send(wid, 'recording_audio'); };
    l.sendChatStateComposing = function (wid, bot) { void bot; return send(wid, 'typing'); };
  });

  // The simulated accounts are not LID-migrated: a chat state goes to the chat's own id
  // (WhatsApp: `chat.accountLid` once `shouldHaveAccountLid(chat.id)`).
  __d('WAWebPresenceChatAction', [], function (t, require, r, o, a, i, l) {
    l.getChatIdentifier = function (chat) { return chat.id; };
  });

  // --- contacts: picture, blocklist, block ------------------------------------------------------
  __d('WAWebContactProfilePicThumbBridge', ['WAWebSimChatRpc'], function (t, require, r, o, a, i, l) {
    var Rpc = require('WAWebSimChatRpc');
    // requestProfilePicFromServer({id, …}): the picture's URLs; 401/404 (none, or hidden)
    // resolve with an empty tag, 423/429 with `stale`, as WhatsApp's bridge answers.
    l.requestProfilePicFromServer = function (args) {
      var id = args.id;
      return Rpc.call({ t: 'chat_action', action: 'picture', chat: id._serialized || String(id) }).then(function (answer) {
        var now = Date.now();
        if (answer.status === 200) {
          return { id: id, eurl: answer.url, tag: String(now), previewEurl: answer.url, timestamp: now, eurlStale: false, stale: false };
        }
        if (answer.status === 401 || answer.status === 404) return { id: id, tag: '', timestamp: now, eurlStale: false, stale: false };
        if (answer.status === 423 || answer.status === 429) return { id: id, stale: true };
        return { id: id, eurlStale: false };
      });
    };
  });

  __d('WAWebBlocklistCollection', ['WAWebBaseModel', 'WAWebCollection'], function (t, require, r, o, a, i, l) {
    var B = require('WAWebBaseModel');
    var BlocklistModel = B.defineModel('Blocklist', { id: B.prop(undefined) });
    l.BlocklistCollection = new (require('WAWebCollection').BaseCollection)(BlocklistModel);
  });

  __d('WAWebBlockContactAction', ['WAWebSimChatRpc', 'WAWebBlocklistCollection'], function (t, require, r, o, a, i, l) {
    var Rpc = require('WAWebSimChatRpc');
    function setBlock(contact, block) {
      if (!!contact.isContactBlocked === block) return Promise.resolve();
      return Rpc.call({ t: 'chat_action', action: block ? 'block' : 'unblock', chat: contact.id._serialized })
        .then(Rpc.check)
        .then(function () {
          var list = require('WAWebBlocklistCollection').BlocklistCollection;
          contact.set('isContactBlocked', block);
          if (block) { if (!list.get(contact.id)) list.add({ id: contact.id }); } else list.remove(contact.id);
        });
    }
    l.blockContact = function (args) { return setBlock(args.contact, true); };
    l.unblockContact = function (contact, entryPoint) { void entryPoint; return setBlock(contact, false); };
  });

  // Every chat has its chunk from the start, as in WhatsApp Web (unless a fault removed it).
  try {
    window.__simRequire('WAWebChatMsgsCollection');
  } catch (e) {
    console.warn('no chat message chunks in this build', e);
  }
})();
