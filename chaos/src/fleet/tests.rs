//! Unit tests of `fleet`.

use super::*;

#[test]
fn state_json_is_read_leniently() {
    let s: DevState = serde_json::from_str(
        r#"{"consul_http":"127.0.0.1:1","router":"127.0.0.1:2","extra":true,
            "workers":[{"shard":0,"pid":42,"addr":"127.0.0.1:3","restarts":1}]}"#,
    )
    .unwrap();
    assert_eq!(s.workers[0].pid, 42);
    assert_eq!(s.sim, None);
    assert!(
        serde_json::from_str::<DevState>("{}")
            .unwrap()
            .workers
            .is_empty()
    );
}

#[test]
fn attach_reads_the_token_file_and_derives_the_data_dir() {
    let d = tempfile::tempdir().unwrap();
    let dev = d.path().join("dev");
    std::fs::create_dir_all(&dev).unwrap();
    std::fs::write(dev.join("admin-token"), "tok\n").unwrap();
    let state = dev.join("state.json");
    let body = serde_json::json!({
        "admin_token_file": dev.join("admin-token"),
        "workers": [{"shard": 0, "pid": 1, "addr": "127.0.0.1:9"}],
    });
    std::fs::write(&state, body.to_string()).unwrap();
    let f = Fleet::attach(&state, "wafleet".into(), |_| None).unwrap();
    assert_eq!(f.admin, "tok");
    assert_eq!(f.data, d.path());
    assert!(!f.owned());
    assert_eq!(f.workers().len(), 1);
    // The environment wins over the file.
    let f = Fleet::attach(&state, "wafleet".into(), |k| {
        (k == "WAFLEET_ADMIN_TOKEN").then(|| "env".to_owned())
    })
    .unwrap();
    assert_eq!(f.admin, "env");
    // No token anywhere: a clear error.
    std::fs::write(&state, "{}").unwrap();
    assert!(Fleet::attach(&state, "wafleet".into(), |_| None).is_err());
}

#[test]
fn random_hex_has_the_requested_length() {
    assert_eq!(hex(24).len(), 48);
    assert!(hex(4).chars().all(|c| c.is_ascii_hexdigit()));
}
