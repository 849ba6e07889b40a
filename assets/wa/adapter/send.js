// wafleet page adapter, part: send — text and media (joined into one script with the other parts; see
// core.js). Text and media go through WhatsApp Web's own chat lookup, message key and send action;
// media through its own upload pipeline. Commands: sendText, sendMedia, sendSpec (every send type
// of issue 12: text with reply, mentions and link preview, media, voice notes, stickers, location,
// contact cards and polls here; reaction, edit, delete and forward in actions.js).

  function toJid(to) {
    const s = String(to || '').trim();
    if (s.includes('@')) return s;
    return s.replace(/[^0-9]/g, '') + '@c.us';
  }

  async function getChat(to) {
    const wid = req('WAWebWidFactory').createWid(toJid(to));
    let chat = req('WAWebCollections').Chat.get(wid);
    if (!chat) {
      const found = await req('WAWebFindChatAction').findOrCreateLatestChat(wid);
      chat = found && found.chat ? found.chat : found;
    }
    if (!chat) throw new Error('no chat for ' + widString(wid));
    return chat;
  }

  // Who sends, as WhatsApp addresses it: the account's LID in `@lid` chats and in groups that
  // address by LID, its phone number otherwise. Group messages carry the sender as participant.
  function addressing(chat) {
    const me = req('WAWebUserPrefsMeUser');
    const pn = me.getMaybeMePnUser();
    const lid = me.getMaybeMeLidUser();
    const server = chat.id && chat.id.server;
    const group = server === 'g.us';
    const meta = group ? chat.groupMetadata : null;
    const byLid = server === 'lid' || !!(meta && meta.isLidAddressingMode);
    const from = byLid ? lid : pn;
    if (!from) throw new Error(byLid ? 'this account has no LID yet' : 'not logged in');
    return { from: from, participant: group ? from : undefined };
  }

  async function send(to, fields) {
    if (!loaded()) throw new Error('WhatsApp Web is not loaded');
    const chat = await getChat(to);
    const who = addressing(chat);
    const MsgKey = req('WAWebMsgKey');
    const keyFields = { from: who.from, to: chat.id, id: await MsgKey.newId(), selfDir: 'out' };
    if (who.participant) keyFields.participant = who.participant;
    const key = new MsgKey(keyFields);
    const msg = Object.assign(
      {
        id: key,
        ack: 0,
        from: who.from,
        to: chat.id,
        local: true,
        self: 'out',
        t: Math.floor(Date.now() / 1000),
        isNewMsg: true,
        type: 'chat',
      },
      who.participant ? { participant: who.participant, author: who.participant } : {},
      typeof fields === 'function' ? await fields(chat) : fields
    );
    const result = req('WAWebSendMsgChatAction').addAndSendMsgToChat(chat, msg);
    // WhatsApp Web returns [msgPromise, sendResultPromise]; the message is ours once added.
    if (Array.isArray(result) && result.length > 0) await result[0];
    else await result;
    return { id: widString(key._serialized || key) };
  }

  const MEDIA_TYPES = ['image', 'video', 'audio', 'ptt', 'document', 'sticker'];
  function mediaType(mimetype, requested) {
    if (requested && MEDIA_TYPES.includes(requested)) return requested;
    const m = String(mimetype || '');
    if (m.startsWith('image/')) return 'image';
    if (m.startsWith('video/')) return 'video';
    if (m.startsWith('audio/')) return 'audio';
    return 'document';
  }

  // A media entry's value, whether WhatsApp Web exposes it as a getter method (its own
  // WAWebMediaUpdateMsg calls `getMediaKey()` …) or as an attribute.
  function entryValue(entry, attr, method) {
    if (method && typeof entry[method] === 'function') return entry[method]();
    return entry[attr];
  }

  // WhatsApp Web's own media pipeline: prepare the file, encrypt and upload it, and return the
  // message fields that reference the upload. There is no other way: media that did not go
  // through the upload is not media WhatsApp can deliver.
  async function uploadMedia(media) {
    if (!(await probeLazy())) throw new Error('unsupported_wa_web: media upload modules are missing');
    const type = mediaType(media.mimetype, media.type);
    const raw = atob(String(media.data));
    const bytes = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    const mimetype = String(media.mimetype);
    const name = media.filename ? String(media.filename) : 'file';
    const file = new File([new Blob([bytes], { type: mimetype })], name, { type: mimetype, lastModified: Date.now() });
    const OpaqueData = req('WAWebMediaOpaqueData');
    const opaque = await OpaqueData.createFromData(file, mimetype);
    const prep = req('WAWebPrepRawMedia').prepRawMedia(opaque, {
      asDocument: type === 'document',
      isPtt: type === 'ptt',
      asSticker: type === 'sticker',
      isAudio: type === 'audio',
    });
    const mediaData = await prep.waitForPrep();
    const mediaObject = req('WAWebMediaStorage').getOrCreateMediaObject(mediaData.filehash);
    if (type === 'document') mediaData.type = 'document';
    const mmsType = req('WAWebMmsMediaTypes').msgToMediaType({ type: mediaData.type, isGif: mediaData.isGif });
    if (mediaData.mediaBlob && typeof mediaData.mediaBlob.url === 'function') {
      mediaData.renderableUrl = mediaData.mediaBlob.url();
    }
    // Model attributes live in backing fields behind accessors: only toJSON() carries them.
    mediaObject.consolidate(mediaData.toJSON());
    const uploaded = await req('WAWebMediaMmsV4Upload').uploadMedia({
      mimetype: mediaData.mimetype,
      mediaObject: mediaObject,
      mediaType: mmsType,
    });
    // Failures resolve, with a kind and no entry.
    const entry = uploaded && uploaded.kind === 'success' ? uploaded.mediaEntry : null;
    if (!entry) throw new Error('media upload failed: ' + String((uploaded && uploaded.kind) || 'no result'));
    return Object.assign({}, mediaData.toJSON(), {
      type: mediaData.type,
      mimetype: mediaData.mimetype || mimetype,
      deprecatedMms3Url: entryValue(entry, 'deprecatedMms3Url'),
      directPath: entryValue(entry, 'directPath'),
      mediaKey: entryValue(entry, 'mediaKey', 'getMediaKey'),
      mediaKeyTimestamp: entryValue(entry, 'mediaKeyTimestamp', 'getMediaKeyTimestamp'),
      filehash: mediaObject.filehash,
      encFilehash: entryValue(entry, 'encFilehash', 'getEncfilehash'),
      size: mediaObject.size,
      streamingSidecar: entry.sidecar,
      firstFrameSidecar: entry.firstFrameSidecar,
      caption: media.caption ? String(media.caption) : undefined,
      filename: media.filename ? String(media.filename) : undefined,
    });
  }

  Object.assign(COMMANDS, {
    sendText: (to, text) => guard(() => send(to, { body: String(text), type: 'chat' })),

    // media: {data: base64, mimetype, filename?, caption?, type?}
    sendMedia: (to, media) => guard(async () => send(to, await uploadMedia(media))),
  });

  // === every send type (sendSpec) ===

  // The Msg model of a serialized message key this page knows, or an error naming the field.
  function msgOf(serialized, field) {
    const key = req('WAWebMsgKey').fromString(String(serialized));
    const msg = req('WAWebCollections').Msg.get(key);
    if (!msg) throw new Error(field + ': no message ' + String(serialized) + ' in this session');
    return msg;
  }

  // A reply: the quoted message's context as WhatsApp Web builds it, `msgContextInfo(chat.id)`
  // of the quoted Msg model (quotedMsg, quotedStanzaID, quotedParticipant, quotedRemoteJid),
  // spread into the message data.
  function quoteFields(serialized, chat) {
    const quoted = msgOf(serialized, 'reply_to');
    if (typeof quoted.msgContextInfo === 'function') return quoted.msgContextInfo(chat.id);
    const id = quoted.id;
    const sender = id.participant || quoted.author || (id.fromMe ? quoted.from : id.remote);
    return {
      quotedStanzaID: id.id,
      quotedParticipant: sender,
      quotedRemoteJid: id.remote,
      quotedMsg: { type: quoted.type, body: quoted.body, caption: quoted.caption },
    };
  }

  const URL_RE = /\bhttps?:\/\/[^\s<>"']+/i;

  // WhatsApp Web's own link preview (WAWebLinkPreviewChatAction.getLinkPreview: the phone
  // fetches it for the linked device). Optional: without the module, or without an answer, the
  // text goes out without a preview.
  // The link is WALinkify.findLink(text) ({url, domain, suspiciousCharacters}) where the build
  // has it, else the first http(s) URL; the message data gets the preview and subtype "url".
  function findLink(text) {
    if (present('WALinkify.findLink')) {
      try {
        return req('WALinkify').findLink(text) || null;
      } catch (e) {
        return null;
      }
    }
    const m = URL_RE.exec(text);
    if (!m) return null;
    try {
      return { url: m[0], domain: new URL(m[0]).hostname };
    } catch (e) {
      return null;
    }
  }

  async function previewFields(text, chat) {
    if (!present('WAWebLinkPreviewChatAction.getLinkPreview')) return null;
    const link = findLink(text);
    if (!link) return null;
    let preview;
    try {
      preview = await req('WAWebLinkPreviewChatAction').getLinkPreview(link, chat);
    } catch (e) {
      return null;
    }
    const data = preview && (preview.data || preview);
    if (!data || typeof data !== 'object') return null;
    const out = { matchedText: String(link.url), subtype: 'url' };
    ['title', 'description', 'canonicalUrl', 'richPreviewType', 'thumbnail', 'doNotPlayInline']
      .forEach((k) => { if (data[k] != null) out[k] = data[k]; });
    return out;
  }

  function widOf(s) {
    return req('WAWebWidFactory').createWid(toJid(s));
  }

  // A poll's encryption secret (votes are encrypted to it), 32 random bytes as WhatsApp makes it.
  function messageSecret() {
    return crypto.getRandomValues(new Uint8Array(32));
  }

  const SPEC_MEDIA = { image: 'image', video: 'video', document: 'document', audio: 'audio', voice: 'ptt', sticker: 'sticker' };

  async function sendSpec(to, spec) {
    const type = String(spec && spec.type);
    if (ACTIONS[type]) return ACTIONS[type](to, spec);
    const quote = spec.reply_to ? (chat) => quoteFields(spec.reply_to, chat) : () => ({});
    if (type === 'text') {
      let preview = null;
      const sent = await send(to, async (chat) => {
        const fields = Object.assign({ type: 'chat', body: String(spec.text) }, quote(chat));
        if (Array.isArray(spec.mentions) && spec.mentions.length) fields.mentionedJidList = spec.mentions.map(widOf);
        if (spec.link_preview) {
          preview = await previewFields(String(spec.text), chat);
          if (preview) Object.assign(fields, preview);
        }
        return fields;
      });
      if (spec.link_preview) sent.linkPreview = !!preview;
      return sent;
    }
    if (SPEC_MEDIA[type]) {
      const media = Object.assign({}, spec.media, { type: SPEC_MEDIA[type], caption: spec.caption });
      const fields = await uploadMedia(media);
      return send(to, (chat) => Object.assign(fields, quote(chat)));
    }
    if (type === 'location') {
      const l = spec.location;
      const loc = [l.name, l.address].filter(Boolean).join('\n');
      return send(to, Object.assign({ type: 'location', lat: Number(l.latitude), lng: Number(l.longitude) }, loc ? { loc: loc } : {}));
    }
    if (type === 'contact') {
      return send(to, { type: 'vcard', vcardFormattedName: String(spec.contact.name), body: String(spec.vcard) });
    }
    if (type === 'poll') {
      const p = spec.poll;
      return send(to, {
        type: 'poll_creation',
        pollName: String(p.name),
        pollOptions: p.options.map((name, localId) => ({ name: String(name), localId: localId })),
        // 0 lets a voter pick any number of options, 1 exactly one.
        pollSelectableOptionsCount: p.multiple ? 0 : 1,
        messageSecret: messageSecret(),
      });
    }
    throw new Error('unknown message type ' + type);
  }

  // Filled by actions.js: reaction, edit, delete, forward.
  const ACTIONS = {};

  Object.assign(COMMANDS, {
    sendSpec: (to, spec) => guard(() => { if (!loaded()) throw new Error('WhatsApp Web is not loaded'); return sendSpec(to, spec); }),
  });
