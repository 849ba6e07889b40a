//! LID chats, groups, ciphertext retries, revokes and media through the whole pipeline, and passkey
//! linking with the integrity checkpoint, on the page in a real Chromium.

use super::*;

#[tokio::test]
async fn lid_groups_ciphertext_revoke_and_media_through_the_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let (sim, cancel) = start(SimConfig {
        tick_ms: 50,
        ..SimConfig::default()
    })
    .await;
    let base = format!("http://{}", sim.addr());
    let (me, peer, other) = ("4915550071", "4915550072", "4915550073");
    let chrome = Chrome::launch(&dir.path().join("profile")).await;
    let page = linked_page(&chrome, &base, me).await;
    let (s, b) = get(&base, &format!("/sim/lid?phone={peer}")).await;
    assert_eq!(s, 200);
    let peer_lid = b["lid"]
        .as_str()
        .unwrap()
        .strip_suffix("@lid")
        .unwrap()
        .to_owned();
    assert_eq!(peer_lid.len(), 15);
    let (s, b) = get(&base, "/sim/lid?phone=12").await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_phone")));

    // An inbound LID message: an @lid chat, the mapping learned by the page.
    let (s, b) = post(
        &base,
        "/sim/inbound",
        json!({"to": me, "from": peer, "text": "via lid", "lid": true}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert!(
        b["id"]
            .as_str()
            .unwrap()
            .starts_with(&format!("false_{peer_lid}@lid_"))
    );
    wait_js(
        &page,
        &format!("!!window.require('WAWebCollections').Chat.get('{peer_lid}@lid')"),
    )
    .await;
    let map: Vec<Value> = eval(
        &page,
        &format!(
            "(() => {{ const A = window.require('WAWebApiContact'), F = window.require('WAWebWidFactory'); \
             return [A.getCurrentLid(F.createWid('{peer}@c.us'))?._serialized, A.getPhoneNumber(F.createWid('{peer_lid}@lid'))?._serialized]; }})()"
        ),
    )
    .await;
    assert_eq!(
        map,
        vec![
            json!(format!("{peer_lid}@lid")),
            json!(format!("{peer}@c.us"))
        ]
    );

    // Sending to the @lid chat: the PN `from` is refused (ack -1), the LID `from` accepted.
    let lid_chat = format!("{peer_lid}@lid");
    let refused: Value = eval(
        &page,
        &send_from_js(&lid_chat, "getMaybeMePnUser", "", "'pn from'"),
    )
    .await;
    assert!(
        refused["result"].as_str().unwrap().starts_with("rejected"),
        "{refused}"
    );
    let ok: Value = eval(
        &page,
        &send_from_js(&lid_chat, "getMaybeMeLidUser", "", "'lid from'"),
    )
    .await;
    assert_eq!(ok["result"], json!("OK"), "{ok}");
    let list = messages(&base, me).await;
    let by_id = |id: &Value| list.iter().find(|m| &m["id"] == id).cloned().unwrap();
    let r = by_id(&refused["id"]);
    assert!(r["refused"].as_str().unwrap().contains("LID"), "{r}");
    let a = by_id(&ok["id"]);
    assert_eq!(
        (&a["to"], &a["addressing"], &a["ack"]),
        (&json!(peer), &json!("lid"), &json!(1))
    );

    // A LID-addressed group: a send without participant is refused, with it accepted.
    let (s, b) = post(
        &base,
        "/sim/groups",
        json!({"subject": "Team", "participants": [me, peer, other], "lid_addressing": true}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let gid = b["id"].as_str().unwrap().to_owned();
    wait_js(
        &page,
        &format!("window.require('WAWebCollections').Chat.get('{gid}')?.groupMetadata?.isLidAddressingMode === true"),
    )
    .await;
    let no_part: Value = eval(
        &page,
        &send_from_js(&gid, "getMaybeMeLidUser", "", "'no participant'"),
    )
    .await;
    assert!(
        no_part["result"].as_str().unwrap().starts_with("rejected"),
        "{no_part}"
    );
    let with_part: Value = eval(
        &page,
        &send_from_js(
            &gid,
            "getMaybeMeLidUser",
            "participant: me,",
            "'with participant'",
        ),
    )
    .await;
    assert_eq!(with_part["result"], json!("OK"), "{with_part}");
    let list = messages(&base, me).await;
    let g = list.iter().find(|m| m["id"] == with_part["id"]).unwrap();
    let (_, me_lid) = get(&base, &format!("/sim/lid?phone={me}")).await;
    assert_eq!(g["participant"], me_lid["lid"]);
    assert!(
        list.iter().find(|m| m["id"] == no_part["id"]).unwrap()["refused"]
            .as_str()
            .unwrap()
            .contains("participant")
    );
    let (s, b) = post(
        &base,
        "/sim/groups",
        json!({"subject": "", "participants": [me]}),
    )
    .await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_subject")));

    // Inbound in the group: author and key participant; ciphertext first, both paths.
    assert!(
        eval::<bool>(
            &page,
            r#"(() => { window.__ct = []; const Msg = window.require('WAWebCollections').Msg;
          Msg.on('add', m => window.__ct.push(['add', m.id._serialized, m.type, m.author ? m.author._serialized : null]));
          Msg.on('remove', m => window.__ct.push(['remove', m.id._serialized, m.type]));
          Msg.on('change:type', (m, t) => window.__ct.push(['type', m.id._serialized, t, m.body])); return true; })()"#
        )
        .await
    );
    let (s, b) = post(
        &base,
        "/sim/inbound",
        json!({"to": me, "group": gid, "author": other, "text": "changed", "ciphertext": {"after_ms": 300, "path": "change"}}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let changed = b["id"].as_str().unwrap().to_owned();
    let (s, b) = post(
        &base,
        "/sim/inbound",
        json!({"to": me, "from": peer, "text": "readded", "ciphertext": {"after_ms": 300, "path": "readd"}}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let readded = b["id"].as_str().unwrap().to_owned();
    wait_js(
        &page,
        &format!("window.__ct.some(e => e[0] === 'type' && e[1] === '{changed}') && window.__ct.filter(e => e[1] === '{readded}').length === 3"),
    )
    .await;
    let ev: Vec<Value> = eval(&page, "window.__ct").await;
    let (_, other_lid) = get(&base, &format!("/sim/lid?phone={other}")).await;
    let author = other_lid["lid"].as_str().unwrap().to_owned();
    assert!(changed.ends_with(&format!("_{author}")), "{changed}");
    let of = |id: &str| {
        ev.iter()
            .filter(|e| e[1] == json!(id))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        of(&changed),
        vec![
            json!(["add", changed, "ciphertext", author]),
            json!(["type", changed, "chat", "changed"])
        ]
    );
    assert_eq!(
        of(&readded),
        vec![
            json!(["add", readded, "ciphertext", null]),
            json!(["remove", readded, "ciphertext"]),
            json!(["add", readded, "chat", null])
        ]
    );
    let (s, b) = post(
        &base,
        "/sim/inbound",
        json!({"to": me, "from": peer, "text": "x", "ciphertext": {"after_ms": 1, "path": "other"}}),
    )
    .await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_ciphertext")));

    // Revoke: the original model is replaced by a `revoked` one.
    let (s, b) = post(
        &base,
        "/sim/inbound",
        json!({"to": me, "from": peer, "text": "oops"}),
    )
    .await;
    assert_eq!(s, 200);
    let oops = b["id"].as_str().unwrap().to_owned();
    wait_js(
        &page,
        &format!("!!window.require('WAWebCollections').Msg.get('{oops}')"),
    )
    .await;
    let (s, b) = post(
        &base,
        "/sim/revoke",
        json!({"from": other, "to": me, "wa_id": oops}),
    )
    .await;
    assert_eq!((s, b["error"].as_str()), (404, Some("unknown_message")));
    let (s, _) = post(
        &base,
        "/sim/revoke",
        json!({"from": peer, "to": me, "wa_id": oops}),
    )
    .await;
    assert_eq!(s, 200);
    wait_js(
        &page,
        &format!("window.require('WAWebCollections').Msg.get('{oops}')?.type === 'revoked'"),
    )
    .await;
    let rv: Vec<Value> = eval(
        &page,
        &format!(
            "(() => {{ const m = window.require('WAWebCollections').Msg.get('{oops}'); \
             return [m.subtype, m.protocolMessageKey._serialized, m.body === undefined, \
             window.__ct.some(e => e[0] === 'remove' && e[1] === '{oops}')]; }})()"
        ),
    )
    .await;
    assert_eq!(
        rv,
        vec![json!("sender"), json!(oops), json!(true), json!(true)]
    );

    // Media through the pipeline is recorded as uploaded with the server's sha256.
    let png = b"\x89PNG\r\n\x1a\n wafleet pretend image bytes, long enough for two AES blocks";
    let sent: Value = eval(
        &page,
        &pipeline_js(
            &format!("{peer}@c.us"),
            "image/png",
            "p.png",
            png,
            "{}",
            "a picture",
        ),
    )
    .await;
    assert_eq!(sent["result"], json!("OK"), "{sent}");
    // Inline data is refused and recorded as refused.
    let inline: Value = eval(
        &page,
        &send_from_js(
            &format!("{peer}@c.us"),
            "getMaybeMePnUser",
            "type: 'image', mimetype: 'image/png', caption: 'inline',",
            "'data:image/png;base64,iVBORw0KGgo='",
        ),
    )
    .await;
    assert!(
        inline["result"].as_str().unwrap().starts_with("rejected"),
        "{inline}"
    );
    assert_eq!(inline["ack"], json!(-1), "{inline}");
    let list = messages(&base, me).await;
    let img = list.iter().find(|m| m["id"] == sent["id"]).unwrap();
    assert_eq!(
        (
            &img["uploaded"],
            &img["sha256"],
            &img["media"]["mimetype"],
            &img["text"]
        ),
        (
            &json!(true),
            &json!(hex::encode(Sha256::digest(png))),
            &json!("image/png"),
            &json!("a picture")
        )
    );
    let bad = list
        .iter()
        .find(|m| {
            m["text"] == json!("inline")
                && m["refused"].as_str().is_some_and(|r| r.contains("inline"))
        })
        .cloned();
    assert!(bad.is_some(), "{list:?}");

    // The upload_fail fault: uploadMedia resolves {kind: "error"}, nothing is sent.
    let (s, _) = post(&base, "/sim/faults", json!({"upload_fail": true})).await;
    assert_eq!(s, 200);
    let failed: Value = eval(
        &page,
        &pipeline_js(
            &format!("{peer}@c.us"),
            "image/png",
            "p.png",
            png,
            "{}",
            "fails",
        ),
    )
    .await;
    assert_eq!(failed["result"], json!("ERROR_UPLOAD"), "{failed}");
    chrome.close().await;
    cancel.cancel();
    sim.wait().await.unwrap();
}

/// Sends a message to `chat` with `from` = `WAWebUserPrefsMeUser.<me_fn>()`; `extra` (fields
/// that override the text defaults) may use `me`. A refused send resolves `rejected: …`.
pub(super) fn send_from_js(chat: &str, me_fn: &str, extra: &str, body: &str) -> String {
    format!(
        r#"(async () => {{
  const W = window.require;
  const chat = W('WAWebCollections').Chat.get('{chat}') || await W('WAWebCollections').Chat.find(W('WAWebWidFactory').createWid('{chat}'));
  const MsgKey = W('WAWebMsgKey');
  const me = W('WAWebUserPrefsMeUser').{me_fn}();
  const msg = {{ from: me, to: chat.id, body: {body}, type: 'chat', ack: 0, local: true, self: 'out', isNewMsg: true, t: Math.floor(Date.now() / 1000), {extra} }};
  msg.id = new MsgKey({{from: me, to: chat.id, id: await MsgKey.newId(), selfDir: 'out', participant: msg.participant}});
  const [added, sent] = W('WAWebSendMsgChatAction').addAndSendMsgToChat(chat, msg);
  const m = await added;
  try {{ const r = await sent; return {{id: msg.id._serialized, result: r.messageSendResult, ack: m.ack}}; }}
  catch (e) {{ return {{id: msg.id._serialized, result: 'rejected: ' + e.message, ack: m.ack}}; }}
}})()"#
    )
}

#[tokio::test]
async fn passkey_linking_and_the_integrity_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (sim, cancel) = start(SimConfig::default()).await;
    let base = format!("http://{}", sim.addr());
    let phone = "4915550081";
    let (s, b) = post(&base, "/sim/faults", json!({"passkey": "maybe"})).await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_fault")));
    let (s, b) = post(&base, "/sim/faults", json!({"passkey": "linking"})).await;
    assert_eq!((s, b["passkey"].as_str()), (200, Some("linking")));
    let chrome = Chrome::launch(&dir.path().join("profile")).await;
    let page = chrome.open(&format!("{base}/")).await;
    wait_js(&page, &state_is("UNPAIRED")).await;
    // Watch the frontend bridge the way an adapter would: by wrapping the module function.
    assert!(
        eval::<bool>(
            &page,
            r#"(() => { const api = window.require('WAWebBackendApi'); const orig = api.frontendFireAndForget;
          window.__fe = []; api.frontendFireAndForget = function (name, payload) {
            window.__fe.push([name, payload || null, window.require('WAWebShortcakeLinkingApi').getShortcakeLinkingStage()]);
            return orig.apply(this, arguments); }; return true; })()"#
        )
        .await
    );
    let qr: String = eval(&page, QR_JS).await;
    let (s, b) = post(&base, "/sim/link", json!({"qr": qr, "phone": phone})).await;
    assert_eq!((s, b["passkey"].as_str()), (202, Some("pending")), "{b}");
    wait_js(
        &page,
        "window.__fe.some(e => e[0] === 'shortcakeVerificationCodeReady')",
    )
    .await;
    let fe: Vec<Value> = eval(&page, "window.__fe").await;
    let names: Vec<&str> = fe.iter().map(|e| e[0].as_str().unwrap()).collect();
    assert_eq!(
        names,
        vec![
            "passkeyPrologueRequest",
            "shortcakePrologueSent",
            "shortcakeVerificationCodeReady"
        ]
    );
    assert_eq!(fe[0][2], json!("Initialized"));
    let code = fe[2][1]["verificationCode"].as_str().unwrap();
    assert_eq!(code.len(), 6);
    assert_eq!(
        eval::<String>(
            &page,
            "window.require('WAWebShortcakeLinkingApi').getShortcakeLinkingStage()"
        )
        .await,
        "WaitingForVerificationCodeConfirmation"
    );
    assert_eq!(
        eval::<String>(&page, STATE).await,
        "UNPAIRED",
        "no link yet"
    );
    let (s, b) = post(
        &base,
        "/sim/passkey",
        json!({"phone": phone, "action": "later"}),
    )
    .await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_action")));
    let (s, b) = post(
        &base,
        "/sim/passkey",
        json!({"phone": phone, "action": "complete"}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    wait_js(&page, &state_is("CONNECTED")).await;

    // The integrity checkpoint after CONNECTED: a blocking modal until the passkey is used.
    let (s, _) = post(&base, "/sim/faults", json!({"passkey": "checkpoint"})).await;
    assert_eq!(s, 200);
    let _ = page.reload().await;
    wait_js(
        &page,
        &format!(
            "{} && !!document.querySelector('[data-testid=passkey-checkpoint][role=dialog]')",
            state_is("CONNECTED")
        ),
    )
    .await;
    let (s, b) = post(
        &base,
        "/sim/passkey",
        json!({"phone": phone, "action": "complete"}),
    )
    .await;
    assert_eq!((s, b["checkpoints_passed"].as_u64()), (200, Some(1)), "{b}");
    wait_js(
        &page,
        "!document.querySelector('[data-testid=passkey-checkpoint]')",
    )
    .await;
    let (s, b) = post(
        &base,
        "/sim/passkey",
        json!({"phone": phone, "action": "complete"}),
    )
    .await;
    assert_eq!((s, b["error"].as_str()), (404, Some("no_passkey")));
    chrome.close().await;
    cancel.cancel();
    sim.wait().await.unwrap();
}
