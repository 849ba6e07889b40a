// wafleet page adapter, part: media — inbound media download (joined into one script with the
// other parts; see core.js). Command: mediaRead.
//
// The file comes through WhatsApp Web's own download manager
// (`WAWebDownloadManager.downloadManager.downloadAndMaybeDecrypt`, docs/wa-surface.md C6), which
// fetches the encrypted file by the message's directPath, checks its MAC, decrypts it and checks
// the plaintext against the message's filehash. It resolves one ArrayBuffer, so the page holds
// the whole file once; the engine then reads it in bounded base64 chunks, one
// Runtime.evaluate each (`mediaRead(id, offset, length)`), and the page drops the buffer after
// the last chunk. At most MEDIA_HELD_MAX files are held, each for at most MEDIA_HELD_MS after its
// last read, so an engine that gives up mid-file does not leak the page's memory.

  const MEDIA_SURFACE = {
    download: [['WAWebDownloadManager.downloadManager', 'WAWebMmsMediaTypes.getMsgMediaType', 'WAWebCollections.Msg']],
  };
  // The types WhatsApp keeps as encrypted media (WAWebMmsMediaTypes.getMsgMediaType accepts them).
  const MEDIA_MSG_TYPES = ['image', 'video', 'ptv', 'audio', 'ptt', 'document', 'sticker'];
  const MEDIA_CHUNK_MAX = 1024 * 1024;
  const MEDIA_HELD_MAX = 4;
  const MEDIA_HELD_MS = 120000;
  const mediaHeld = new Map();

  function needMedia() {
    if (!loaded()) throw new Error('WhatsApp Web is not loaded');
    const missing = missingOf(MEDIA_SURFACE);
    if (missing.length > 0) throw new Error('unsupported_wa_web: missing ' + missing.join(', '));
  }

  // The download QPL (performance logger) WhatsApp's downloader annotates on every call; we do
  // not report WhatsApp's performance, so its points go nowhere.
  function quietQpl() {
    const qpl = { addAnnotations: () => qpl, addPoint: () => qpl, end: () => qpl, endFail: () => qpl };
    return qpl;
  }

  function mediaError(e) {
    const status = e && (e.status || e.statusCode);
    if ((e && e.name === 'MediaNotFoundError') || status === 404 || status === 410) {
      return new Error('media_expired: ' + errorText(e));
    }
    if (status !== undefined && status !== null) return new Error('wa_server_error: ' + Number(status) + ' ' + errorText(e));
    return e instanceof Error ? e : new Error(errorText(e));
  }

  function sweepMedia(now) {
    for (const [id, h] of mediaHeld) {
      if (now - h.at > MEDIA_HELD_MS) mediaHeld.delete(id);
    }
    while (mediaHeld.size >= MEDIA_HELD_MAX) mediaHeld.delete(mediaHeld.keys().next().value);
  }

  function mediaMsg(id) {
    const msg = req('WAWebCollections').Msg.get(id);
    if (!msg) throw new Error('message_not_found: WhatsApp Web has no message ' + id);
    if (!MEDIA_MSG_TYPES.includes(msg.type) || !msg.directPath || !msg.mediaKey) {
      throw new Error('no_media: message ' + id + ' has no downloadable media');
    }
    return msg;
  }

  function startDownload(id) {
    const msg = mediaMsg(id);
    const meta = {
      type: String(msg.type),
      mimetype: msg.mimetype ? String(msg.mimetype) : null,
      filename: msg.filename ? String(msg.filename) : null,
      filehash: typeof msg.filehash === 'string' ? msg.filehash : null,
    };
    const mediaType = req('WAWebMmsMediaTypes').getMsgMediaType(msg);
    const bytes = req('WAWebDownloadManager')
      .downloadManager.downloadAndMaybeDecrypt({
        directPath: msg.directPath,
        encFilehash: msg.encFilehash,
        filehash: msg.filehash,
        mediaKey: msg.mediaKey,
        mediaKeyTimestamp: msg.mediaKeyTimestamp,
        type: mediaType,
        // Without it WhatsApp checks its mimetype allowlist against application/octet-stream.
        mimetype: msg.mimetype,
        chatWid: msg.id && msg.id.remote,
        isViewOnce: !!msg.isViewOnce,
        downloadQpl: quietQpl(),
        signal: new AbortController().signal,
      })
      .then((buf) => new Uint8Array(buf));
    // A failed download is reported by the read that awaits it; never an unhandled rejection.
    bytes.catch(() => {});
    return { meta, bytes, at: Date.now() };
  }

  function b64Of(bytes) {
    let s = '';
    for (let k = 0; k < bytes.length; k += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(k, k + 0x8000));
    return btoa(s);
  }

  Object.assign(COMMANDS, {
    // id: serialized message key; offset/length: the byte range wanted (length capped at 1 MiB)
    // -> {size, type, mimetype, filename, filehash, offset, data (base64), done}. Offset 0 starts
    // the download (or joins one in flight); `done` drops the page's copy.
    mediaRead: (id, offset, length) =>
      guard(async () => {
        needMedia();
        const now = Date.now();
        const key = String(id);
        let h = mediaHeld.get(key);
        if (!h || (offset === 0 && h.failed)) {
          if (offset !== 0) throw new Error('media_restart: the page no longer holds this file; read again from 0');
          sweepMedia(now);
          h = startDownload(key);
          mediaHeld.set(key, h);
        }
        h.at = now;
        let bytes;
        try {
          bytes = await h.bytes;
        } catch (e) {
          mediaHeld.delete(key);
          throw mediaError(e);
        }
        const start = Math.max(0, Math.min(Number(offset) || 0, bytes.length));
        const n = Math.max(1, Math.min(Number(length) || MEDIA_CHUNK_MAX, MEDIA_CHUNK_MAX));
        const end = Math.min(bytes.length, start + n);
        const done = end >= bytes.length;
        if (done) mediaHeld.delete(key);
        return Object.assign({}, h.meta, { size: bytes.length, offset: start, data: b64Of(bytes.subarray(start, end)), done: done });
      }),
  });
