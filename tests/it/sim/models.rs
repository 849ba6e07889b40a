//! WhatsApp Web's module surface on the simulated page: models, collections, lazily loaded modules
//! and the names the current build uses.

use super::*;

/// Links a fresh page to `phone`; returns the page once CONNECTED and synced.
pub(super) async fn linked_page(chrome: &Chrome, base: &str, phone: &str) -> Page {
    let page = chrome.open(&format!("{base}/")).await;
    wait_js(&page, &state_is("UNPAIRED")).await;
    let qr: String = eval(&page, QR_JS).await;
    let (s, b) = post(base, "/sim/link", json!({"qr": qr, "phone": phone})).await;
    assert_eq!(s, 200, "{b}");
    wait_js(
        &page,
        &format!(
            "{} && window.require('WAWebSocketModel').Socket.hasSynced",
            state_is("CONNECTED")
        ),
    )
    .await;
    page
}

/// Whether `require(name)` works, as a JS expression.
pub(super) fn defined(name: &str) -> String {
    format!(
        "(() => {{ try {{ window.require('{name}'); return true; }} catch (e) {{ return false; }} }})()"
    )
}

#[tokio::test]
async fn models_collections_lazy_modules_and_current_names() {
    let dir = tempfile::tempdir().unwrap();
    let (sim, cancel) = start(SimConfig {
        qr_first_ms: 1_200,
        qr_next_ms: 400,
        tick_ms: 50,
        ..SimConfig::default()
    })
    .await;
    let base = format!("http://{}", sim.addr());
    let chrome = Chrome::launch(&dir.path().join("profile")).await;
    let page = chrome.open(&format!("{base}/")).await;
    wait_js(&page, &state_is("UNPAIRED")).await;

    // Current names present, July-2025 names absent.
    let names: Vec<Value> = eval(
        &page,
        r#"(() => { const W = window.require;
          const Cmd = W('WAWebCmd').Cmd, Bus = W('WAWebBackendEventBus').BackendEventBus;
          return [Cmd.refreshQR === undefined, typeof Cmd.isOfflineDeliveryEnd,
            ['triggerRefreshQR','onRefreshQR','triggerLogout','onLogout'].every(n => typeof Bus[n] === 'function'),
            Bus.socketState, typeof W('WAWebUserPrefsMultiDevice').advSecretEventEmitter.on,
            W('WAWebBuildConstants').VERSION_STR === window.Debug.VERSION, W('WAWebBuildConstants').VERSION_BASE,
            W('WAWebUserPrefsMeUser').getMeUser === undefined, typeof W('WAWebUserPrefsMeUser').getMeUserOrThrow,
            W('WAWebWidFactory').createUserWid === undefined,
            ['createWid','createUserWidOrThrow','createUserLidOrThrow','asUserWidOrThrow','asChatWid'].every(n => typeof W('WAWebWidFactory')[n] === 'function'),
            W('WAWebCompanionRegClientUtils').DEVICE_PLATFORM,
            (() => { try { new (W('WAWebMsgKey'))({fromMe: true, remote: '1@c.us', id: 'A'}); return 'built'; } catch (e) { return e.message; } })()];
        })()"#,
    )
    .await;
    assert_eq!(
        names,
        vec![
            json!(true),
            json!("boolean"),
            json!(true),
            json!("UNPAIRED"),
            json!("function"),
            json!(true),
            json!("2.3000.1012345678"),
            json!(true),
            json!("function"),
            json!(true),
            json!(true),
            json!("1"),
            json!("MsgKey error: me is undefined"),
        ]
    );

    // Models: attributes behind prototype accessors over __x_ fields; toJSON = props only.
    let models: Vec<Value> = eval(
        &page,
        r#"(() => { const W = window.require; const Conn = W('WAWebConnModel').Conn, Socket = W('WAWebSocketModel').Socket;
          const copy = Object.assign({}, Conn);
          return [Object.prototype.hasOwnProperty.call(Conn, 'ref'), typeof Conn.__x_ref,
            Object.getOwnPropertyDescriptor(Object.getPrototypeOf(Conn), 'ref').get !== undefined,
            copy.ref === undefined && copy.__x_ref === Conn.ref,
            Object.keys(Conn).every(k => k.startsWith('__x_')),
            JSON.stringify(Socket.serialize()), Socket.toJSON().state === undefined,
            Conn.toJSON().ref === Conn.ref, Conn.serialize().refExpiry === undefined];
        })()"#,
    )
    .await;
    assert_eq!(
        models,
        vec![
            json!(false),
            json!("string"),
            json!(true),
            json!(true),
            json!(true),
            json!("{}"),
            json!(true),
            json!(true),
            json!(true)
        ]
    );

    // The lazy media bundle is not there before CONNECTED; a deferred handle waits for it.
    assert!(!eval::<bool>(&page, &defined("WAWebMediaMmsV4Upload")).await);
    assert!(
        eval::<bool>(
            &page,
            "(window.__lazy = null, window.requireDeferred('WAWebMediaMmsV4Upload').load().then(m => { window.__lazy = typeof m.uploadMedia; }), true)"
        )
        .await
    );

    // A batch is six refs with one new ADV secret, then UNPAIRED_IDLE; a refresh starts a new
    // batch with a new secret.
    assert!(
        eval::<bool>(
            &page,
            r#"(() => { const W = window.require; window.__refs = [W('WAWebConnModel').Conn.ref]; window.__advs = 0;
          W('WAWebConnModel').Conn.on('change:ref', (c, r, old) => window.__refs.push(r));
          W('WAWebUserPrefsMultiDevice').advSecretEventEmitter.on('change', () => window.__advs++);
          return true; })()"#
        )
        .await
    );
    wait_js(&page, &state_is("UNPAIRED_IDLE")).await;
    let (refs, advs): (Vec<String>, u32) = eval(&page, "[window.__refs, window.__advs]").await;
    assert_eq!(refs.len(), 6, "{refs:?}");
    assert_eq!(advs, 0, "one secret per batch");
    let before: String = eval(&page, QR_JS).await;
    assert!(
        eval::<bool>(
            &page,
            "(window.require('WAWebBackendEventBus').BackendEventBus.triggerRefreshQR(), true)"
        )
        .await
    );
    wait_js(
        &page,
        &format!("{} && window.__advs === 1", state_is("UNPAIRED")),
    )
    .await;
    let after: String = eval(&page, QR_JS).await;
    assert_ne!(before.split(',').nth(3), after.split(',').nth(3));
    assert_eq!(
        eval::<String>(
            &page,
            "document.querySelector('[data-testid=link-device-qr-code]')?.dataset.ref || ''"
        )
        .await
        .split(',')
        .nth(3),
        after.split(',').nth(3),
        "the rendered QR carries the current secret"
    );

    // Link: the lazy bundle arrives, collections work.
    let (s, _) = post(
        &base,
        "/sim/link",
        json!({"qr": after, "phone": "4915550061"}),
    )
    .await;
    assert_eq!(s, 200);
    wait_js(&page, "window.__lazy === 'function'").await;
    assert!(eval::<bool>(&page, &defined("WAWebMediaMmsV4Upload")).await);
    let (s, b) = post(
        &base,
        "/sim/inbound",
        json!({"to": "4915550061", "from": "4915550062", "text": "one"}),
    )
    .await;
    assert_eq!(s, 200);
    let id = b["id"].as_str().unwrap().to_owned();
    wait_js(
        &page,
        &format!("!!window.require('WAWebCollections').Msg.get('{id}')"),
    )
    .await;
    let coll: Vec<Value> = eval(
        &page,
        &format!(
            r#"(() => {{ const C = window.require('WAWebCollections'); const m = C.Msg.get('{id}');
          const seen = [];
          C.Msg.on('change:ack', (msg, v, old) => seen.push([msg === m, v, old]));
          C.Msg.on('remove', (msg) => seen.push(['remove', msg === m]));
          m.set('ack', 2);
          C.Msg.remove(m);
          const back = C.Msg.add(m);
          return [Array.isArray(C.Msg._models), C.Msg.getModelsArray().includes(m), C.Msg.toArray().length === C.Msg.length,
            C.Msg.serialize().some(x => x.body === 'one'), m.toJSON().isNewMsg === undefined, m.toJSON().body,
            JSON.stringify(seen), back === m, C.Chat.get('4915550062@c.us').id._serialized];
        }})()"#
        ),
    )
    .await;
    assert_eq!(
        coll,
        vec![
            json!(true),
            json!(true),
            json!(true),
            json!(true),
            json!(true),
            json!("one"),
            json!("[[true,2,1],[\"remove\",true]]"),
            json!(true),
            json!("4915550062@c.us")
        ]
    );

    // A July-2025 build: the old names, and no backend bus.
    let (s, _) = post(&base, "/sim/faults", json!({"legacy_build": true})).await;
    assert_eq!(s, 200);
    // (Same profile, so this tab reconnects as the linked device; only the names matter here.)
    let legacy = chrome.open(&format!("{base}/")).await;
    wait_js(&legacy, "!!(window.require && window.Debug)").await;
    let old: Vec<Value> = eval(
        &legacy,
        r#"(() => { const W = window.require;
          let bus; try { W('WAWebBackendEventBus'); bus = 'present'; } catch (e) { bus = 'absent'; }
          return [typeof W('WAWebCmd').Cmd.refreshQR, typeof W('WAWebCmd').Cmd.logout, bus,
            typeof W('WAWebWidFactory').createUserWid, typeof W('WAWebUserPrefsMeUser').getMeUser]; })()"#,
    )
    .await;
    assert_eq!(
        old,
        vec![
            json!("function"),
            json!("function"),
            json!("absent"),
            json!("function"),
            json!("function")
        ]
    );
    chrome.close().await;
    cancel.cancel();
    sim.wait().await.unwrap();
}
