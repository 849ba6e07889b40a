//! Unit tests of `config`.

use super::*;

fn req(url: &str) -> WebhookRequest {
    WebhookRequest {
        url: url.into(),
        ..Default::default()
    }
}

#[test]
fn url_rules() {
    let any = UrlPolicy::default();
    assert!(WebhookConfig::from_request(&req("https://app.test/hook"), &any).is_ok());
    assert_eq!(
        WebhookConfig::from_request(&req("ftp://app.test/"), &any),
        Err(ConfigError::BadScheme)
    );
    assert_eq!(
        WebhookConfig::from_request(&req("not a url"), &any),
        Err(ConfigError::BadUrl)
    );
    let p = UrlPolicy::parse("app.test, *.laravel.test, 10.1.0.0/16, ::1").unwrap();
    let ok = |u: &str| WebhookConfig::from_request(&req(u), &p).is_ok();
    assert!(ok("https://app.test/x"));
    assert!(ok("https://a.b.laravel.test/x"));
    assert!(!ok("https://laravel.test/x"));
    assert!(ok("http://10.1.200.3:8080/x"));
    assert!(!ok("http://10.2.0.1/x"));
    assert!(!ok("http://169.254.169.254/latest"));
    assert!(ok("http://[::1]:9/x"));
    assert!(!ok("http://127.0.0.1/x"));
    assert!(UrlPolicy::parse("10.0.0.0/33").is_err());
}

#[test]
fn filters_and_headers() {
    let f = EventFilter::only(["message", "message.ack"]).unwrap();
    assert!(f.matches("message") && !f.matches("session.qr"));
    assert!(EventFilter::only(["*"]).unwrap().matches("session.qr"));
    assert!(
        EventFilter::only(Vec::<String>::new())
            .unwrap()
            .matches("x")
    );
    assert!(EventFilter::only(["nope"]).is_err());
    let mut r = req("https://app.test/");
    r.headers = Some([("Signature".to_string(), "x".to_string())].into());
    assert!(matches!(
        WebhookConfig::from_request(&r, &UrlPolicy::default()),
        Err(ConfigError::BadHeader(_))
    ));
    assert!(is_target_id("crm-1_a") && !is_target_id("") && !is_target_id("a/b"));
    assert!(!is_target_id(&"x".repeat(33)));
    r.headers = Some([("X-Tenant".to_string(), "42".to_string())].into());
    let c = WebhookConfig::from_request(&r, &UrlPolicy::default()).unwrap();
    assert_eq!(c.headers.len(), 1);
}

#[test]
fn default_from_lookup() {
    assert_eq!(WebhookConfig::default_from_lookup(|_| None), Ok(None));
    let c = WebhookConfig::default_from_lookup(|k| match k {
        "WAFLEET_WEBHOOK_URL" => Some("https://app.test/hooks".into()),
        "WAFLEET_WEBHOOK_SECRET" => Some("s".into()),
        "WAFLEET_WEBHOOK_EVENTS" => Some("message, message.ack".into()),
        _ => None,
    })
    .unwrap()
    .unwrap();
    assert!(c.events.matches("message.ack") && !c.events.matches("session.qr"));
    // Opt-in events pass only a filter that names them.
    assert!(!EventFilter::all().matches("message.any"));
    assert!(
        EventFilter::only(["message.any"])
            .unwrap()
            .matches("message.any")
    );
    assert!(c.secret.is_some());
    assert!(
        WebhookConfig::default_from_lookup(
            |k| (k == "WAFLEET_WEBHOOK_URL").then(|| "file:///etc/passwd".into())
        )
        .is_err()
    );
}

#[test]
fn registry_falls_back_to_the_default() {
    let reg = Registry::new();
    let ws = WorkspaceId::new("w").unwrap();
    let s = SessionId::new("s").unwrap();
    assert!(reg.targets(&ws, &s).is_empty());
    let d = WebhookConfig::simple(Url::parse("http://d.test/").unwrap(), None)
        .with_id(DEFAULT_TARGET_ID);
    reg.set_default(Some(d.clone()));
    assert_eq!(reg.targets(&ws, &s), vec![d.clone()]);
    assert_eq!(reg.target(&ws, &s, ""), Some(d));
    let own = WebhookConfig::simple(Url::parse("http://own.test/").unwrap(), None);
    let two = WebhookConfig::simple(Url::parse("http://two.test/").unwrap(), None).with_id("crm");
    reg.set_session(
        &ws,
        &s,
        SessionHooks {
            webhooks: vec![own.clone(), two.clone()],
            metadata: serde_json::json!({"tenant": 1}),
        },
    );
    assert_eq!(reg.targets(&ws, &s), vec![own.clone(), two.clone()]);
    assert_eq!(reg.target(&ws, &s, ""), Some(own.clone()));
    assert_eq!(reg.target(&ws, &s, "crm"), Some(two));
    assert_eq!(reg.target(&ws, &s, DEFAULT_TARGET_ID), None);
    assert_eq!(reg.metadata(&ws, &s)["tenant"], 1);
}

/// A session not restored yet (a restarted worker delivering the previous process's
/// events) is looked up through the loader; a deleted one is not.
#[test]
fn registry_asks_the_loader_on_a_miss_but_not_for_deleted_sessions() {
    let reg = Registry::new();
    let ws = WorkspaceId::new("w").unwrap();
    let s = SessionId::new("s").unwrap();
    let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let own = WebhookConfig::simple(Url::parse("http://own.test/").unwrap(), None);
    {
        let (asked, own) = (asked.clone(), own.clone());
        reg.set_loader(Arc::new(move |_, s| {
            asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            (s.as_str() == "s").then(|| SessionHooks {
                webhooks: vec![own.clone()],
                metadata: serde_json::json!({"tenant": 7}),
            })
        }));
    }
    assert_eq!(reg.targets(&ws, &s), vec![own.clone()]);
    assert_eq!(reg.metadata(&ws, &s)["tenant"], 7);
    assert_eq!(
        asked.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "remembered"
    );
    let other = SessionId::new("other").unwrap();
    assert!(reg.targets(&ws, &other).is_empty());
    reg.remove_session(&ws, &s);
    assert!(reg.targets(&ws, &s).is_empty());
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 2);
    reg.set_session(
        &ws,
        &s,
        SessionHooks {
            webhooks: vec![own.clone()],
            metadata: Value::Null,
        },
    );
    assert_eq!(reg.targets(&ws, &s), vec![own]);
}
