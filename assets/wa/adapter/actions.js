// wafleet page adapter, part: actions — acting on a message already in a chat (joined into one
// script with the other parts; see core.js and send.js). Reaction, edit, delete for everyone and
// forward, through WhatsApp Web's own actions; each is a send type of `sendSpec` (send.js).
//
// Optional capabilities, checked at each call: a build without one answers
// `unsupported_wa_web: missing …` for that message and the session keeps working.

  const ACTION_SURFACE = {
    reaction: [['WAWebSendReactionMsgAction.sendReactionToMsg']],
    edit: [['WAWebSendMessageEditAction.sendMessageEdit']],
    delete: [['WAWebChatSendMessages.sendRevokeMsgs']],
    forward: [['WAWebForwardMessagesToChat.forwardMessagesToChats']],
  };

  function needAction(type) {
    const missing = missingOf({ [type]: ACTION_SURFACE[type] });
    if (missing.length > 0) throw new Error('unsupported_wa_web: missing ' + missing.join(', '));
  }

  // The target must be a message of the chat the request names.
  async function targetIn(to, serialized) {
    const chat = await getChat(to);
    const msg = msgOf(serialized, 'wa_id');
    if (!msg.id.remote || !msg.id.remote.equals(chat.id)) throw new Error('wa_id: not a message of ' + widString(chat.id));
    return { chat: chat, msg: msg };
  }

  // The newest message of mine in `chat` that is not one of `before`: what an action added.
  function addedSince(chat, before) {
    const all = req('WAWebCollections').Msg.getModelsArray();
    for (let i = all.length - 1; i >= 0; i--) {
      const m = all[i];
      if (m.id && m.id.fromMe && m.id.remote && m.id.remote.equals(chat.id) && !before.has(String(m.id._serialized))) return m;
    }
    return null;
  }

  function ids() {
    return new Set(req('WAWebCollections').Msg.getModelsArray().map((m) => String(m.id && m.id._serialized)));
  }

  // An action's own message (reaction, edit, revoke) has its own key on the wire; the answer
  // carries it when WhatsApp Web adds it to the message collection, else null (the engine then
  // names it `<type>:<target>`).
  function idOf(added, target) {
    return { id: added ? widString(added.id._serialized) : null, target: widString(target.id._serialized) };
  }

  Object.assign(ACTIONS, {
    reaction: async (to, spec) => {
      needAction('reaction');
      const t = await targetIn(to, spec.wa_id);
      const before = ids();
      await req('WAWebSendReactionMsgAction').sendReactionToMsg(t.msg, String(spec.emoji || ''));
      return idOf(addedSince(t.chat, before), t.msg);
    },
    edit: async (to, spec) => {
      needAction('edit');
      const t = await targetIn(to, spec.wa_id);
      const before = ids();
      await req('WAWebSendMessageEditAction').sendMessageEdit(t.msg, String(spec.text), {});
      // A failed edit does not reject: WhatsApp Web marks the original instead.
      if (t.msg.isSendFailure) throw new Error('edit failed' + (t.msg.errorCode != null ? ': error code ' + String(t.msg.errorCode) : ''));
      return idOf(addedSince(t.chat, before), t.msg);
    },
    delete: async (to, spec) => {
      needAction('delete');
      const t = await targetIn(to, spec.wa_id);
      const before = ids();
      await req('WAWebChatSendMessages').sendRevokeMsgs(t.chat, { type: 'message', list: [t.msg] }, { clearMedia: true });
      return idOf(addedSince(t.chat, before), t.msg);
    },
    forward: async (to, spec) => {
      needAction('forward');
      const chat = await getChat(to);
      const msg = msgOf(spec.wa_id, 'wa_id');
      const before = ids();
      await req('WAWebForwardMessagesToChat').forwardMessagesToChats({ msgs: [msg], chats: [chat], includeCaption: true });
      const added = addedSince(chat, before);
      if (!added) throw new Error('the forwarded message did not appear in the chat');
      return { id: widString(added.id._serialized), target: widString(msg.id._serialized) };
    },
  });
