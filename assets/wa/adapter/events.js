// wafleet page adapter, part: events — what happens around messages (issue #12): reactions,
// edits, revokes ("delete for everyone"), incoming calls and contacts' presence. Reports
// `reaction`, `edited`, `revoked`, `call`, `presence`; commands `rejectCall(callId)` and
// `subscribePresence(chat)`. Every module here is optional: a build without one loses that
// event (one `error` report naming it), never the session. Names and where they were read in
// WhatsApp Web's own sources: docs/wa-surface.md, "C2", "C4", "C5" and "Events (issue #12)".

  // A bounded insertion-ordered map: the page lives for days, the ids it remembers must not grow.
  function bounded(max) {
    const m = new Map();
    return {
      get: (k) => m.get(k),
      has: (k) => m.has(k),
      set: (k, v) => {
        m.delete(k);
        m.set(k, v);
        if (m.size > max) m.delete(m.keys().next().value);
      },
    };
  }

  const keyString = (k) => (k ? widString(k._serialized || k) : null);
  const seconds = (v) => (typeof v === 'number' && isFinite(v) ? v : null);

  function eventUnavailable(what, missing) {
    report('error', { where: 'events.' + what, message: 'unsupported_wa_web: ' + missing + ' is missing; no ' + what + ' events' });
  }

  // --- reactions ---
  //
  // Every reaction, decrypted or not, new or from history, goes through the reaction table's
  // `bulkUpsert` (WAWebAddonReactionTableMode). It is also re-entered by `markAsRead` with
  // `read: true`, so a record is reported only when its (id, text) pair is new.
  const reactionsSeen = bounded(4096);
  function reportReaction(d) {
    if (!d) return;
    const id = keyString(d.id || d.msgKey);
    const parent = d.reactionParentKey || d.parentMsgKey;
    const target = keyString(parent);
    if (id === null || target === null) return;
    const emoji = d.reactionText === undefined || d.reactionText === null ? '' : String(d.reactionText);
    if (reactionsSeen.get(id) === emoji) return;
    reactionsSeen.set(id, emoji);
    const sender = d.author || d.from || d.senderUserJid;
    const group = parent && parent.remote && String(keyString(parent.remote) || '').endsWith('@g.us');
    report('reaction', {
      id: id,
      target: target,
      emoji: emoji,
      from: group ? keyString(parent.remote) : widString(sender),
      from_pn: phoneOf(sender),
      author: group ? widString(sender) : null,
      chat: parent && parent.remote ? keyString(parent.remote) : null,
      from_me: !!(d.id && d.id.fromMe),
      timestamp_ms: seconds(d.reactionTimestamp !== undefined ? d.reactionTimestamp : d.timestamp),
    });
  }

  function attachReactions() {
    const ok = wrap('WAWebAddonReactionTableMode.reactionTableMode.bulkUpsert', (datas) => {
      (Array.isArray(datas) ? datas : [datas]).forEach(reportReaction);
    });
    if (!ok) eventUnavailable('reaction', 'WAWebAddonReactionTableMode.reactionTableMode.bulkUpsert');
  }

  // --- edits and revokes (the Msg collection) ---

  // The last text this page saw of each message, for `previous_text`.
  const texts = bounded(4096);
  const textOf = (m) => (typeof m.body === 'string' ? m.body : typeof m.caption === 'string' ? m.caption : null);
  const revokedSeen = bounded(4096);

  function reportRevoke(msg) {
    if (!msg || msg.type !== 'revoked') return;
    // The stored revoke may carry a new key (WAWebRevoke.getMsgKeyAfterRevoke); the revoked
    // message is `protocolMessageKey`.
    const key = msg.protocolMessageKey || msg.id;
    const id = keyString(key);
    if (id === null || revokedSeen.has(id)) return;
    revokedSeen.set(id, true);
    const k = msg.id || {};
    report('revoked', {
      id: id,
      chat: keyString(k.remote) || widString(k.fromMe ? msg.to : msg.from),
      from: widString(msg.from),
      author: widString(msg.author),
      from_me: !!(key && key.fromMe),
      timestamp: seconds(msg.t),
    });
  }

  function reportEdit(msg) {
    if (!msg || !msg.latestEditMsgKey) return;
    const id = keyString(msg.id);
    if (id === null) return;
    const text = textOf(msg);
    const previous = texts.has(id) ? texts.get(id) : null;
    if (previous === text) return;
    texts.set(id, text);
    const ms = seconds(msg.latestEditSenderTimestampMs);
    report('edited', {
      id: id,
      chat: keyString((msg.id || {}).remote),
      from: widString(msg.author || msg.from),
      text: text,
      previous: previous,
      timestamp: ms !== null ? Math.floor(ms / 1000) : seconds(msg.t),
    });
  }

  function attachMsgEvents() {
    const Msg = req('WAWebCollections').Msg;
    Msg.on('add', (msg) => {
      if (!msg) return;
      if (msg.type === 'revoked') return reportRevoke(msg);
      // A reaction that reaches the Msg collection (older builds) is a reaction, not a message.
      if (msg.type === 'reaction') return reportReaction(msg);
      const id = keyString(msg.id);
      if (id !== null && textOf(msg) !== null) texts.set(id, textOf(msg));
    });
    Msg.on('change:type', (msg) => reportRevoke(msg));
    // WhatsApp Web's own UI listens to this one for "edited" (the body changes for other reasons
    // too: a ciphertext placeholder being decrypted).
    Msg.on('change:latestEditMsgKey', (msg) => reportEdit(msg));
  }

  // --- calls ---

  const callsSeen = bounded(1024);
  // WhatsApp's module exports the collection as its default (`r("WAWebCallCollection")`);
  // `require` gives the exports object, so the collection is its `default` — or the object
  // itself in a build that exports it directly.
  function callCollection() {
    const m = lookup('WAWebCallCollection');
    const c = m && typeof m.on === 'function' ? m : m ? m.default : null;
    return c && typeof c.on === 'function' ? c : null;
  }

  function reportCall(call) {
    if (!call || call.outgoing) return;
    const id = call.id === undefined || call.id === null ? null : String(call.id);
    if (id === null || callsSeen.has(id)) return;
    callsSeen.set(id, true);
    const offer = seconds(call.offerTime);
    report('call', {
      id: id,
      from: widString(call.peerJid),
      from_pn: phoneOf(call.peerJid),
      video: !!call.isVideo,
      group: !!call.isGroup,
      // offerTime is in seconds in current builds; a millisecond value is scaled down.
      timestamp: offer !== null && offer > 1e11 ? Math.floor(offer / 1000) : offer,
    });
  }

  function attachCalls() {
    const Calls = callCollection();
    if (!Calls) return eventUnavailable('call', 'WAWebCallCollection');
    Calls.on('add', (call) => reportCall(call));
  }

  // --- presence ---

  const PRESENCE_TYPES = ['available', 'unavailable', 'typing', 'recording_audio', 'idle'];
  function presenceCollection() {
    return lookup('WAWebPresenceCollection.PresenceCollection') || null;
  }

  function reportChatstate(presence, cs) {
    if (!cs || PRESENCE_TYPES.indexOf(cs.type) < 0) return;
    const chat = widString(presence.id);
    if (chat === null) return;
    const who = presence.isGroup ? cs.id : presence.id;
    report('presence', {
      chat: chat,
      from: phoneOf(who) || widString(who),
      state: String(cs.type),
      last_seen: seconds(cs.t),
    });
  }

  // A presence model holds one chat state (1:1) or a collection of them (a group's members,
  // `chatstates`); WAWebChangePresenceHandlerAction sets their `type`.
  const presenceWatched = new WeakSet();
  function watchPresence(p) {
    if (!p || presenceWatched.has(p)) return;
    presenceWatched.add(p);
    if (p.chatstate && typeof p.chatstate.on === 'function') {
      p.chatstate.on('change:type', (cs) => reportChatstate(p, cs || p.chatstate));
    }
    if (p.chatstates && typeof p.chatstates.on === 'function') {
      p.chatstates.on('change:type', (cs) => reportChatstate(p, cs));
    }
  }

  function attachPresence() {
    const P = presenceCollection();
    if (!P || typeof P.on !== 'function') return eventUnavailable('presence', 'WAWebPresenceCollection.PresenceCollection');
    P.on('add', watchPresence);
    P.forEach(watchPresence);
  }

  ON_READY.push({ where: 'events.reactions', fn: attachReactions });
  ON_READY.push({ where: 'events.messages', fn: attachMsgEvents });
  ON_READY.push({ where: 'events.calls', fn: attachCalls });
  ON_READY.push({ where: 'events.presence', fn: attachPresence });

  Object.assign(COMMANDS, {
    // Rejects an incoming call the way WhatsApp's clients do: a `call` stanza with a `reject`
    // child naming the call and its creator (WAWap + WADeprecatedSendIq).
    rejectCall: (callId) =>
      guard(async () => {
        const Calls = callCollection();
        if (!Calls) throw new Error('unsupported_wa_web: WAWebCallCollection');
        if (!present('WAWap.wap') || !present('WADeprecatedSendIq.deprecatedCastStanza')) {
          throw new Error('unsupported_wa_web: WAWap.wap / WADeprecatedSendIq.deprecatedCastStanza');
        }
        const call = Calls.get(String(callId));
        if (!call) throw new Error('no such call: ' + String(callId).slice(0, 64));
        const Wap = req('WAWap');
        const peer = widString(call.peerJid);
        const stanza = Wap.wap('call', { id: Wap.generateId(), from: widString(meWid()), to: peer }, [
          Wap.wap('reject', { 'call-id': String(call.id), 'call-creator': peer, count: '0' }),
        ]);
        await req('WADeprecatedSendIq').deprecatedCastStanza(stanza);
        return { rejected: String(call.id) };
      }),

    // Subscribes to a chat's presence as WhatsApp Web does when its user opens the chat:
    // `PresenceCollection.find` subscribes (1:1 chats by LID; a PN is mapped first).
    subscribePresence: (chat) =>
      guard(async () => {
        const P = presenceCollection();
        if (!P || typeof P.find !== 'function') throw new Error('unsupported_wa_web: WAWebPresenceCollection.PresenceCollection');
        let wid = req('WAWebWidFactory').createWid(String(chat));
        if (wid.server === 'c.us') {
          const lid = lookup('WAWebApiContact.getCurrentLid') ? req('WAWebApiContact').getCurrentLid(wid) : null;
          if (!lid) throw new Error('no LID known for ' + widString(wid) + ': WhatsApp subscribes presence by LID');
          wid = lid;
        }
        const presence = await P.find(wid);
        watchPresence(P.get(wid) || presence);
        return { chat: widString(wid) };
      }),
  });
