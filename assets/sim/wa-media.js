/*
 * wafleet simulator, lazy bundle: the media pipeline (docs/wa-surface.md §5, findings §4).
 *
 * Not loaded with the page: the app bootloads it (Bootloader.loadModules) once the socket is
 * CONNECTED, so before that `require('WAWebMediaMmsV4Upload')` throws and
 * `requireDeferred('WAWebMediaMmsV4Upload').load()` waits.
 *
 * The upload is WhatsApp's scheme: a random 32-byte media key, HKDF-SHA256 expanded to
 * iv | cipher key | MAC key | ref key with the media type's info string, AES-256-CBC of the
 * bytes, then the first 10 bytes of HMAC-SHA256(iv | ciphertext) appended. The encrypted file
 * goes to the simulator's media server (POST /mms/<type>/<token>), which keeps it; the message
 * then references it by directPath/mediaKey/encFilehash/filehash and the server checks all of
 * them (it decrypts with the media key as a recipient would). WebCrypto needs a secure context
 * (https, or a loopback origin); elsewhere uploadMedia resolves {kind: "error"}.
 */
(function () {
  'use strict';
  var __d = window.__d;
  var INFO = { image: 'WhatsApp Image Keys', sticker: 'WhatsApp Image Keys', video: 'WhatsApp Video Keys',
    audio: 'WhatsApp Audio Keys', ptt: 'WhatsApp Audio Keys', document: 'WhatsApp Document Keys' };

  function b64(buf) { return window.__simRequire('WABase64').encodeB64(buf); }
  function sha256(buf) { return crypto.subtle.digest('SHA-256', buf); }

  __d('WAWebMediaOpaqueData', [], function (t, n, r, o, a, i, l) {
    function OpaqueData(blob) {
      this._blob = blob;
      this.type = blob.type;
      this.size = blob.size;
      this._url = null;
    }
    OpaqueData.prototype.url = function () { return this._url || (this._url = URL.createObjectURL(this._blob)); };
    OpaqueData.prototype.formData = function () { return this._blob; };
    OpaqueData.prototype.arrayBuffer = function () { return this._blob.arrayBuffer(); };
    OpaqueData.prototype.retain = function () { return this; };
    OpaqueData.prototype.autorelease = function () { return this; };
    l.OpaqueData = OpaqueData;
    // createFromData(blobOrFile, mimetype) -> Promise<OpaqueData>.
    l.createFromData = function (data, mimetype) {
      if (!(data instanceof Blob)) return Promise.reject(new Error('createFromData: a Blob or File is required'));
      var blob = mimetype && data.type !== mimetype ? new Blob([data], { type: mimetype }) : data;
      return Promise.resolve(new OpaqueData(blob));
    };
  });

  __d('WAWebMmsMediaTypes', [], function (t, n, r, o, a, i, l) {
    l.MEDIA_TYPES = { IMAGE: 'image', VIDEO: 'video', AUDIO: 'audio', PTT: 'ptt', DOCUMENT: 'document', STICKER: 'sticker', GIF: 'gif' };
    l.msgToMediaType = function (m) {
      if (!m || !INFO[m.type]) throw new Error('msgToMediaType: not a media type: ' + (m && m.type));
      return m.type === 'video' && m.isGif ? 'gif' : m.type;
    };
    l.getMsgMediaType = function (msg) { return l.msgToMediaType({ type: msg.type, isGif: msg.isGif }); };
  });

  __d('WAWebMediaData', ['WAWebBaseModel'], function (t, require, r, o, a, module) {
    var B = require('WAWebBaseModel');
    var p = B.prop;
    module.exports = B.defineModel('MediaData', {
      type: p(undefined), mimetype: p(undefined), filename: p(undefined), size: p(undefined),
      filehash: p(undefined), mediaBlob: p(undefined), renderableUrl: p(undefined), isGif: p(false),
      mediaStage: p('INIT'), duration: p(undefined),
    });
  });

  __d('WAWebMediaStorage', [], function (t, n, r, o, a, i, l) {
    var objects = new Map();
    function MediaObject(filehash) {
      this.filehash = filehash;
      this.size = undefined;
      this.type = undefined;
      this.mediaBlob = undefined;
      this.uploadStage = 'INIT';
      var list = [];
      this.entries = {
        addEntry: function (e) { list.push(e); return e; },
        getEntries: function () { return list.slice(); },
      };
    }
    MediaObject.prototype.consolidate = function (json) {
      var self = this;
      ['size', 'type', 'mediaBlob', 'mimetype', 'filename'].forEach(function (k) { if (json && json[k] !== undefined) self[k] = json[k]; });
    };
    l.getOrCreateMediaObject = function (filehash) {
      if (!objects.has(filehash)) objects.set(filehash, new MediaObject(filehash));
      return objects.get(filehash);
    };
  });

  __d('WAWebMediaEntry', [], function (t, n, r, o, a, module) {
    function MediaEntry(f) {
      this.deprecatedMms3Url = f.deprecatedMms3Url;
      this.directPath = f.directPath;
      this.type = f.type;
      this.sidecar = undefined;
      this.firstFrameSidecar = undefined;
      this._mediaKey = f.mediaKey;
      this._mediaKeyTimestamp = f.mediaKeyTimestamp;
      this._encFilehash = f.encFilehash;
    }
    MediaEntry.prototype.getMediaKey = function () { return this._mediaKey; };
    MediaEntry.prototype.getMediaKeyTimestamp = function () { return this._mediaKeyTimestamp; };
    MediaEntry.prototype.getEncfilehash = function () { return this._encFilehash; };
    module.exports = MediaEntry;
  });

  __d('WAWebMediaMmsV4Upload', ['WAWebMediaEntry', 'WAWebSimBuild'], function (t, require, r, o, a, i, l) {
    var MediaEntry = require('WAWebMediaEntry');
    function encrypt(plain, type) {
      var mediaKey = crypto.getRandomValues(new Uint8Array(32));
      var info = new TextEncoder().encode(INFO[type === 'gif' ? 'video' : type]);
      return crypto.subtle.importKey('raw', mediaKey, 'HKDF', false, ['deriveBits']).then(function (k) {
        return crypto.subtle.deriveBits({ name: 'HKDF', hash: 'SHA-256', salt: new Uint8Array(32), info: info }, k, 112 * 8);
      }).then(function (bits) {
        var x = new Uint8Array(bits);
        var iv = x.slice(0, 16), cipherKey = x.slice(16, 48), macKey = x.slice(48, 80);
        return crypto.subtle.importKey('raw', cipherKey, 'AES-CBC', false, ['encrypt']).then(function (ck) {
          return crypto.subtle.encrypt({ name: 'AES-CBC', iv: iv }, ck, plain);
        }).then(function (enc) {
          return crypto.subtle.importKey('raw', macKey, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']).then(function (mk) {
            var signed = new Uint8Array(16 + enc.byteLength);
            signed.set(iv, 0);
            signed.set(new Uint8Array(enc), 16);
            return crypto.subtle.sign('HMAC', mk, signed);
          }).then(function (mac) {
            var file = new Uint8Array(enc.byteLength + 10);
            file.set(new Uint8Array(enc), 0);
            file.set(new Uint8Array(mac).slice(0, 10), enc.byteLength);
            return { file: file, mediaKey: mediaKey };
          });
        });
      });
    }
    // uploadMedia({mimetype, mediaObject, mediaType}) -> Promise<{kind, mediaEntry?}>; failures
    // resolve (kind "error"), as in WhatsApp.
    l.uploadMedia = function (opts) {
      var mo = opts && opts.mediaObject;
      var type = opts && opts.mediaType;
      return Promise.resolve().then(function () {
        if (!crypto.subtle) throw new Error('WebCrypto is unavailable (not a secure context)');
        if (!mo || !mo.mediaBlob || !INFO[type === 'gif' ? 'video' : type]) throw new Error('uploadMedia: mediaObject with a blob and a media type are required');
        return mo.mediaBlob.arrayBuffer();
      }).then(function (plain) {
        return encrypt(plain, type);
      }).then(function (x) {
        return sha256(x.file).then(function (h) {
          var encFilehash = b64(h);
          var token = encFilehash.replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
          return fetch('/mms/' + type + '/' + token, { method: 'POST', body: x.file, headers: { 'content-type': 'application/octet-stream' } })
            .then(function (res) {
              if (!res.ok) throw new Error('upload refused: HTTP ' + res.status);
              return res.json();
            }).then(function (j) {
              var entry = new MediaEntry({
                deprecatedMms3Url: j.url, directPath: j.direct_path, type: type,
                mediaKey: b64(x.mediaKey), mediaKeyTimestamp: Math.floor(Date.now() / 1000), encFilehash: encFilehash,
              });
              mo.entries.addEntry(entry);
              mo.uploadStage = 'UPLOADED';
              return { kind: 'success', mediaEntry: entry };
            });
        });
      }).catch(function (e) {
        console.error('uploadMedia failed', e);
        if (mo) mo.uploadStage = 'UPLOAD_FAILED';
        return { kind: 'error', error: String(e && e.message || e) };
      });
    };
  });

  __d('WAWebMediaPrep', ['WAWebMediaData', 'WAWebMediaStorage', 'WAWebMmsMediaTypes', 'WAWebMediaMmsV4Upload', 'WAWebMsgKey', 'WAWebLidMigrationUtils', 'WAWebSendMsgChatAction'], function (t, require, r, o, a, i, l) {
    function MediaPrep(baseType, mediaDataPromise) {
      this.baseType = baseType;
      this._prep = mediaDataPromise;
      this.mediaData = null;
      var self = this;
      mediaDataPromise.then(function (md) { self.mediaData = md; }, function () {});
    }
    MediaPrep.prototype.waitForPrep = function () { return this._prep; };
    // WhatsApp's own one-call send: upload, then addAndSendMsgToChat with the entry's fields.
    MediaPrep.prototype.sendToChat = function (args) {
      var chat = args && args.chat;
      var options = (args && args.options) || {};
      return this._prep.then(function (md) {
        var mo = require('WAWebMediaStorage').getOrCreateMediaObject(md.filehash);
        mo.consolidate(md.toJSON());
        var mediaType = require('WAWebMmsMediaTypes').msgToMediaType({ type: md.type, isGif: md.isGif });
        return require('WAWebMediaMmsV4Upload').uploadMedia({ mimetype: md.mimetype, mediaObject: mo, mediaType: mediaType })
          .then(function (up) {
            if (up.kind !== 'success') return { messageSendResult: 'ERROR_UPLOAD', error: up.error };
            var e = up.mediaEntry;
            var MsgKey = require('WAWebMsgKey');
            var from = require('WAWebLidMigrationUtils').getMeUserLidOrJidForChat(chat);
            return MsgKey.newId().then(function (id) {
              var isGroup = chat.id.isGroup();
              var data = Object.assign({}, md.toJSON(), {
                id: new MsgKey({ from: from, to: chat.id, id: id, selfDir: 'out', participant: isGroup ? from : undefined }),
                from: from, to: chat.id, participant: isGroup ? from : undefined, ack: 0, local: true, self: 'out',
                isNewMsg: true, t: Math.floor(Date.now() / 1000), caption: options.caption,
                filename: options.filename || md.filename,
                directPath: e.directPath, deprecatedMms3Url: e.deprecatedMms3Url, mediaKey: e.getMediaKey(),
                mediaKeyTimestamp: e.getMediaKeyTimestamp(), encFilehash: e.getEncfilehash(), size: mo.size,
              });
              delete data.mediaBlob;
              var pair = require('WAWebSendMsgChatAction').addAndSendMsgToChat(chat, data);
              return Promise.all(pair).then(function (res) {
                return { messageSendResult: res[1].messageSendResult, msg: res[0] };
              });
            });
          });
      });
    };
    l.MediaPrep = MediaPrep;
  });

  // WhatsApp's media-server errors (WAWebMmsClientErrors): HttpStatusCodeError subclasses
  // with `status` and `name`; MediaNotFoundError (404) is what a download of a file the
  // server no longer has throws.
  __d('WAWebMmsClientErrors', [], function (t, n, r, o, a, i, l) {
    function make(status, name) {
      function E(message) {
        var e = new Error(message || name);
        Object.setPrototypeOf(e, E.prototype);
        e.status = status;
        e.name = name;
        return e;
      }
      E.prototype = Object.create(Error.prototype);
      E.prototype.constructor = E;
      return E;
    }
    l.MediaNotFoundError = make(404, 'MediaNotFoundError');
    l.MediaTooLargeError = make(413, 'MediaTooLargeError');
    l.MediaInvalidError = make(415, 'MediaInvalidError');
    l.MMSUnauthorizedError = make(401, 'MMSUnauthorizedError');
    l.MMSForbiddenError = make(403, 'MMSForbiddenError');
    l.MMSThrottleError = make(507, 'MMSThrottleError');
  });

  // WhatsApp's download manager (WAWebDownloadManager.downloadManager.downloadAndMaybeDecrypt):
  // takes the message's media fields with the MMS media type and a download QPL (annotated
  // unconditionally, as WhatsApp does), fetches the encrypted file by directPath and hash,
  // checks the MAC, decrypts and checks the plaintext against filehash; resolves the
  // plaintext ArrayBuffer. A missing key throws (MediaDecryptionError in WhatsApp), a 404/410
  // from the media server MediaNotFoundError, another status an error with that `status`.
  __d('WAWebDownloadManager', ['WAWebMmsClientErrors'], function (t, require, r, o, a, i, l) {
    function b64decode(s) { return window.__simRequire('WABase64').decodeB64(s); }
    function eq(a, b) {
      if (a.length !== b.length) return false;
      for (var i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
      return true;
    }
    function decrypt(file, mediaKey, type) {
      var info = new TextEncoder().encode(INFO[type === 'gif' ? 'video' : type]);
      return crypto.subtle.importKey('raw', mediaKey, 'HKDF', false, ['deriveBits']).then(function (k) {
        return crypto.subtle.deriveBits({ name: 'HKDF', hash: 'SHA-256', salt: new Uint8Array(32), info: info }, k, 112 * 8);
      }).then(function (bits) {
        var x = new Uint8Array(bits);
        var iv = x.slice(0, 16), cipherKey = x.slice(16, 48), macKey = x.slice(48, 80);
        var enc = file.slice(0, file.length - 10), mac = file.slice(file.length - 10);
        var signed = new Uint8Array(16 + enc.length);
        signed.set(iv, 0);
        signed.set(enc, 16);
        return crypto.subtle.importKey('raw', macKey, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']).then(function (mk) {
          return crypto.subtle.sign('HMAC', mk, signed);
        }).then(function (full) {
          if (!eq(new Uint8Array(full).slice(0, 10), mac)) throw new Error('MediaDecryptionError: the MAC does not match');
          return crypto.subtle.importKey('raw', cipherKey, 'AES-CBC', false, ['decrypt']);
        }).then(function (ck) {
          return crypto.subtle.decrypt({ name: 'AES-CBC', iv: iv }, ck, enc);
        });
      });
    }
    function DownloadManager() {}
    DownloadManager.prototype.downloadAndMaybeDecrypt = function (opts) {
      var Errors = require('WAWebMmsClientErrors');
      var qpl = opts.downloadQpl;
      var type = opts.type;
      qpl.addAnnotations({ string: { mediaType: type, rawMimeType: opts.mimetype || 'application/octet-stream' } });
      return Promise.resolve().then(function () {
        if (!crypto.subtle) throw new Error('WebCrypto is unavailable (not a secure context)');
        if (!INFO[type === 'gif' ? 'video' : type]) throw new Error('downloadAndMaybeDecrypt: unknown media type ' + type);
        if (opts.mediaKey == null) throw new Error('MediaDecryptionError: decryptMedia: missing key for type ' + type);
        if (opts.encFilehash == null) throw new Error('MediaDecryptionError: decryptMedia: missing encFilehash for type ' + type);
        if (!opts.directPath) throw new Error('downloadAndMaybeDecrypt: no directPath');
        qpl.addPoint('download_and_decrypt_start');
        var token = String(opts.encFilehash).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
        return fetch(opts.directPath + '?hash=' + encodeURIComponent(token) + '&mms-type=' + encodeURIComponent(type), { signal: opts.signal });
      }).then(function (res) {
        if (res.status === 404 || res.status === 410) throw new Errors.MediaNotFoundError('media server: HTTP ' + res.status);
        if (!res.ok) {
          var e = new Error('media server: HTTP ' + res.status);
          e.status = res.status;
          throw e;
        }
        return res.arrayBuffer();
      }).then(function (buf) {
        var file = new Uint8Array(buf);
        if (file.length < 26) throw new Error('MediaDecryptionError: the file is too short');
        return decrypt(file, b64decode(opts.mediaKey), type);
      }).then(function (plain) {
        return sha256(plain).then(function (h) {
          if (b64(h) !== opts.filehash) throw new Error('MediaHashMismatch: the plaintext does not match filehash');
          qpl.addPoint('download_and_decrypt_end', { int: { byteLength: plain.byteLength } });
          return plain;
        });
      });
    };
    l.downloadManager = new DownloadManager();
  });

  __d('WAWebPrepRawMedia', ['WAWebMediaPrep', 'WAWebMediaData'], function (t, require, r, o, a, i, l) {
    function baseType(mime, opts) {
      if (opts.asSticker) return 'sticker';
      if (opts.asDocument) return 'document';
      if (opts.isPtt) return 'ptt';
      if (/^image\//.test(mime)) return 'image';
      if (/^video\//.test(mime)) return 'video';
      if (/^audio\//.test(mime)) return 'audio';
      return 'document';
    }
    // prepRawMedia(opaqueData, {asDocument, isPtt, asGif, isAudio, asSticker}) -> MediaPrep.
    l.prepRawMedia = function (opaque, opts) {
      opts = opts || {};
      var MediaData = require('WAWebMediaData');
      var type = baseType(opaque && opaque.type || '', opts);
      var prep = Promise.resolve().then(function () {
        if (!opaque || typeof opaque.arrayBuffer !== 'function') throw new Error('prepRawMedia: not an OpaqueData');
        return opaque.arrayBuffer();
      }).then(function (buf) { return sha256(buf); }).then(function (h) {
        return new MediaData({
          type: type, mimetype: opaque.type, size: opaque.size, filehash: b64(h), mediaBlob: opaque,
          filename: opaque._blob && opaque._blob.name, isGif: !!opts.asGif, mediaStage: 'RESOLVED',
        });
      });
      return new (require('WAWebMediaPrep').MediaPrep)(type, prep);
    };
  });
})();
