// wafleet page adapter, part: chats — the chat list, history, chat actions and the contact list,
// picture and block (joined into one script with the other parts; see core.js). Commands:
// listChats, chatMessages, markChatRead, setChatArchive, sendChatState, listContacts,
// contactPicture, setContactBlocked.
//
// Every module here is optional: a build without it answers `unsupported_wa_web: missing …` for
// that call and the session keeps working (docs/wa-surface.md, "Chats").

  const CHAT_SURFACE = {
    chats: [['WAWebCollections.Chat']],
    history: [['WAWebChatLoadMessages.loadEarlierMsgs']],
    seen: [['WAWebUpdateUnreadChatAction.sendSeen']],
    archive: [['WAWebSetArchiveChatAction.setArchive']],
    chatState: [
      [
        'WAWebChatStateBridge.sendChatStateComposing',
        'WAWebChatStateBridge.sendChatStateRecording',
        'WAWebChatStateBridge.sendChatStatePaused',
      ],
    ],
    contacts: [['WAWebCollections.Contact']],
    picture: [['WAWebContactProfilePicThumbBridge.requestProfilePicFromServer']],
    block: [['WAWebBlockContactAction.blockContact', 'WAWebBlockContactAction.unblockContact']],
  };

  function needChats(capability) {
    if (!loaded()) throw new Error('WhatsApp Web is not loaded');
    const missing = missingOf({ [capability]: CHAT_SURFACE[capability] });
    if (missing.length > 0) throw new Error('unsupported_wa_web: missing ' + missing.join(', '));
  }

  // WhatsApp's pin is the pin time (seconds), 0/undefined when not pinned; its list shows pinned
  // chats first (newest pin first), then by the last activity `t`.
  const pinOf = (chat) => (typeof chat.pin === 'number' && chat.pin > 0 ? Math.floor(chat.pin) : 0);
  const tOf = (chat) => (typeof chat.t === 'number' && chat.t > 0 ? Math.floor(chat.t) : 0);
  function chatOrder(a, b) {
    const ai = widString(a.id);
    const bi = widString(b.id);
    return pinOf(b) - pinOf(a) || tOf(b) - tOf(a) || (ai < bi ? -1 : ai > bi ? 1 : 0);
  }

  // The chat's messages as WhatsApp Web holds them locally, oldest first (`chat.msgs`, the
  // chat's message chunk).
  function chatMsgs(chat) {
    const msgs = chat.msgs;
    if (msgs && typeof msgs.getModelsArray === 'function') return msgs.getModelsArray();
    const id = widString(chat.id);
    return req('WAWebCollections').Msg.filter((m) => m.id && widString(m.id.remote) === id);
  }

  function isMuted(chat) {
    const until = chat.muteExpiration;
    if (typeof until !== 'number' || until === 0) return false;
    return until < 0 || until * 1000 > Date.now();
  }

  function chatView(chat) {
    const id = widString(chat.id);
    const msgs = chatMsgs(chat);
    const last = msgs.length > 0 ? msgs[msgs.length - 1] : null;
    let name = chat.name || chat.formattedTitle || null;
    if (!name) {
      try {
        const c = req('WAWebCollections').Contact.get(chat.id);
        name = c ? c.name || c.pushname || null : null;
      } catch (e) {
        name = null;
      }
    }
    return {
      id: id,
      name: name === null ? null : String(name),
      unread_count: typeof chat.unreadCount === 'number' ? chat.unreadCount : 0,
      archived: !!chat.archive,
      pinned: pinOf(chat) > 0,
      pin: pinOf(chat),
      muted: isMuted(chat),
      is_group: !!(chat.isGroup || (chat.id && chat.id.server === 'g.us')),
      timestamp: tOf(chat),
      last_message: last ? serializeMsg(last) : null,
    };
  }

  function findChat(id) {
    const chat = req('WAWebCollections').Chat.get(String(id));
    if (!chat) throw new Error('chat_not_found: ' + String(id));
    return chat;
  }

  // How often one history call may ask WhatsApp Web for an earlier page (each is one
  // `loadEarlierMsgs`, a page of WAWebCollectionConstants.PAGE_SIZE from its database or the
  // phone).
  const MAX_EARLIER_LOADS = 8;

  function chatStateFn(state) {
    const Bridge = req('WAWebChatStateBridge');
    if (state === 'typing') return Bridge.sendChatStateComposing;
    if (state === 'recording') return Bridge.sendChatStateRecording;
    if (state === 'paused') return Bridge.sendChatStatePaused;
    throw new Error('invalid_state: ' + String(state));
  }

  function contactView(c) {
    const id = widString(c.id);
    const isLid = id.endsWith('@lid');
    let alt = null;
    try {
      const Api = req('WAWebApiContact');
      alt = widString(isLid ? Api.getPhoneNumber(c.id) : Api.getCurrentLid(c.id));
    } catch (e) {
      alt = null;
    }
    const pn = isLid ? alt || widString(c.phoneNumber) : id;
    let blocked = c.isContactBlocked;
    if (typeof blocked !== 'boolean') {
      const list = lookup('WAWebBlocklistCollection.BlocklistCollection');
      blocked = !!(list && list.get(c.id));
    }
    return {
      id: id,
      lid: isLid ? id : alt && alt.endsWith('@lid') ? alt : null,
      pn: pn && pn.endsWith('@c.us') ? pn : null,
      name: c.name ? String(c.name) : null,
      push_name: c.pushname ? String(c.pushname) : null,
      is_business: !!c.isBusiness,
      is_blocked: blocked,
      is_my_contact: !!c.isMyContact,
    };
  }

  function findContact(id) {
    const wid = req('WAWebWidFactory').createWid(String(id));
    const contact = req('WAWebCollections').Contact.get(wid);
    if (!contact) throw new Error('contact_not_found: ' + String(id));
    return contact;
  }

  Object.assign(COMMANDS, {
    // after: null | {pin, t, id} (the last chat of the previous page) -> {chats: [...], more}
    listChats: (after, limit) =>
      guard(async () => {
        needChats('chats');
        const all = req('WAWebCollections').Chat.getModelsArray().filter((c) => c && c.id);
        all.sort(chatOrder);
        let start = 0;
        if (after) {
          const key = { pin: Number(after.pin), t: Number(after.t), id: String(after.id) };
          start = all.findIndex((c) => chatOrder(key, { pin: pinOf(c), t: tOf(c), id: widString(c.id) }) < 0);
          if (start < 0) start = all.length;
        }
        const page = all.slice(start, start + Number(limit));
        return { chats: page.map(chatView), more: start + page.length < all.length };
      }),

    // before: serialized key or null -> {messages: newest first, more}
    chatMessages: (chatId, before, limit) =>
      guard(async () => {
        needChats('chats');
        const chat = findChat(chatId);
        const want = Number(limit);
        const olderThan = () => {
          const msgs = chatMsgs(chat);
          if (before === null) return { ok: true, msgs: msgs };
          const at = msgs.findIndex((m) => widString(m.id && (m.id._serialized || m.id)) === String(before));
          return at < 0 ? { ok: false, msgs: [] } : { ok: true, msgs: msgs.slice(0, at) };
        };
        let found = olderThan();
        let exhausted = false;
        for (let i = 0; i < MAX_EARLIER_LOADS && (!found.ok || found.msgs.length < want + 1); i++) {
          const state = chat.msgs && chat.msgs.msgLoadState;
          if (state && state.noEarlierMsgs) {
            exhausted = true;
            break;
          }
          needChats('history');
          const got = await req('WAWebChatLoadMessages').loadEarlierMsgs({ chat: chat, msgCollection: chat.msgs });
          found = olderThan();
          if (!Array.isArray(got) || got.length === 0) {
            exhausted = true;
            break;
          }
        }
        if (!found.ok) throw new Error('message_not_found: ' + String(before));
        const page = found.msgs.slice(Math.max(0, found.msgs.length - want)).reverse();
        const more = found.msgs.length > want || !exhausted;
        return { messages: page.map(serializeMsg), more: more && page.length > 0 };
      }),

    markChatRead: (chatId) =>
      guard(async () => {
        needChats('seen');
        const chat = findChat(chatId);
        await req('WAWebUpdateUnreadChatAction').sendSeen({ chat: chat, threadId: null, afterAvailable: false });
        return { unread_count: typeof chat.unreadCount === 'number' ? chat.unreadCount : 0 };
      }),

    // WAWebSetArchiveChatAction rejects a no-op change (ActionError): an unchanged chat is
    // answered as it is, so the route is idempotent.
    setChatArchive: (chatId, archive) =>
      guard(async () => {
        needChats('archive');
        const chat = findChat(chatId);
        if (!!chat.archive !== !!archive) {
          await req('WAWebSetArchiveChatAction').setArchive(chat, !!archive, false);
        }
        if (!!chat.archive !== !!archive) throw new Error('wa_server_error: 500 archive not applied');
        return { archived: !!chat.archive };
      }),

    sendChatState: (chatId, state) =>
      guard(async () => {
        needChats('chatState');
        // WhatsApp's own presence action addresses a LID-migrated account's chat state to the
        // chat's `accountLid` (WAWebPresenceChatAction.getChatIdentifier); the bare chat id is
        // for builds without it. Its automatic pause after 2.5 s is not wanted here: the API
        // caller says when to pause.
        const chat = req('WAWebCollections').Chat.get(String(chatId));
        const ident = lookup('WAWebPresenceChatAction.getChatIdentifier');
        const wid = chat && typeof ident === 'function'
          ? ident(chat)
          : req('WAWebWidFactory').createWid(String(chatId));
        await chatStateFn(state)(wid);
        return { state: String(state) };
      }),

    // after: null | the last id of the previous page; q: null | lowercase text
    listContacts: (after, limit, q) =>
      guard(async () => {
        needChats('contacts');
        const all = req('WAWebCollections')
          .Contact.getModelsArray()
          .filter((c) => c && c.id && (c.id.server === 'c.us' || c.id.server === 'lid'))
          .map(contactView)
          .filter((v) => {
            if (q === null) return true;
            return [v.id, v.pn, v.name, v.push_name].some((s) => s && s.toLowerCase().includes(q));
          });
        all.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
        const start = after === null ? 0 : all.findIndex((v) => v.id > after);
        const from = start < 0 ? all.length : start;
        const page = all.slice(from, from + Number(limit));
        return { contacts: page, more: from + page.length < all.length };
      }),

    // One server query (WAWebGetProfilePicJob underneath); 401/404 (no picture, or hidden from
    // us) resolve without eurl.
    contactPicture: (id) =>
      guard(async () => {
        needChats('picture');
        const wid = req('WAWebWidFactory').createWid(String(id));
        const pic = await req('WAWebContactProfilePicThumbBridge').requestProfilePicFromServer({ id: wid });
        if (pic && pic.stale === true && !pic.eurl) throw new Error('wa_server_error: 429 picture lookup throttled');
        return { url: pic && pic.eurl ? String(pic.eurl) : null };
      }),

    setContactBlocked: (id, blocked) =>
      guard(async () => {
        needChats('block');
        const contact = findContact(id);
        const Action = req('WAWebBlockContactAction');
        try {
          if (blocked) await Action.blockContact({ contact: contact });
          else await Action.unblockContact(contact);
        } catch (e) {
          const status = e && (e.statusCode || e.status);
          if (status !== undefined && status !== null) throw new Error('wa_server_error: ' + Number(status) + ' ' + errorText(e));
          throw e;
        }
        return { blocked: contactView(contact).is_blocked };
      }),
  });
