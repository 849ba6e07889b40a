// wafleet page adapter: the one file that knows WhatsApp Web's internals.
//
// Injected by the engine into every new document (Page.addScriptToEvaluateOnNewDocument) of a
// session's page. It waits for WhatsApp Web's own module system (`window.require` +
// `window.Debug.VERSION`), then talks to WhatsApp Web only through its modules, the way
// whatsapp-web.js does (shared/reference/whatsapp-web.md §1), and reports every fact to the engine
// through the CDP binding `__wafleet` (Runtime.addBinding): one JSON string per call, `{"t": kind,
// ...}`. The engine calls back into the page through `window.__wafleetAdapter.<command>(...)`,
// whose promises resolve to `{ok: true, ...}` or `{ok: false, error}` (never a rejection).
//
// When WhatsApp Web renames a module, this file is what changes; the Rust side only knows the
// report kinds below and the command names.
//
// Reports: version, state, qr, code, ready, message, ack, logout, loading, error.
(function () {
  'use strict';

  // Only the top-level document of an http(s) page: about:blank, iframes and workers are not
  // WhatsApp Web's app and must not get a second adapter.
  if (window.top !== window) return;
  if (location.protocol !== 'https:' && location.protocol !== 'http:') return;
  if (window.__wafleetAdapter) return;

  const BINDING = '__wafleet';
  const binding = window[BINDING];
  if (typeof binding !== 'function') return;

  // === reporting ===

  function report(kind, data) {
    try {
      binding(JSON.stringify(Object.assign({ t: kind }, data || {})));
    } catch (e) {
      // The binding disappears while the document is torn down; nothing to report to.
    }
  }

  function errorText(e) {
    if (e === undefined || e === null) return 'unknown error';
    if (typeof e === 'string') return e;
    return String(e.message || e.name || e);
  }

  // === module access ===

  const req = (name) => window.require(name);

  function moduleSystemReady() {
    try {
      return (
        typeof window.require === 'function' &&
        !!window.Debug &&
        !!window.Debug.VERSION &&
        !!req('WAWebSocketModel').Socket &&
        !!req('WAWebConnModel').Conn
      );
    } catch (e) {
      return false;
    }
  }

  function widString(w) {
    if (w === undefined || w === null) return null;
    if (typeof w === 'string') return w;
    if (w._serialized) return String(w._serialized);
    if (w.user && w.server) return w.user + '@' + w.server;
    return String(w);
  }

  function toJid(to) {
    const s = String(to || '').trim();
    if (s.includes('@')) return s;
    return s.replace(/[^0-9]/g, '') + '@c.us';
  }

  function meWid() {
    const me = req('WAWebUserPrefsMeUser');
    return me.getMaybeMePnUser() || me.getMaybeMeLidUser();
  }

  // === session state ===

  let version = null;
  let qrSeq = 0; // orders QR builds: only the newest one is reported
  let qrListener = null;
  let pairingMode = false;
  let readySent = false;
  let messagesAttached = false;
  let codeTimer = null;

  // Every part is read again for every QR: WhatsApp rotates the ADV secret with each new batch
  // of refs, so a cached secret makes every QR after a refresh unscannable.
  async function loadQrKeys() {
    const reg = await req('WAWebSignalStoreApi').waSignalStore.getRegistrationInfo();
    const noise = await req('WAWebUserPrefsInfoStore').waNoiseInfo.get();
    const b64 = req('WABase64').encodeB64;
    const adv = await req('WAWebAdvSignatureApi').getADVSecretKey();
    const platform = req('WAWebCompanionRegClientUtils').DEVICE_PLATFORM;
    return [b64(noise.staticKeyPair.pubKey), b64(reg.identityKeyPair.pubKey), adv, platform];
  }

  let lastQr = null;
  async function reportQr() {
    const seq = ++qrSeq;
    try {
      const ref = req('WAWebConnModel').Conn.ref;
      if (ref === undefined || ref === null) return;
      const keys = await loadQrKeys();
      if (seq !== qrSeq || !qrListener) return; // a newer ref or secret arrived meanwhile
      const value = [ref].concat(keys).join(',');
      if (value === lastQr) return;
      lastQr = value;
      report('qr', { value: value });
    } catch (e) {
      report('error', { where: 'qr', message: errorText(e) });
    }
  }

  function advEmitter() {
    try {
      return req('WAWebUserPrefsMultiDevice').advSecretEventEmitter || null;
    } catch (e) {
      return null;
    }
  }

  function startQr() {
    if (qrListener || pairingMode) return;
    const Conn = req('WAWebConnModel').Conn;
    qrListener = () => reportQr();
    Conn.on('change:ref', qrListener);
    const adv = advEmitter();
    if (adv) adv.on('change', qrListener);
    reportQr();
  }

  function stopQr() {
    if (!qrListener) return;
    try {
      req('WAWebConnModel').Conn.off('change:ref', qrListener);
      const adv = advEmitter();
      if (adv) adv.off('change', qrListener);
    } catch (e) {
      // ignore: the module is going away with the document
    }
    qrListener = null;
  }

  function onState(state) {
    report('state', { state: String(state) });
    if (state === 'UNPAIRED' || state === 'UNPAIRED_IDLE') {
      startQr();
    }
    if (state === 'UNPAIRED_IDLE' && !pairingMode) {
      // WhatsApp stops rotating refs after a while; ask for new ones as whatsapp-web.js does.
      try {
        req('WAWebCmd').Cmd.refreshQR();
      } catch (e) {
        report('error', { where: 'refreshQR', message: errorText(e) });
      }
    }
  }

  function serializeMsg(msg) {
    const id = msg.id || {};
    return {
      id: widString(id._serialized || id),
      from: widString(msg.from),
      to: widString(msg.to),
      from_me: !!id.fromMe,
      body: msg.body === undefined || msg.body === null ? null : String(msg.body),
      type: msg.type ? String(msg.type) : 'chat',
      timestamp: typeof msg.t === 'number' ? msg.t : null,
      ack: typeof msg.ack === 'number' ? msg.ack : null,
      mimetype: msg.mimetype || null,
      filename: msg.filename || null,
      caption: msg.caption || null,
    };
  }

  function attachMessages() {
    if (messagesAttached) return;
    messagesAttached = true;
    const Msg = req('WAWebCollections').Msg;
    Msg.on('add', (msg) => {
      if (!msg || !msg.isNewMsg) return;
      if (msg.type === 'ciphertext') {
        // Not decrypted yet: WhatsApp Web changes the type once it is.
        msg.once('change:type', (m) => report('message', serializeMsg(m)));
        return;
      }
      report('message', serializeMsg(msg));
    });
    Msg.on('change:ack', (msg, ack) => {
      const id = msg && msg.id ? widString(msg.id._serialized || msg.id) : null;
      if (id !== null) report('ack', { id: id, ack: Number(ack) });
    });
  }

  function onSynced() {
    if (readySent) return;
    readySent = true;
    stopQr();
    if (codeTimer) {
      clearInterval(codeTimer);
      codeTimer = null;
    }
    try {
      attachMessages();
    } catch (e) {
      report('error', { where: 'messages', message: errorText(e) });
    }
    let me = null;
    try {
      me = widString(meWid());
    } catch (e) {
      me = widString(req('WAWebConnModel').Conn.wid);
    }
    report('ready', { me: me, version: version });
  }

  function attach() {
    version = String(window.Debug.VERSION);
    report('version', { version: version });
    const Socket = req('WAWebSocketModel').Socket;
    const Cmd = req('WAWebCmd').Cmd;

    if (/[?&]post_logout=1/.test(location.search)) {
      report('logout', { reason: 'post_logout' });
    }

    Socket.on('change:state', (_socket, state) => onState(state));
    Socket.on('change:hasSynced', () => {
      if (Socket.hasSynced === true) onSynced();
    });
    Cmd.on('logout', () => report('logout', { reason: 'logout' }));
    Cmd.on('logout_from_bridge', () => report('logout', { reason: 'logout_from_bridge' }));
    Cmd.on('offline_progress_update_from_bridge', () => {
      try {
        const p = req('WAWebOfflineHandler').OfflineMessageHandler.getOfflineDeliveryProgress();
        report('loading', { percent: Number(p) });
      } catch (e) {
        // progress is cosmetic
      }
    });

    onState(Socket.state);
    // hasSynced may already be true: Backbone fires no change event for a value that is set.
    if (Socket.hasSynced === true) onSynced();
  }

  // === waiting for the module system ===
  //
  // WhatsApp Web defines `window.require` and `Debug.VERSION` once its last chunk has booted,
  // after `load`. There is no event for that, so the page checks on a short in-page timer
  // (nothing crosses CDP until it is there) and gives up after a deadline, which the engine
  // reports as an error so that the supervisor's STARTING watchdog takes over.

  const WAIT_STEP_MS = 100;
  const WAIT_LIMIT_MS = 180000;
  let waited = 0;
  function waitForModules() {
    if (moduleSystemReady()) {
      try {
        attach();
      } catch (e) {
        report('error', { where: 'attach', message: errorText(e) });
      }
      return;
    }
    waited += WAIT_STEP_MS;
    if (waited > WAIT_LIMIT_MS) {
      report('error', { where: 'modules', message: 'WhatsApp Web modules did not appear' });
      return;
    }
    setTimeout(waitForModules, WAIT_STEP_MS);
  }

  // === commands (called by the engine through Runtime.evaluate) ===

  async function guard(fn) {
    try {
      return Object.assign({ ok: true }, await fn());
    } catch (e) {
      return { ok: false, error: errorText(e) };
    }
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

  async function send(to, fields) {
    if (!moduleSystemReady()) throw new Error('WhatsApp Web is not loaded');
    const me = meWid();
    if (!me) throw new Error('not logged in');
    const chat = await getChat(to);
    const MsgKey = req('WAWebMsgKey');
    const key = new MsgKey({ from: me, to: chat.id, id: await MsgKey.newId(), selfDir: 'out' });
    const msg = Object.assign(
      {
        id: key,
        ack: 0,
        from: me,
        to: chat.id,
        local: true,
        self: 'out',
        t: Math.floor(Date.now() / 1000),
        isNewMsg: true,
        type: 'chat',
      },
      fields
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

  function hasModule(name) {
    try {
      req(name);
      return true;
    } catch (e) {
      return false;
    }
  }

  const UPLOAD_MODULES = [
    'WAWebMediaOpaqueData',
    'WAWebPrepRawMedia',
    'WAWebMediaStorage',
    'WAWebMmsMediaTypes',
    'WAWebMediaMmsV4Upload',
  ];

  // WhatsApp Web's own media pipeline, as whatsapp-web.js's processMediaData: prepare the file,
  // encrypt and upload it, and return the message fields that reference the upload.
  async function uploadMedia(media, type) {
    const raw = atob(String(media.data));
    const bytes = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    const mimetype = String(media.mimetype);
    const file = new File([new Blob([bytes], { type: mimetype })], media.filename ? String(media.filename) : 'file', {
      type: mimetype,
      lastModified: Date.now(),
    });
    const OpaqueData = req('WAWebMediaOpaqueData');
    const opaque = await OpaqueData.createFromData(file, file.type);
    const prep = req('WAWebPrepRawMedia').prepRawMedia(opaque, { asDocument: type === 'document' });
    const mediaData = await prep.waitForPrep();
    const mediaObject = req('WAWebMediaStorage').getOrCreateMediaObject(mediaData.filehash);
    const mediaType = req('WAWebMmsMediaTypes').msgToMediaType({ type: mediaData.type, isGif: mediaData.isGif });
    if (type === 'document') mediaData.type = 'document';
    if (!(mediaData.mediaBlob instanceof OpaqueData)) {
      mediaData.mediaBlob = await OpaqueData.createFromData(mediaData.mediaBlob, mediaData.mediaBlob.type);
    }
    mediaData.renderableUrl = mediaData.mediaBlob.url();
    mediaObject.consolidate(mediaData.toJSON());
    mediaData.mediaBlob.autorelease();
    const uploaded = await req('WAWebMediaMmsV4Upload').uploadMedia({
      mimetype: mediaData.mimetype,
      mediaObject: mediaObject,
      mediaType: mediaType,
    });
    const entry = uploaded && uploaded.mediaEntry;
    if (!entry) throw new Error('upload failed: media entry was not created');
    mediaData.set({
      clientUrl: entry.mmsUrl,
      deprecatedMms3Url: entry.deprecatedMms3Url,
      directPath: entry.directPath,
      mediaKey: entry.mediaKey,
      mediaKeyTimestamp: entry.mediaKeyTimestamp,
      filehash: mediaObject.filehash,
      encFilehash: entry.encFilehash,
      uploadhash: entry.uploadHash,
      size: mediaObject.size,
      streamingSidecar: entry.sidecar,
      firstFrameSidecar: entry.firstFrameSidecar,
    });
    return Object.assign({}, mediaData, {
      body: mediaData.preview,
      caption: media.caption ? String(media.caption) : undefined,
      filename: media.filename ? String(media.filename) : undefined,
    });
  }

  async function mediaFields(media) {
    const type = mediaType(media.mimetype, media.type);
    if (UPLOAD_MODULES.every(hasModule)) return uploadMedia(media, type);
    // Without the upload modules (the simulator), the bytes travel inline with the message.
    return {
      type: type,
      mimetype: String(media.mimetype),
      filename: media.filename ? String(media.filename) : undefined,
      caption: media.caption ? String(media.caption) : undefined,
      body: media.caption ? String(media.caption) : undefined,
      data: String(media.data),
      size: typeof media.size === 'number' ? media.size : undefined,
    };
  }

  window.__wafleetAdapter = Object.freeze({
    sendText: (to, text) => guard(() => send(to, { body: String(text), type: 'chat' })),

    // media: {data: base64, mimetype, filename?, caption?, type?}
    sendMedia: (to, media) => guard(async () => send(to, await mediaFields(media))),

    requestPairingCode: (phone, intervalMs) =>
      guard(async () => {
        if (!moduleSystemReady()) throw new Error('WhatsApp Web is not loaded');
        const digits = String(phone).replace(/[^0-9]/g, '');
        const Alt = req('WAWebAltDeviceLinkingApi');
        pairingMode = true;
        stopQr();
        const getCode = async () => {
          Alt.setPairingType('ALT_DEVICE_LINKING');
          await Alt.initializeAltDeviceLinking();
          return String(await Alt.startAltLinkingFlow(digits, true));
        };
        if (codeTimer) clearInterval(codeTimer);
        // WhatsApp expires a code after about three minutes; ask again while still unpaired.
        codeTimer = setInterval(async () => {
          const state = req('WAWebSocketModel').Socket.state;
          if (state !== 'UNPAIRED' && state !== 'UNPAIRED_IDLE') {
            clearInterval(codeTimer);
            codeTimer = null;
            return;
          }
          try {
            report('code', { code: await getCode() });
          } catch (e) {
            report('error', { where: 'pairing', message: errorText(e) });
          }
        }, Number(intervalMs) > 0 ? Number(intervalMs) : 180000);
        const code = await getCode();
        report('code', { code: code });
        return { code: code };
      }),

    logout: () =>
      guard(async () => {
        if (!moduleSystemReady()) throw new Error('WhatsApp Web is not loaded');
        await req('WAWebSocketModel').Socket.logout();
        return {};
      }),

    status: () =>
      guard(async () => {
        if (!moduleSystemReady()) return { loaded: false };
        const Socket = req('WAWebSocketModel').Socket;
        return { loaded: true, state: String(Socket.state), synced: Socket.hasSynced === true, version: version };
      }),
  });

  waitForModules();
})();
