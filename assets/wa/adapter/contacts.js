// wafleet page adapter, part: contacts — lookups (joined into one script with the other parts; see
// core.js). "Is this number on WhatsApp?" and LID <-> phone number. Commands: queryExists,
// lidForPhone, phoneForLid.

  // Contact lookups: optional capabilities, checked at each call. A build without them answers
  // `unsupported_wa_web: missing …` for that call and the session keeps working.
  const CONTACT_SURFACE = {
    exists: [['WAWebQueryExistsJob.queryPhoneExists'], ['WAWebQueryExistsJob.queryWidExists']],
    lids: [['WAWebApiContact.getCurrentLid', 'WAWebApiContact.getPhoneNumber', 'WAWebWidFactory.createWid']],
  };

  function needContacts(capability) {
    if (!loaded()) throw new Error('WhatsApp Web is not loaded');
    const missing = missingOf({ [capability]: CONTACT_SURFACE[capability] });
    if (missing.length > 0) throw new Error('unsupported_wa_web: missing ' + missing.join(', '));
  }

  const pnWid = (digits) => req('WAWebWidFactory').createWid(String(digits).replace(/[^0-9]/g, '') + '@c.us');

  // The other half of a user's PN/LID pair from WhatsApp Web's own mapping, or null.
  async function alternate(wid) {
    if (!present('WAWebApiContact.getCurrentLid') || !present('WAWebApiContact.getPhoneNumber')) return null;
    const Api = req('WAWebApiContact');
    try {
      return widString(await (wid.server === 'lid' ? Api.getPhoneNumber(wid) : Api.getCurrentLid(wid)));
    } catch (e) {
      return null;
    }
  }

  // One USync query (WAWebQueryExistsJob): null means "not on WhatsApp"; a server problem
  // throws ServerStatusCodeError, reported as `wa_server_error: <status> …`. The answer's wid
  // is the LID when WhatsApp Web shows LID contacts only; the phone number then comes from the
  // mapping the query itself stored.
  async function queryExists(phone) {
    needContacts('exists');
    const digits = String(phone).replace(/[^0-9]/g, '');
    const Job = req('WAWebQueryExistsJob');
    let result;
    try {
      result = typeof Job.queryPhoneExists === 'function'
        ? await Job.queryPhoneExists('+' + digits)
        : await Job.queryWidExists(pnWid(digits));
    } catch (e) {
      const status = e && (e.statusCode || e.status);
      if (status !== undefined && status !== null) throw new Error('wa_server_error: ' + Number(status) + ' ' + errorText(e));
      throw e;
    }
    if (!result || !result.wid) return { exists: false, wid: null, lid: null };
    const wid = result.wid;
    const isLid = wid.server === 'lid' || String(widString(wid)).endsWith('@lid');
    const pn = isLid ? (await alternate(wid)) || widString(pnWid(digits)) : widString(wid);
    const lid = isLid ? widString(wid) : await alternate(wid);
    return { exists: true, wid: pn, lid: lid };
  }

  Object.assign(COMMANDS, {
    // phone: digits -> {exists, wid: "<digits>@c.us" | null, lid: "<digits>@lid" | null}
    queryExists: (phone) => guard(() => queryExists(phone)),

    // phone: digits -> {pn, lid | null}, from WhatsApp Web's local mapping (no server query)
    lidForPhone: (phone) =>
      guard(async () => {
        needContacts('lids');
        const pn = pnWid(phone);
        const lid = widString(await req('WAWebApiContact').getCurrentLid(pn));
        return { pn: widString(pn), lid: lid && lid.endsWith('@lid') ? lid : null };
      }),

    // lid: "<digits>@lid" -> {lid, pn | null}
    phoneForLid: (lid) =>
      guard(async () => {
        needContacts('lids');
        const wid = req('WAWebWidFactory').createWid(String(lid));
        const pn = widString(await req('WAWebApiContact').getPhoneNumber(wid));
        return { lid: widString(wid), pn: pn && pn.endsWith('@c.us') ? pn : null };
      }),
  });
