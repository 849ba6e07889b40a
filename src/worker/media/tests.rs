//! The media service over a real SQLite index and a real directory: the size cap deletes the
//! oldest files first, the retention age deletes old ones, shared objects stay while a row
//! references them, a deleted session loses its files.

use super::*;

fn row(wa_id: &str, sha: char, size: u64, at: u64) -> MediaRow {
    MediaRow {
        workspace: "acme".into(),
        session: "default".into(),
        wa_id: wa_id.into(),
        sha256: sha.to_string().repeat(64),
        size,
        mimetype: Some("image/png".into()),
        filename: None,
        stored_at: at,
    }
}

async fn setup(
    cap: u64,
    retention: Option<Duration>,
) -> (tempfile::TempDir, Arc<MediaService>, Store) {
    let dir = tempfile::tempdir().unwrap();
    let config = MediaConfig {
        store_max_bytes: cap,
        retention,
        ..MediaConfig::default()
    };
    let svc = Arc::new(MediaService::new(0, dir.path().to_path_buf(), config).unwrap());
    let index = Store::open(dir.path().join("wafleet.db")).await.unwrap();
    (dir, svc, index)
}

async fn put(svc: &MediaService, index: &Store, dir: &std::path::Path, r: &MediaRow) {
    let tmp = dir.join(format!("tmp-{}", r.wa_id));
    tokio::fs::write(&tmp, vec![7u8; r.size as usize])
        .await
        .unwrap();
    svc.keep(index, r, &tmp).await.unwrap();
}

fn object(dir: &std::path::Path, r: &MediaRow) -> PathBuf {
    MediaService::local_root(dir, 0)
        .join("acme/default")
        .join(&r.sha256)
}

#[tokio::test]
async fn the_cap_deletes_the_oldest_files_first() {
    let (dir, svc, index) = setup(10, None).await;
    let (a, b, c) = (
        row("false_1@c.us_A", 'a', 4, 1_000),
        row("false_1@c.us_B", 'b', 4, 2_000),
        row("false_1@c.us_C", 'c', 4, 3_000),
    );
    for r in [&b, &a, &c] {
        put(&svc, &index, dir.path(), r).await;
    }
    assert_eq!(index.media_total_bytes().await.unwrap(), 12);
    assert_eq!(svc.enforce(&index, 4_000).await.unwrap(), 1);
    assert!(!object(dir.path(), &a).exists(), "the oldest went");
    assert!(object(dir.path(), &b).exists() && object(dir.path(), &c).exists());
    let ws = WorkspaceId::new("acme").unwrap();
    let s = SessionId::new("default").unwrap();
    assert!(index.media_get(&ws, &s, &a.wa_id).await.unwrap().is_none());
    assert_eq!(index.media_total_bytes().await.unwrap(), 8);
    assert_eq!(
        svc.enforce(&index, 5_000).await.unwrap(),
        0,
        "under the cap"
    );
}

#[tokio::test]
async fn retention_deletes_old_files_and_shared_objects_stay_while_referenced() {
    let (dir, svc, index) = setup(1 << 30, Some(Duration::from_secs(10))).await;
    let old = row("false_1@c.us_OLD", 'd', 3, 1_000);
    let same = row("false_1@c.us_SAME", 'd', 3, 9_000);
    let fresh = row("false_1@c.us_NEW", 'e', 3, 20_000);
    for r in [&old, &same, &fresh] {
        put(&svc, &index, dir.path(), r).await;
    }
    assert_eq!(
        index.media_total_bytes().await.unwrap(),
        6,
        "one object per content"
    );
    // At 15 s only `old` is past 10 s; its object is shared with `same`, so it stays.
    assert_eq!(svc.enforce(&index, 15_000).await.unwrap(), 1);
    assert!(object(dir.path(), &same).exists());
    assert_eq!(svc.enforce(&index, 25_000).await.unwrap(), 1);
    assert!(
        !object(dir.path(), &same).exists(),
        "the last reference went"
    );
    assert!(object(dir.path(), &fresh).exists());
    let (ws, s) = (
        WorkspaceId::new("acme").unwrap(),
        SessionId::new("default").unwrap(),
    );
    svc.open(index.clone(), &TaskTracker::new(), CancellationToken::new());
    svc.delete_session(&ws, &s).await;
    assert!(!object(dir.path(), &fresh).exists());
    assert!(index.media_of_session(&ws, &s).await.unwrap().is_empty());
}

#[test]
fn configuration_from_the_environment() {
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    };
    let c = MediaConfig::from_lookup(env(&[])).unwrap();
    assert_eq!(c, MediaConfig::default());
    let c = MediaConfig::from_lookup(env(&[
        ("WAFLEET_MEDIA_STORE", "s3"),
        ("WAFLEET_MEDIA_S3_BUCKET", "media"),
        ("WAFLEET_MEDIA_S3_ENDPOINT", "http://127.0.0.1:9000"),
        ("WAFLEET_MEDIA_S3_ALLOW_HTTP", "true"),
        ("WAFLEET_MEDIA_RETENTION_SECS", "0"),
        ("WAFLEET_MEDIA_STORE_MAX_BYTES", "1000"),
    ]))
    .unwrap();
    let s3 = c.s3.unwrap();
    assert_eq!((s3.bucket.as_str(), s3.allow_http), ("media", true));
    assert_eq!((c.retention, c.store_max_bytes), (None, 1000));
    for bad in [
        &[("WAFLEET_MEDIA_STORE", "s3")][..],
        &[("WAFLEET_MEDIA_STORE", "ftp")][..],
        &[("WAFLEET_MEDIA_STORE_MAX_BYTES", "lots")][..],
        &[("WAFLEET_MEDIA_EAGER_CONCURRENCY", "0")][..],
    ] {
        let pairs: &'static [(&'static str, &'static str)] = bad;
        assert!(MediaConfig::from_lookup(env(pairs)).is_err(), "{bad:?}");
    }
}
