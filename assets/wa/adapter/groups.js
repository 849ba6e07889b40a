// wafleet page adapter, part: groups — group reads and admin actions, and participant change
// notifications (joined into one script with the other parts; see core.js). Commands:
// listGroups, getGroup, createGroup, modifyParticipants, groupInvite, setGroupSubject,
// setGroupDescription, leaveGroup. Reports `group_participants` for every `gp2` notification
// message about members (added, removed, promoted, demoted, left, joined by link).

  // Optional capabilities, checked at each call: a build without one answers
  // `unsupported_wa_web: missing …` for that call and the session keeps working.
  const GROUP_SURFACE = {
    read: [['WAWebCollections.GroupMetadata', 'WAWebWidFactory.createWid']],
    create: [['WAWebGroupCreateJob.createGroup']],
    participants: [
      [
        'WAWebGroupModifyParticipantsJob.addGroupParticipants',
        'WAWebGroupModifyParticipantsJob.removeGroupParticipants',
        'WAWebGroupModifyParticipantsJob.promoteGroupParticipants',
        'WAWebGroupModifyParticipantsJob.demoteGroupParticipants',
      ],
    ],
    invite: [['WAWebGroupInviteAction.queryGroupInviteCode', 'WAWebGroupInviteAction.revokeGroupInvite']],
    info: [['WAWebGroupModifyInfoJob.setGroupSubject', 'WAWebGroupModifyInfoJob.setGroupDescription']],
    leave: [['WAWebExitGroupAction.sendExitGroup', 'WAWebCollections.Chat']],
  };

  function needGroups(capability) {
    if (!loaded()) throw new Error('WhatsApp Web is not loaded');
    const missing = missingOf({ [capability]: GROUP_SURFACE[capability] });
    if (missing.length > 0) throw new Error('unsupported_wa_web: missing ' + missing.join(', '));
  }

  // A WhatsApp server error (ServerStatusCodeError) as `wa_server_error: <status> …`, which the
  // worker maps to its documented errors; anything else as it is.
  async function serverCall(fn) {
    try {
      return await fn();
    } catch (e) {
      const status = e && (e.statusCode || e.status);
      if (status !== undefined && status !== null) throw new Error('wa_server_error: ' + Number(status) + ' ' + errorText(e));
      throw e;
    }
  }

  const groupWid = (id) => req('WAWebWidFactory').createWid(String(id));

  // A user as the group mutation jobs take it: `{phoneNumber}` for a number, `{lid, phoneNumber}`
  // for a LID (the phone number from WhatsApp Web's own mapping, when it has one).
  async function mutationParticipant(id) {
    const wid = req('WAWebWidFactory').createWid(String(id));
    if (wid.server !== 'lid') return { phoneNumber: wid };
    let pn = null;
    try {
      pn = present('WAWebApiContact.getPhoneNumber') ? await req('WAWebApiContact').getPhoneNumber(wid) : null;
    } catch (e) {
      pn = null;
    }
    return pn ? { lid: wid, phoneNumber: pn } : { lid: wid };
  }

  function models(collection) {
    if (!collection) return [];
    if (typeof collection.getModelsArray === 'function') return collection.getModelsArray();
    if (Array.isArray(collection._models)) return collection._models;
    if (Array.isArray(collection.models)) return collection.models;
    return [];
  }

  async function otherHalf(wid) {
    try {
      return (await alternate(wid)) || null;
    } catch (e) {
      return null;
    }
  }

  async function serializeParticipant(p) {
    const id = widString(p.id);
    const isLid = typeof id === 'string' && id.endsWith('@lid');
    const other = await otherHalf(p.id);
    return {
      id: id,
      pn: isLid ? other : id,
      lid: isLid ? id : other,
      admin: !!(p.isAdmin || p.isSuperAdmin),
      super_admin: !!p.isSuperAdmin,
    };
  }

  async function serializeGroup(meta, withParticipants) {
    const parts = models(meta.participants);
    const out = {
      id: widString(meta.id),
      subject: meta.subject === undefined || meta.subject === null ? '' : String(meta.subject),
      description: meta.desc ? String(meta.desc) : null,
      owner: widString(meta.owner),
      participants_count: parts.length,
      announce: !!meta.announce,
      restrict: !!meta.restrict,
      created_at: typeof meta.creation === 'number' ? meta.creation : null,
    };
    if (withParticipants) {
      out.participants = [];
      for (const p of parts) out.participants.push(await serializeParticipant(p));
    }
    return out;
  }

  function metadataOf(id) {
    needGroups('read');
    const meta = req('WAWebCollections').GroupMetadata.get(groupWid(id));
    if (!meta) throw new Error('group_not_found: ' + String(id));
    return meta;
  }

  // Per-participant answers of the mutation jobs: `{userWid, code}` (code "200" on success).
  // Numbers without a WhatsApp account come back apart, in `invitedOutContacts` (WhatsApp Web
  // offers to invite them by SMS): they were not added, reported as 404.
  function codeOf(p) {
    if (p.code !== undefined && p.code !== null) return String(p.code);
    return p.error === undefined || p.error === null ? '200' : String(p.error);
  }
  function participantResults(result) {
    const list = result && Array.isArray(result.participants) ? result.participants : [];
    const out = list.map((p) => ({ id: widString(p.userWid || p.wid), code: codeOf(p) }));
    const invited = result && Array.isArray(result.invitedOutContacts) ? result.invitedOutContacts : [];
    for (const c of invited) out.push({ id: widString(c.phoneNumberWid), code: '404' });
    return out;
  }

  const PARTICIPANT_JOBS = {
    add: 'addGroupParticipants',
    remove: 'removeGroupParticipants',
    promote: 'promoteGroupParticipants',
    demote: 'demoteGroupParticipants',
  };

  Object.assign(COMMANDS, {
    // -> {groups: [group without participants]}
    listGroups: () =>
      guard(async () => {
        needGroups('read');
        const groups = [];
        for (const meta of models(req('WAWebCollections').GroupMetadata)) {
          groups.push(await serializeGroup(meta, false));
        }
        return { groups: groups };
      }),

    // id: "<…>@g.us" -> {group}
    getGroup: (id) => guard(async () => ({ group: await serializeGroup(metadataOf(id), true) })),

    // subject, participants: wids -> {id, subject, created_at, participants: [{id, code}]}
    createGroup: (subject, participants) =>
      guard(async () => {
        needGroups('create');
        const parts = [];
        for (const p of participants) parts.push(await mutationParticipant(p));
        const r = await serverCall(() =>
          req('WAWebGroupCreateJob').createGroup({ title: String(subject), ephemeralDuration: 0 }, parts, [])
        );
        return {
          id: widString(r.wid),
          subject: r.subject === undefined || r.subject === null ? String(subject) : String(r.subject),
          owner: widString(r.creator),
          created_at: typeof r.ts === 'number' ? r.ts : null,
          participants: participantResults(r),
        };
      }),

    // id, action: add|remove|promote|demote, participants: wids -> {participants: [{id, code}]}
    modifyParticipants: (id, action, participants) =>
      guard(async () => {
        needGroups('participants');
        const job = PARTICIPANT_JOBS[action];
        if (!job) throw new Error('unknown participant action ' + String(action));
        const meta = metadataOf(id);
        const Job = req('WAWebGroupModifyParticipantsJob');
        const gid = groupWid(id);
        let r;
        if (action === 'add') {
          const parts = [];
          for (const p of participants) parts.push(await mutationParticipant(p));
          r = await serverCall(() => Job.addGroupParticipants(gid, parts, []));
        } else {
          const wids = participants.map((p) => req('WAWebWidFactory').createWid(String(p)));
          r = await serverCall(() =>
            action === 'remove' ? Job.removeGroupParticipants(gid, wids) : Job[job](gid, wids, !!meta.isLidAddressingMode)
          );
        }
        return { participants: participantResults(r) };
      }),

    // id, reset: bool -> {code}
    groupInvite: (id, reset) =>
      guard(async () => {
        needGroups('invite');
        const meta = metadataOf(id);
        const Action = req('WAWebGroupInviteAction');
        await serverCall(() => (reset ? Action.revokeGroupInvite(meta) : Action.queryGroupInviteCode(meta)));
        if (!meta.inviteCode) throw new Error('WhatsApp Web gave no invite code');
        return { code: String(meta.inviteCode) };
      }),

    setGroupSubject: (id, subject) =>
      guard(async () => {
        needGroups('info');
        metadataOf(id);
        await serverCall(() => req('WAWebGroupModifyInfoJob').setGroupSubject(groupWid(id), String(subject)));
        return {};
      }),

    // An empty description deletes it (the job's `null` body).
    setGroupDescription: (id, description) =>
      guard(async () => {
        needGroups('info');
        const meta = metadataOf(id);
        const text = String(description);
        await serverCall(() =>
          req('WAWebGroupModifyInfoJob').setGroupDescription(groupWid(id), text === '' ? null : text, undefined, meta.descId)
        );
        return {};
      }),

    leaveGroup: (id) =>
      guard(async () => {
        needGroups('leave');
        metadataOf(id);
        const chat = req('WAWebCollections').Chat.get(groupWid(id));
        if (!chat) throw new Error('group_not_found: ' + String(id));
        const left = await serverCall(() => req('WAWebExitGroupAction').sendExitGroup(chat));
        if (left === false) throw new Error('WhatsApp Web did not leave the group');
        return {};
      }),
  });

  // === participant change notifications ===
  //
  // WhatsApp Web adds a `gp2` message to the group's chat for every membership change, made by
  // anyone (this device too): `subtype` says what happened, `recipients` who it happened to,
  // `author` who did it. The membership subtypes are reported; the rest (subject, icon, …) are
  // not members changing.
  const GP2_ACTIONS = { add: 'add', invite: 'join', linked_group_join: 'join', remove: 'remove', leave: 'leave', promote: 'promote', demote: 'demote' };

  function reportGp2(msg) {
    const action = GP2_ACTIONS[msg.subtype];
    if (!action) return;
    const id = msg.id || {};
    const group = widString(id.remote) || widString(msg.from);
    if (!group || !String(group).endsWith('@g.us')) return;
    const recipients = Array.isArray(msg.recipients) ? msg.recipients.map(widString).filter((w) => w !== null) : [];
    report('group_participants', {
      id: widString(id._serialized || id),
      group: group,
      action: action,
      participants: recipients.slice(0, 1024),
      author: widString(msg.author),
      timestamp: typeof msg.t === 'number' ? msg.t : null,
    });
  }

  let groupsAttached = false;
  function attachGroups() {
    if (groupsAttached) return;
    groupsAttached = true;
    req('WAWebCollections').Msg.on('add', (msg) => {
      if (!msg || !msg.isNewMsg || msg.type !== 'gp2') return;
      reportGp2(msg);
    });
  }

  ON_READY.push({ where: 'groups', fn: attachGroups });
