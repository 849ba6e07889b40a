//! Unit tests of the client: configuration from the environment, URL building, flags.

use super::*;

#[test]
fn a_fallback_address_keeps_the_token_and_the_scheme() {
    let main = Config::from_lookup(|k| match k {
        "CONSUL_HTTP_ADDR" => Some("127.0.0.1:8500".into()),
        "CONSUL_HTTP_SSL" => Some("true".into()),
        "CONSUL_HTTP_TOKEN" => Some("secret".into()),
        _ => None,
    })
    .unwrap();
    let f = main.for_address(" 10.0.0.2:8501 ").unwrap();
    assert_eq!(
        f.address.as_ref().map(Url::as_str),
        Some("https://10.0.0.2:8501/")
    );
    assert_eq!(f.token.as_deref(), Some("secret"));
    let f = main.for_address("http://10.0.0.3:8500").unwrap();
    assert_eq!(
        f.address.as_ref().map(Url::as_str),
        Some("http://10.0.0.3:8500/")
    );
    for bad in ["", "ftp://x:1", "http://"] {
        assert!(main.for_address(bad).is_err(), "{bad:?}");
    }
}

fn client() -> Client {
    Client::new(&Config::http("127.0.0.1:8500".parse().unwrap())).unwrap()
}

#[test]
fn config_defaults_and_env() {
    let c = Config::from_lookup(|_| None).unwrap();
    assert_eq!(c.address.unwrap().as_str(), "http://127.0.0.1:8500/");
    assert!(c.token.is_none());
    let c = Config::from_lookup(|k| match k {
        "CONSUL_HTTP_ADDR" => Some("https://consul.example:8501".into()),
        "CONSUL_HTTP_TOKEN" => Some("s3cr3t".into()),
        _ => None,
    })
    .unwrap();
    assert_eq!(c.address.as_ref().unwrap().scheme(), "https");
    assert_eq!(c.token.as_deref(), Some("s3cr3t"));
    assert!(!format!("{c:?}").contains("s3cr3t"));
    let bare =
        Config::from_lookup(|k| (k == "CONSUL_HTTP_ADDR").then(|| "10.0.0.1:8500".into())).unwrap();
    assert_eq!(bare.address.unwrap().as_str(), "http://10.0.0.1:8500/");
    assert!(
        Config::from_lookup(|k| (k == "CONSUL_HTTP_ADDR").then(|| "unix:///x".into())).is_err()
    );
    assert!(Config::from_lookup(|k| (k == "CONSUL_CLIENT_CERT").then(|| "/c.pem".into())).is_err());
    let dir = tempfile::tempdir().unwrap();
    let tf = dir.path().join("token");
    std::fs::write(&tf, "from-file\n").unwrap();
    let tfs = tf.to_str().unwrap().to_owned();
    let c = Config::from_lookup(|k| (k == "CONSUL_HTTP_TOKEN_FILE").then(|| tfs.clone())).unwrap();
    assert_eq!(c.token.as_deref(), Some("from-file"));
    let both = Config::from_lookup(|k| match k {
        "CONSUL_HTTP_TOKEN" => Some("env-wins".into()),
        "CONSUL_HTTP_TOKEN_FILE" => Some(tfs.clone()),
        _ => None,
    })
    .unwrap();
    assert_eq!(both.token.as_deref(), Some("env-wins"));
    assert!(
        Config::from_lookup(|k| (k == "CONSUL_HTTP_TOKEN_FILE").then(|| "/nonexistent/t".into()))
            .is_err()
    );
    let bad_token = Config::http("127.0.0.1:1".parse().unwrap()).with_token("a\nb");
    assert!(matches!(
        Client::new(&bad_token),
        Err(ConsulError::Config(_))
    ));
    let missing_ca =
        Config::from_lookup(|k| (k == "CONSUL_CACERT").then(|| "/nonexistent/ca.pem".into()))
            .unwrap();
    assert!(matches!(
        Client::new(&missing_ca),
        Err(ConsulError::Config(_))
    ));
    let debug = format!(
        "{:?}",
        Client::new(&Config::http("127.0.0.1:1".parse().unwrap()).with_token("tok-xyz")).unwrap()
    );
    assert!(!debug.contains("tok-xyz"));
}

