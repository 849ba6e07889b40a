//! Unit tests of the merge-patch logic.

use serde_json::json;

use super::*;
use crate::ids::SessionId;
use crate::worker::host::DesiredState;

fn config() -> SessionConfig {
    SessionConfig {
        session: SessionId::new("s").unwrap(),
        webhook: Some(WebhookConfig {
            id: String::new(),
            url: "https://old.test/hook".into(),
            secret: Some("old-secret".into()),
            events: vec![],
            headers: BTreeMap::from([("X-Tenant".into(), "7".into())]),
        }),
        webhooks: Vec::new(),
        metadata: BTreeMap::from([("tenant".into(), json!(7)), ("plan".into(), json!("pro"))]),
        pacing: None,
        reject_calls: false,
        media_download: Default::default(),
        desired: DesiredState::Running,
        created_at_ms: 1,
    }
}

fn patch(v: serde_json::Value) -> Result<SessionConfig, PatchError> {
    apply_patch(&config(), &v, &UrlPolicy::default())
}

#[test]
fn field_list_comes_from_the_struct() {
    let f = struct_fields::<SessionConfig>();
    for name in [
        "session", "webhook", "webhooks", "metadata", "pacing", "desired",
    ] {
        assert!(f.contains(&name), "{name} in {f:?}");
    }
}

#[test]
fn merge_patch_follows_rfc_7396() {
    let mut doc = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1]});
    merge_patch(
        &mut doc,
        &json!({"a": null, "b": {"c": 9, "x": null}, "e": [2], "f": {"g": 1}}),
    );
    assert_eq!(doc, json!({"b": {"c": 9, "d": 3}, "e": [2], "f": {"g": 1}}));
}

#[test]
fn absent_keeps_present_replaces_null_clears() {
    let c = patch(json!({})).unwrap();
    assert_eq!(c.targets(), config().targets());
    assert_eq!(c.metadata, config().metadata);

    let c = patch(json!({"metadata": {"plan": "free", "tenant": null, "new": true}})).unwrap();
    assert_eq!(c.metadata["plan"], json!("free"));
    assert_eq!(c.metadata["new"], json!(true));
    assert!(!c.metadata.contains_key("tenant"));
    assert_eq!(c.targets().len(), 1, "webhooks untouched");

    let c = patch(json!({"metadata": null})).unwrap();
    assert!(c.metadata.is_empty());

    let c = patch(json!({"pacing": {"interval_ms": 5000, "typing": false}})).unwrap();
    let p = c.pacing.clone().unwrap();
    assert_eq!((p.interval_ms, p.typing), (5000, false));
    assert_eq!(p.burst, crate::sendq::PacingConfig::default().burst);
    let back = apply_patch(&c, &json!({"pacing": null}), &UrlPolicy::default()).unwrap();
    assert!(back.pacing.is_none());
    assert_eq!(back.created_at_ms, 1);
    assert_eq!(back.desired, DesiredState::Running);

    let c = patch(json!({"media_download": "eager", "reject_calls": true})).unwrap();
    assert_eq!(c.media_download, crate::worker::host::MediaDownload::Eager);
    assert!(c.reject_calls);
}

#[test]
fn webhook_lists_keep_secrets_by_id_and_single_webhook_means_one() {
    // The single webhook of the old schema has the id wh1.
    assert_eq!(config().targets()[0].id, "wh1");
    let c = patch(json!({"webhooks": [
        {"id": "wh1", "url": "https://moved.test/hook"},
        {"url": "https://crm.test/in", "secret": "crm-secret", "events": ["message"]},
    ]}))
    .unwrap();
    let t = c.targets();
    assert_eq!(t.len(), 2);
    assert_eq!(
        (t[0].id.as_str(), t[0].url.as_str()),
        ("wh1", "https://moved.test/hook")
    );
    assert_eq!(t[0].secret.as_deref(), Some("old-secret"), "kept by id");
    assert_eq!(t[0].headers.len(), 1, "headers kept by id");
    assert_eq!(t[1].id, "wh2");
    assert_eq!(t[1].secret.as_deref(), Some("crm-secret"));
    assert_eq!(c.webhook.as_ref().unwrap().id, "wh1", "webhook = first");

    let c = patch(
        json!({"webhooks": [{"id": "wh1", "url": "https://x.test/", "secret": null,
                                        "headers": null}]}),
    )
    .unwrap();
    assert!(c.targets()[0].secret.is_none() && c.targets()[0].headers.is_empty());

    let c = patch(json!({"webhook": {"url": "https://single.test/"}})).unwrap();
    assert_eq!(c.targets().len(), 1);
    assert_eq!(
        c.targets()[0].id,
        "wh1",
        "replaces the first target in place"
    );
    assert_eq!(c.targets()[0].secret.as_deref(), Some("old-secret"));

    for clear in [
        json!({"webhooks": null}),
        json!({"webhooks": []}),
        json!({"webhook": null}),
    ] {
        let c = patch(clear).unwrap();
        assert!(c.targets().is_empty() && c.webhook.is_none());
    }
}

#[test]
fn bad_patches_are_refused_with_the_create_codes() {
    let code = |v: serde_json::Value| patch(v).unwrap_err().code();
    assert_eq!(code(json!([1])), "invalid_body");
    assert_eq!(code(json!({"session": "other"})), "invalid_body");
    assert_eq!(code(json!({"desired": "stopped"})), "invalid_body");
    assert_eq!(code(json!({"nope": 1})), "invalid_body");
    assert_eq!(code(json!({"metadata": 5})), "invalid_body");
    assert_eq!(code(json!({"media_download": "sometimes"})), "invalid_body");
    assert_eq!(
        code(json!({"pacing": {"interval_ms": 0}})),
        "invalid_pacing"
    );
    assert_eq!(code(json!({"pacing": {"bogus": 1}})), "invalid_body");
    assert_eq!(
        code(json!({"webhook": {"url": "x"}, "webhooks": []})),
        "invalid_body"
    );
    assert_eq!(
        code(json!({"webhooks": [{"url": "ftp://a.test/"}]})),
        "invalid_webhook_url"
    );
    assert_eq!(
        code(json!({"webhooks": [{"url": "https://a.test/", "events": ["nope"]}]})),
        "invalid_webhook_events"
    );
    assert_eq!(
        code(json!({"webhooks": [{"url": "https://a.test/", "headers": {"Signature": "x"}}]})),
        "invalid_webhook_headers"
    );
    assert_eq!(
        code(json!({"webhooks": [{"url": "https://a.test/", "bogus": 1}]})),
        "invalid_body"
    );
    let six: Vec<_> = (0..6)
        .map(|i| json!({"url": format!("https://h{i}.test/")}))
        .collect();
    assert_eq!(code(json!({ "webhooks": six })), "invalid_webhooks");
    assert_eq!(
        code(json!({"webhooks": [{"id": "a", "url": "https://a.test/"},
                                  {"id": "a", "url": "https://b.test/"}]})),
        "invalid_webhooks"
    );
    assert_eq!(
        code(json!({"webhooks": [{"id": "../x", "url": "https://a.test/"}]})),
        "invalid_webhooks"
    );
    let strict = UrlPolicy::parse("allowed.test").unwrap();
    let e = apply_patch(
        &config(),
        &json!({"webhooks": [{"url": "https://evil.test/"}]}),
        &strict,
    )
    .unwrap_err();
    assert_eq!(e.code(), "webhook_host_not_allowed");
}
