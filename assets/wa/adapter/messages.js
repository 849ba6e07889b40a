// wafleet page adapter, part: messages — inbound messages and acks (joined into one script with the other
// parts; see core.js). Reports `message` for every new message WhatsApp Web adds and `ack` for
// every delivery state change.

  function phoneOf(wid) {
    if (!wid || wid.server !== 'lid') return null;
    try {
      return widString(req('WAWebApiContact').getPhoneNumber(wid));
    } catch (e) {
      return null;
    }
  }

  // The serialized key of the message this one quotes: WhatsApp Web keeps its parts apart
  // (`quotedStanzaID`, `quotedRemoteJid`, `quotedParticipant`).
  function quotedKey(msg, chat) {
    const id = msg.quotedStanzaID;
    if (!id) return null;
    const remote = widString(msg.quotedRemoteJid) || chat;
    const participant = widString(msg.quotedParticipant);
    let me = [];
    try {
      const prefs = req('WAWebUserPrefsMeUser');
      me = [widString(prefs.getMaybeMePnUser()), widString(prefs.getMaybeMeLidUser())];
    } catch (e) {
      // not logged in: nothing quoted is ours
    }
    const fromMe = participant !== null && me.includes(participant);
    const group = typeof remote === 'string' && remote.endsWith('@g.us');
    return String(fromMe) + '_' + remote + '_' + id + (group && participant ? '_' + participant : '');
  }

  function pushName(msg) {
    if (msg.notifyName) return String(msg.notifyName);
    try {
      const sender = msg.author || msg.from;
      const contact = sender ? req('WAWebCollections').Contact.get(sender) : null;
      return contact && contact.pushname ? String(contact.pushname) : null;
    } catch (e) {
      return null;
    }
  }

  const text = (v) => (v === undefined || v === null ? null : String(v));
  const num = (v) => (typeof v === 'number' && isFinite(v) ? v : null);

  // The structured part of a location, contact card or poll, from the model's own fields
  // (docs/wa-surface.md C1); the worker checks and bounds it.
  function structured(msg) {
    switch (msg.type) {
      case 'location':
        return { location: { latitude: num(msg.lat), longitude: num(msg.lng), description: text(msg.loc) } };
      case 'vcard':
        return { contact: { name: text(msg.vcardFormattedName), vcards: [text(msg.body)] } };
      case 'multi_vcard':
        return {
          contact: {
            name: null,
            vcards: (Array.isArray(msg.vcardList) ? msg.vcardList : []).slice(0, 10).map((c) => text(c && c.vcard)),
          },
        };
      case 'poll_creation':
        return {
          poll: {
            name: text(msg.pollName),
            options: (Array.isArray(msg.pollOptions) ? msg.pollOptions : []).slice(0, 32).map((o) => text(o && o.name)),
            multiple: msg.pollSelectableOptionsCount !== 1,
          },
        };
      default:
        return null;
    }
  }

  function serializeMsg(msg) {
    const id = msg.id || {};
    const chat = widString(id.remote) || widString(id.fromMe ? msg.to : msg.from);
    const mentions = Array.isArray(msg.mentionedJidList) ? msg.mentionedJidList.map(widString) : [];
    return {
      id: widString(id._serialized || id),
      chat: chat,
      from: widString(msg.from),
      from_pn: phoneOf(msg.from),
      to: widString(msg.to),
      author: widString(msg.author),
      author_pn: phoneOf(msg.author),
      push_name: pushName(msg),
      from_me: !!id.fromMe,
      body: text(msg.body),
      caption: text(msg.caption),
      type: msg.type ? String(msg.type) : 'chat',
      timestamp: typeof msg.t === 'number' ? msg.t : null,
      ack: typeof msg.ack === 'number' ? msg.ack : null,
      quoted_wa_id: quotedKey(msg, chat),
      mentions: mentions.filter((m) => m !== null).slice(0, 256),
      forwarded: !!msg.isForwarded,
      mimetype: msg.mimetype || null,
      filename: msg.filename || null,
      size: typeof msg.size === 'number' ? msg.size : null,
      filehash: typeof msg.filehash === 'string' ? msg.filehash : null,
      content: structured(msg),
    };
  }

  // Ids already reported, so that a message is reported once even when WhatsApp Web both changes
  // a ciphertext placeholder's type and adds a fresh model with the same id. Bounded.
  const reported = new Set();
  const REPORTED_MAX = 4096;
  // Models that are not messages of their own: a reaction, a revoke's stored result and protocol
  // messages (edits, revokes in transit) are reported by events.js as what they are.
  const NOT_MESSAGES = ['reaction', 'revoked', 'protocol'];
  function reportMessageOnce(msg) {
    if (NOT_MESSAGES.indexOf(msg.type) >= 0) return;
    const m = serializeMsg(msg);
    if (m.id === null || reported.has(m.id)) return;
    reported.add(m.id);
    if (reported.size > REPORTED_MAX) reported.delete(reported.values().next().value);
    report('message', m);
  }

  let messagesAttached = false;
  function attachMessages() {
    if (messagesAttached) return;
    messagesAttached = true;
    const Msg = req('WAWebCollections').Msg;
    Msg.on('add', (msg) => {
      if (!msg || !msg.isNewMsg) return;
      // Group notifications (`gp2`: members, subject, …) are not messages; groups.js reports them.
      if (msg.type === 'gp2') return;
      if (msg.type === 'ciphertext') {
        // Not decrypted yet. WhatsApp Web either changes this model's type, or removes it and
        // adds a fresh model with the same id (caught by this same `add` handler).
        msg.once('change:type', (m) => {
          if (m.type !== 'ciphertext') reportMessageOnce(m);
        });
        return;
      }
      reportMessageOnce(msg);
    });
    Msg.on('change:ack', (msg, ack) => {
      const id = msg && msg.id ? widString(msg.id._serialized || msg.id) : null;
      if (id !== null) report('ack', { id: id, ack: Number(ack) });
    });
  }

  ON_READY.push({ where: 'messages', fn: attachMessages });
