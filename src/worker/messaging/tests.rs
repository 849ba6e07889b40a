//! Unit tests of `messaging` (apart so that the module itself stays readable).

use std::collections::BTreeMap;

use super::*;
use crate::worker::host::DesiredState;
use crate::worker::layout::session_file;

#[test]
fn status_reason_only_for_failed_and_qr_timeout_stops() {
    use crate::engine::Status;
    let mut st = crate::engine::state::Machine::new(
        crate::engine::state::Timing::default(),
        crate::engine::state::Now::system(),
    )
    .snapshot();
    let with = |mut st: crate::engine::SessionStatus, status, error: Option<&str>| {
        st.status = status;
        st.last_error = error.map(str::to_owned);
        st
    };
    let qr = "qr_timeout: not linked within 300 s; start the session again for a new QR";
    st = with(st, Status::Stopped, Some(qr));
    assert_eq!(status_reason(&st), Some(qr));
    st = with(st, Status::Failed, Some("crashed: oom"));
    assert_eq!(status_reason(&st), Some("crashed: oom"));
    // An old error is not news for a stop by command or a recovered session.
    st = with(st, Status::Stopped, Some("crashed: oom"));
    assert_eq!(status_reason(&st), None);
    st = with(st, Status::Working, Some(qr));
    assert_eq!(status_reason(&st), None);
    st = with(st, Status::Failed, None);
    assert_eq!(status_reason(&st), None);
}

fn config(s: &str, pacing: Option<PacingConfig>) -> SessionConfig {
    SessionConfig {
        session: SessionId::new(s).unwrap(),
        webhook: None,
        webhooks: Vec::new(),
        metadata: BTreeMap::new(),
        pacing,
        desired: DesiredState::Running,
        created_at_ms: 0,
        reject_calls: false,
        media_download: Default::default(),
    }
}

/// A session's own pacing reaches the send queue, also when it was set before the store
/// opened (sessions are restored before a term opens it), and goes away with the session.
#[tokio::test]
async fn session_pacing_reaches_the_send_queue_across_terms() {
    let dir = tempfile::tempdir().unwrap();
    let m = Messaging::from_lookup(0, dir.path().to_path_buf(), |_| None).unwrap();
    let ws = WorkspaceId::new("acme").unwrap();
    let own = PacingConfig {
        interval_ms: 9_000,
        typing: false,
        ..PacingConfig::default()
    };
    m.on_created(&ws, &config("paced", Some(own.clone())));
    m.on_created(&ws, &config("plain", None));
    let paced = SessionId::new("paced").unwrap();
    let plain = SessionId::new("plain").unwrap();

    m.open().await.unwrap();
    let queue = m.active().unwrap().sendq.clone();
    assert_eq!(queue.pacing(&ws, &paced), own);
    assert_eq!(queue.pacing(&ws, &plain), PacingConfig::default());

    m.on_deleted(&ws, &paced).await;
    assert_eq!(queue.pacing(&ws, &paced), PacingConfig::default());
    assert_eq!(m.session_pacing(&ws, &paced), PacingConfig::default());
    m.close().await;
}

/// The rolling-restart loss (cluster issue, item 8): a worker restarted mid-send finds the
/// previous process's events in the outbox as soon as it opens the store, before it has
/// restored (and so registered) their sessions. Those events are delivered to the
/// session's own webhook from `session.json`, with its metadata, not skipped as "no
/// webhook".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_sessions_not_restored_yet_reach_their_webhook() {
    use warp::Filter;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let route = warp::post()
        .and(warp::path!("hook"))
        .and(warp::body::json())
        .map(move |body: Value| {
            let _ = tx.send(body);
            warp::reply()
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    {
        let stop = stop.clone();
        tokio::spawn(
            warp::serve(route)
                .incoming(listener)
                .graceful(async move { stop.cancelled().await })
                .run(),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let ws = WorkspaceId::new("acme").unwrap();
    let s = SessionId::new("default").unwrap();
    let mut cfg = config("default", None);
    cfg.webhook = Some(crate::worker::host::WebhookConfig {
        id: String::new(),
        url: format!("http://{addr}/hook"),
        secret: None,
        events: Vec::new(),
        headers: BTreeMap::new(),
    });
    cfg.metadata.insert("tenant".into(), json!("t-42"));
    let file = session_file(dir.path(), &ws, &s);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, serde_json::to_vec(&cfg).unwrap()).unwrap();

    let m = Messaging::from_lookup(0, dir.path().to_path_buf(), |_| None).unwrap();
    m.open().await.unwrap();
    // No on_created: the session is not restored yet.
    m.active()
        .unwrap()
        .emitter
        .emit(
            &ws,
            &s,
            events::MESSAGE_SENT,
            json!({"id": "msg_1"}),
            now_ms(),
        )
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("the event reaches the session's webhook")
        .unwrap();
    assert_eq!(got["event"], events::MESSAGE_SENT);
    assert_eq!(got["payload"]["id"], "msg_1");
    assert_eq!(got["metadata"]["tenant"], "t-42");
    m.close().await;
    stop.cancel();
}
