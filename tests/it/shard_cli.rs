//! `wafleet shards …` and `wafleet route` (the real binary) against the built-in Consul agent
//! (in-process, port 0): CAS create, refusals, plans over the workspace lock keys, apply,
//! pins, routes, and a CAS conflict through the same write path the commands use.

use std::net::SocketAddr;

use serde_json::{Value, json};
use wafleet::consul::{Client, Config, PutOptions, QueryOptions};
use wafleet::consul_dev::{AgentConfig, RunningAgent};
use wafleet::ctl::cli::{CtlError, read_map, write_map};
use wafleet::ids::WorkspaceId;
use wafleet::shard::{Edit, ShardMap, plan};
use wafleet::shutdown::CancellationToken;

struct Env {
    agent: RunningAgent,
    consul: Client,
    cancel: CancellationToken,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn env() -> Env {
    let cancel = CancellationToken::new();
    let agent = wafleet::consul_dev::spawn(AgentConfig::default(), cancel.clone())
        .await
        .unwrap();
    let consul = Client::new(&Config::http(agent.http_addr())).unwrap();
    Env {
        agent,
        consul,
        cancel,
    }
}

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

impl Env {
    async fn run(&self, args: &[&str]) -> Out {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_wafleet"))
            .args(args)
            .env("CONSUL_HTTP_ADDR", self.agent.http_url())
            .env("WAFLEET_CONSUL_DNS", self.agent.dns_addr().to_string())
            .env_remove("CONSUL_HTTP_TOKEN")
            .output()
            .await
            .unwrap();
        Out {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    async fn ok_json(&self, args: &[&str]) -> Value {
        let o = self.run(args).await;
        assert!(o.ok, "{args:?} failed: {}", o.stderr);
        o.json()
    }

    async fn put_cas(&self, key: &str, value: &[u8], cas: u64) -> bool {
        let opts = PutOptions {
            cas: Some(cas),
            ..PutOptions::default()
        };
        self.consul.kv_put(key, value, &opts).await.unwrap()
    }

    async fn stored(&self) -> ShardMap {
        read_map(&self.consul, "wafleet").await.unwrap().unwrap().0
    }
}

fn ws(s: &str) -> WorkspaceId {
    WorkspaceId::new(s).unwrap()
}

#[tokio::test]
async fn init_is_a_cas_create_and_force_replaces() {
    let e = env().await;
    let o = e.run(&["shards", "show"]).await;
    assert!(!o.ok && o.stderr.contains("shards init"), "{}", o.stderr);
    let v = e
        .ok_json(&["shards", "init", "--count", "3", "--json"])
        .await;
    assert_eq!(
        v["map"],
        serde_json::to_value(ShardMap::uniform(3)).unwrap()
    );
    let o = e.run(&["shards", "init", "--count", "4"]).await;
    assert!(!o.ok);
    assert!(
        o.stderr.contains("already exists") && o.stderr.contains("--force"),
        "{}",
        o.stderr
    );
    assert_eq!(e.stored().await, ShardMap::uniform(3));
    let v = e
        .ok_json(&["shards", "init", "--count", "4", "--force", "--json"])
        .await;
    assert_eq!(v["map"]["version"], 2);
    let v = e.ok_json(&["shards", "show", "--json"]).await;
    assert_eq!(v["map"]["shards"].as_array().unwrap().len(), 4);
    assert_eq!(v["map"]["version"], 2);
    // Text output names the version and every shard.
    let o = e.run(&["shards", "show"]).await;
    assert!(
        o.stdout.contains("version 2") && o.stdout.contains("shard    3"),
        "{}",
        o.stdout
    );
    // A corrupt stored map is refused by show and replaced by init --force.
    let (pair, _) = e
        .consul
        .kv_get("wafleet/shardmap", &QueryOptions::default())
        .await
        .unwrap();
    assert!(
        e.put_cas("wafleet/shardmap", b"{broken", pair.unwrap().modify_index)
            .await
    );
    let o = e.run(&["shards", "show"]).await;
    assert!(
        !o.ok && o.stderr.contains("invalid shard map"),
        "{}",
        o.stderr
    );
    assert!(
        e.run(&["shards", "init", "--count", "2", "--force"])
            .await
            .ok
    );
    assert_eq!(e.stored().await.shards.len(), 2);
}

#[tokio::test]
async fn plan_and_apply_move_only_what_the_plan_says() {
    let e = env().await;
    e.ok_json(&["shards", "init", "--count", "4", "--json"])
        .await;
    // Workspaces the fleet serves: their lock keys, plus a file.
    let locked: Vec<WorkspaceId> = (0..150).map(|i| ws(&format!("tenant-{i}"))).collect();
    for w in &locked {
        let key = format!("wafleet/locks/workspaces/{w}");
        assert!(e.put_cas(&key, b"", 0).await);
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ws.txt");
    let extra: Vec<WorkspaceId> = (0..50).map(|i| ws(&format!("extra-{i}"))).collect();
    let text: String = extra.iter().map(|w| format!("{w}\n")).collect::<String>() + "bad/id\n";
    std::fs::write(&file, text).unwrap();
    let mut all = locked.clone();
    all.extend(extra.iter().cloned());
    all.sort();

    let old = e.stored().await;
    let v = e
        .ok_json(&[
            "shards",
            "plan",
            "--count",
            "5",
            "--workspaces-from",
            file.to_str().unwrap(),
            "--json",
        ])
        .await;
    assert_eq!(v["applied"], false);
    assert_eq!(v["workspaces_considered"], 200);
    let expected = plan(&old, &old.edited(&[Edit::Count(5)]).unwrap(), &all);
    assert_eq!(v["moves"], serde_json::to_value(&expected).unwrap());
    assert!(!expected.is_empty() && expected.len() < 100);
    assert_eq!(e.stored().await, old, "plan writes nothing");

    let v = e
        .ok_json(&[
            "shards",
            "apply",
            "--count",
            "5",
            "--workspaces-from",
            file.to_str().unwrap(),
            "--json",
        ])
        .await;
    assert_eq!(v["applied"], true);
    assert_eq!(v["old_version"], 1);
    assert_eq!(v["new_version"], 2);
    assert_eq!(v["moves"], serde_json::to_value(&expected).unwrap());
    let after = e.stored().await;
    assert_eq!(after.version, 2);
    assert_eq!(after.shards.len(), 5);

    // Drain and weight together; every move leaves shard 1.
    let v = e
        .ok_json(&[
            "shards", "apply", "--drain", "1", "--weight", "0=2.5", "--json",
        ])
        .await;
    assert_eq!(v["new_version"], 3);
    let stored = e.stored().await;
    assert_eq!(stored.draining, vec![1]);
    assert_eq!(stored.shards[0].weight, 2.5);
    // Text form prints the plan.
    let o = e.run(&["shards", "plan", "--undrain", "1"]).await;
    assert!(
        o.ok && o.stdout.contains("plan only") && o.stdout.contains("known workspaces move"),
        "{}",
        o.stdout
    );

    // Refusals write nothing.
    for (args, needle) in [
        (vec!["shards", "apply", "--drain", "9"], "does not exist"),
        (
            vec![
                "shards", "apply", "--drain", "0", "--drain", "2", "--drain", "3", "--drain", "4",
            ],
            "every shard is draining",
        ),
        (
            vec!["shards", "apply", "--weight", "2=0"],
            "weights must be finite",
        ),
        (vec!["shards", "apply", "--weight", "2"], "expected K=W"),
        (vec!["shards", "apply"], "nothing to change"),
    ] {
        let o = e.run(&args).await;
        assert!(!o.ok, "{args:?} should fail");
        assert!(o.stderr.contains(needle), "{args:?}: {}", o.stderr);
    }
    assert_eq!(e.stored().await.version, 3);
}

#[tokio::test]
async fn pins_unpins_and_routes() {
    let e = env().await;
    e.ok_json(&["shards", "init", "--count", "3", "--json"])
        .await;
    let map = ShardMap::uniform(3);
    let w = ws("acme-42");
    let target = (map.owner(&w).unwrap() + 1) % 3;
    let v = e
        .ok_json(&["shards", "pin", "acme-42", &target.to_string(), "--json"])
        .await;
    assert_eq!(
        v["moves"],
        json!([{"workspace": "acme-42", "from": map.owner(&w).unwrap(), "to": target}])
    );
    assert_eq!(e.stored().await.pins.get(&w), Some(&target));
    let o = e.run(&["shards", "pin", "acme-42", "7"]).await;
    assert!(!o.ok && o.stderr.contains("does not exist"), "{}", o.stderr);

    // Register shard `target`'s worker so `route` finds its instance through DNS.
    let addr: SocketAddr = "127.0.0.1:45678".parse().unwrap();
    let id = format!("wafleet-worker-{target}");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let reg = json!({
        "ID": id, "Name": "wafleet-worker", "Tags": [format!("shard-{target}")],
        "Address": "127.0.0.1", "Port": addr.port(),
        "Checks": [{"CheckID": format!("{id}:ttl"), "TTL": "60s"}],
    });
    for (path, body) in [
        ("/v1/agent/service/register".to_string(), reg),
        (format!("/v1/agent/check/pass/{id}:ttl"), json!({})),
    ] {
        let r = http
            .put(format!("{}{path}", e.agent.http_url()))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}");
    }
    let v = e.ok_json(&["route", "acme-42", "--json"]).await;
    assert_eq!(v["shard"], target);
    assert_eq!(v["pinned"], true);
    assert_eq!(v["version"], 2);
    assert_eq!(v["instances"], json!([addr.to_string()]));
    let o = e.run(&["route", "acme-42"]).await;
    assert!(
        o.stdout.contains(&addr.to_string()) && o.stdout.contains("(pinned)"),
        "{}",
        o.stdout
    );

    let v = e.ok_json(&["shards", "unpin", "acme-42", "--json"]).await;
    assert_eq!(v["new_version"], 3);
    assert!(e.stored().await.pins.is_empty());
    let v = e.ok_json(&["route", "acme-42", "--json"]).await;
    assert_eq!(v["shard"], map.owner(&w).unwrap());
    assert_eq!(v["pinned"], false);
    let o = e.run(&["route", "bad.id"]).await;
    assert!(!o.ok);
}

#[tokio::test]
async fn a_concurrent_write_is_a_cas_conflict() {
    let e = env().await;
    e.ok_json(&["shards", "init", "--count", "2", "--json"])
        .await;
    let (old, idx) = read_map(&e.consul, "wafleet").await.unwrap().unwrap();
    // Someone else applies a change between our read and our write.
    e.ok_json(&["shards", "apply", "--count", "3", "--json"])
        .await;
    let mine = old.edited(&[Edit::Count(4)]).unwrap();
    let err = write_map(&e.consul, "wafleet", &old, idx, &mine)
        .await
        .unwrap_err();
    assert!(
        matches!(err, CtlError::CasConflict { version: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("CAS conflict"));
    assert_eq!(e.stored().await.shards.len(), 3, "the other write stands");
    // An invalid map is refused before any write.
    let mut bad = old.clone();
    bad.shards.clear();
    assert!(matches!(
        write_map(&e.consul, "wafleet", &old, idx, &bad).await,
        Err(CtlError::Map(_))
    ));
}
