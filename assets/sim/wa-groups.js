/*
 * wafleet simulator, chunk 5: groups — WhatsApp Web's group jobs as real clients call them
 * (docs/wa-surface.md "Groups"): WAWebGroupCreateJob.createGroup,
 * WAWebGroupModifyParticipantsJob.{add,remove,promote,demote}GroupParticipants,
 * WAWebGroupInviteAction.{queryGroupInviteCode,revokeGroupInvite},
 * WAWebGroupModifyInfoJob.{setGroupSubject,setGroupDescription} and
 * WAWebExitGroupAction.sendExitGroup. Each sends one group IQ to the simulated server and
 * resolves with the job's own answer shape, or rejects with ServerStatusCodeError.
 *
 * The server's group notifications (`group_notice`, WhatsApp's w:gp2) update the group's
 * metadata and add a `gp2` message (`subtype`, `recipients`, `author`) to the group's chat, for
 * changes made by anyone, as WhatsApp Web does.
 */
(function () {
  'use strict';
  var __d = window.__d;

  __d('WAWebSimGroupIq', ['WAWebSimInternal', 'WAWebBackendErrors'], function (t, require, r, o, a, i, l) {
    var internal = require('WAWebSimInternal');
    l.iq = function (op, fields) {
      if (!internal.transport || !internal.transport.isOpen()) return Promise.reject(new Error('socket is not connected'));
      var req = internal.nextReq++;
      var msg = Object.assign({ t: 'group_iq', req: req, op: op }, fields || {});
      return new Promise(function (resolve, reject) {
        internal.pending.set(req, { resolve: resolve, reject: reject });
        internal.transport.send(msg);
      });
    };
    // The app's handler for the answers (wa-app.js routes `group_result` / `group_error` here).
    l.__simAnswer = function (m) {
      var q = internal.pending.get(m.req);
      if (!q) return;
      internal.pending.delete(m.req);
      if (m.t === 'group_result') q.resolve(m.result);
      else q.reject(new (require('WAWebBackendErrors').ServerStatusCodeError)(m.code, m.text));
    };
  });

  function widStr(w) { return w == null ? undefined : (w._serialized || String(w)); }
  function userOf(p) { return widStr(p && (p.lid || p.phoneNumber || p)); }

  __d('WAWebGroupCreateJob', ['WAWebSimGroupIq', 'WAWebWidFactory'], function (t, require, r, o, a, i, l) {
    var WF = require('WAWebWidFactory');
    // createGroup({title, …}, [{phoneNumber, lid?}], extra) ->
    // {wid, subject, creator, ts, participants: [{wid, error}], invitedOutContacts}
    l.createGroup = function (args, participants, extra) {
      var users = (participants || []).map(userOf).concat((extra || []).map(widStr));
      return require('WAWebSimGroupIq').iq('create', { participants: users, value: String(args && args.title || '') }).then(function (res) {
        return {
          wid: WF.createWid(res.wid), subject: res.subject, creator: WF.createWid(res.creator), ts: res.ts,
          participants: res.participants.map(function (p) { return { wid: WF.createWid(p.wid), error: p.error, type: 'participant' }; }),
          invitedOutContacts: (res.invitedOutContacts || []).map(function (c) { return { phoneNumberWid: WF.createWid(c.phoneNumberWid), code: c.code }; }),
        };
      });
    };
  });

  __d('WAWebGroupModifyParticipantsJob', ['WAWebSimGroupIq', 'WAWebWidFactory'], function (t, require, r, o, a, i, l) {
    var WF = require('WAWebWidFactory');
    function run(op, gid, users) {
      return require('WAWebSimGroupIq').iq(op, { group: widStr(gid), participants: users }).then(function (res) {
        return {
          status: res.status,
          participants: res.participants.map(function (p) { return { userWid: WF.createWid(p.userWid), username: null, code: p.code, invite_code: null, invite_code_exp: null }; }),
          invitedOutContacts: (res.invitedOutContacts || []).map(function (c) { return { phoneNumberWid: WF.createWid(c.phoneNumberWid), code: c.code }; }),
        };
      });
    }
    l.addGroupParticipants = function (gid, participants, extra) {
      return run('add', gid, (participants || []).map(userOf).concat((extra || []).map(widStr)));
    };
    l.removeGroupParticipants = function (gid, wids) { return run('remove', gid, (wids || []).map(widStr)); };
    l.promoteGroupParticipants = function (gid, wids, lidMode) { void lidMode; return run('promote', gid, (wids || []).map(widStr)); };
    l.demoteGroupParticipants = function (gid, wids, lidMode) { void lidMode; return run('demote', gid, (wids || []).map(widStr)); };
  });

  // Takes the GroupMetadata model and stores the code on it (`inviteCode`), as WhatsApp's does.
  __d('WAWebGroupInviteAction', ['WAWebSimGroupIq'], function (t, require, r, o, a, i, l) {
    function run(op, meta) {
      return require('WAWebSimGroupIq').iq(op, { group: widStr(meta.id) }).then(function (res) {
        meta.inviteCode = res.code;
      });
    }
    l.queryGroupInviteCode = function (meta) { return run('invite', meta); };
    l.revokeGroupInvite = function (meta) { return run('invite_reset', meta); };
  });

  __d('WAWebGroupModifyInfoJob', ['WAWebSimGroupIq'], function (t, require, r, o, a, i, l) {
    l.setGroupSubject = function (gid, subject) {
      return require('WAWebSimGroupIq').iq('subject', { group: widStr(gid), value: String(subject) }).then(function () {});
    };
    // A null body deletes the description.
    l.setGroupDescription = function (gid, body, descId, descPrev) {
      void descId; void descPrev;
      var fields = { group: widStr(gid) };
      if (body != null) fields.value = String(body);
      return require('WAWebSimGroupIq').iq('description', fields).then(function () {});
    };
  });

  // sendExitGroup(chat) -> Promise<bool>.
  __d('WAWebExitGroupAction', ['WAWebSimGroupIq'], function (t, require, r, o, a, i, l) {
    l.sendExitGroup = function (chat) {
      return require('WAWebSimGroupIq').iq('leave', { group: widStr(chat.id) }).then(function () { return true; });
    };
    l.localExitGroup = function () { return Promise.resolve(); };
  });

  // The page side of a group notification: new metadata, then the gp2 message.
  __d('WAWebSimGroupNotice', ['WAWebSimInternal', 'WAWebCollections', 'WAWebWidFactory', 'WAWebMsgKey', 'WAWebApiContact'], function (t, require, r, o, a, i, l) {
    var internal = require('WAWebSimInternal');
    var WF = require('WAWebWidFactory');
    l.__simApply = function (m) {
      if (!internal.mePn) return;
      var C = require('WAWebCollections');
      (m.group.mappings || []).forEach(function (x) { require('WAWebApiContact').__simLearn(x.pn, x.lid); });
      C.GroupMetadata.__simUpsert(m.group);
      var MsgKey = require('WAWebMsgKey');
      var key = new MsgKey({ fromMe: false, remote: m.group.id, id: m.id, participant: m.author });
      if (C.Msg.get(key)) return;
      C.Msg.add({
        id: key, from: WF.createWid(m.group.id), to: internal.mePn, author: m.author ? WF.createWid(m.author) : undefined,
        type: 'gp2', subtype: m.subtype, recipients: m.recipients.map(function (w) { return WF.createWid(w); }),
        t: m.ts, isNewMsg: true, self: 'in', local: false, ack: 1,
      });
    };
  });
})();