#[test]
fn urls_encode_each_segment() {
    let c = client();
    assert_eq!(
        c.url(&["v1", "kv"], Some("wafleet/locks/shards/7"))
            .as_str(),
        "http://127.0.0.1:8500/v1/kv/wafleet/locks/shards/7"
    );
    assert_eq!(
        c.url(&["v1", "kv"], Some("a b/c?d#e%f")).as_str(),
        "http://127.0.0.1:8500/v1/kv/a%20b/c%3Fd%23e%25f"
    );
    assert_eq!(
        c.url(&["v1", "kv"], Some("wafleet/")).as_str(),
        "http://127.0.0.1:8500/v1/kv/wafleet/"
    );
    let with_path = Client::new(&Config {
        address: Url::parse("http://h:1/consul/").ok(),
        ..Config::default()
    })
    .unwrap();
    assert_eq!(
        with_path.url(&["v1", "kv"], Some("k")).as_str(),
        "http://h:1/consul/v1/kv/k"
    );
}

#[test]
fn flags_are_presence_only_and_blocking_params_set_timeout() {
    let c = client();
    let mut url = c.url(&["v1", "kv"], Some("p/"));
    append_flag(&mut url.query_pairs_mut(), "recurse");
    let req = c
        .request(
            Method::GET,
            url,
            Some(&QueryOptions::blocking(42, Duration::from_secs(16))),
        )
        .build()
        .unwrap();
    assert_eq!(req.url().query(), Some("recurse&index=42&wait=16s"));
    assert!(req.timeout().unwrap() > &Duration::from_secs(17));
    let plain = c
        .request(
            Method::GET,
            c.url(&["v1", "kv"], Some("k")),
            Some(&QueryOptions::default()),
        )
        .build()
        .unwrap();
    assert_eq!(plain.url().query(), None);
    let zero = c
        .request(
            Method::GET,
            c.url(&["v1", "kv"], Some("k")),
            Some(&QueryOptions {
                index: Some(0),
                ..Default::default()
            }),
        )
        .build()
        .unwrap();
    assert_eq!(zero.url().query(), None, "index=0 is never sent");
}

#[tokio::test]
async fn invalid_keys_are_refused_before_any_request() {
    // Port 1 on loopback: any request would fail with a transport error instead.
    let c = Client::new(&Config::http("127.0.0.1:1".parse().unwrap())).unwrap();
    for k in ["", "/a", "a//b", "a/../b", "a\nb"] {
        assert!(
            matches!(
                c.kv_get(k, &QueryOptions::default()).await,
                Err(ConsulError::InvalidKey { .. })
            ),
            "{k:?}"
        );
        assert!(
            matches!(
                c.kv_put(k, b"v", &PutOptions::default()).await,
                Err(ConsulError::InvalidKey { .. })
            ),
            "{k:?}"
        );
        assert!(
            matches!(
                c.kv_delete(k, &DeleteOptions::default()).await,
                Err(ConsulError::InvalidKey { .. })
            ),
            "{k:?}"
        );
    }
    assert!(matches!(
        c.kv_delete(
            "",
            &DeleteOptions {
                recurse: true,
                cas: None
            }
        )
        .await,
        Err(ConsulError::InvalidKey { .. })
    ));
    let both = PutOptions {
        cas: Some(1),
        acquire: Some("s".into()),
        ..Default::default()
    };
    assert!(matches!(
        c.kv_put("k", b"", &both).await,
        Err(ConsulError::InvalidRequest(_))
    ));
    assert!(matches!(
        c.txn(&[TxnKvOp::set("a//b", "x")]).await,
        Err(ConsulError::InvalidKey { .. })
    ));
    assert!(matches!(
        c.kv_get("ok", &QueryOptions::default()).await,
        Err(ConsulError::Transport(_))
    ));
}
