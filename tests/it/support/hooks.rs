//! A webhook receiver for tests (warp on port 0) that keeps every delivery, and waits on them.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use warp::Filter;

/// What the receiver got: headers, raw body and the status it answered, per delivery.
#[derive(Default)]
pub struct Inbox {
    /// Every delivery in arrival order.
    pub got: Vec<(http::HeaderMap, Bytes, u16)>,
    /// Bodies containing this text are refused with 410 (a receiver that retired the event).
    pub refuse: Option<String>,
}

impl Inbox {
    /// The parsed bodies of every delivery so far.
    pub fn events(&self) -> Vec<Value> {
        self.got
            .iter()
            .filter_map(|(_, b, _)| serde_json::from_slice(b).ok())
            .collect()
    }
}

/// Starts a receiver on port 0 that records into `inbox`; answers its address.
pub fn receiver(inbox: Arc<Mutex<Inbox>>) -> SocketAddr {
    let route = warp::post()
        .and(warp::header::headers_cloned())
        .and(warp::body::bytes())
        .map(move |headers: http::HeaderMap, body: Bytes| {
            let mut ib = inbox.lock().unwrap();
            let refuse = ib
                .refuse
                .as_ref()
                .is_some_and(|r| String::from_utf8_lossy(&body).contains(r.as_str()));
            let code = if refuse { 410 } else { 200 };
            ib.got.push((headers, body, code));
            warp::reply::with_status("", http::StatusCode::from_u16(code).unwrap())
        });
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let addr = std_listener.local_addr().unwrap();
    let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
    tokio::spawn(warp::serve(route).incoming(listener).run());
    addr
}

/// The first delivered event matching `pred`, with its headers and raw body (waits for it).
pub async fn event(
    inbox: &Arc<Mutex<Inbox>>,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&Value) -> bool,
) -> (Value, http::HeaderMap, Bytes) {
    super::wait_for(what, timeout, || {
        let found = inbox.lock().unwrap().got.iter().find_map(|(h, b, _)| {
            let v: Value = serde_json::from_slice(b).ok()?;
            pred(&v).then(|| (v, h.clone(), b.clone()))
        });
        async move { found }
    })
    .await
}
