//! Unit tests of `proxy`.

use super::*;

#[test]
fn hop_by_hop_headers_go() {
    let mut h = HeaderMap::new();
    h.insert("connection", HeaderValue::from_static("close, x-secret"));
    h.insert("x-secret", HeaderValue::from_static("1"));
    h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
    h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
    h.insert("authorization", HeaderValue::from_static("Bearer t"));
    h.insert("content-type", HeaderValue::from_static("application/json"));
    strip_hop_by_hop(&mut h);
    let mut left: Vec<_> = h.keys().map(|k| k.as_str().to_owned()).collect();
    left.sort();
    assert_eq!(left, vec!["authorization", "content-type"]);
}

#[test]
fn a_421_is_retried_on_our_new_owner_else_the_named_one() {
    // Our map moved it: ours wins (the worker may be the stale one).
    assert_eq!(retry_shard(0, Some(2), Some(1)), 2);
    // Our map still says 0: trust the worker's newer view.
    assert_eq!(retry_shard(0, Some(0), Some(1)), 1);
    assert_eq!(retry_shard(0, None, Some(1)), 1);
    // Nothing better known: the same shard, freshly resolved.
    assert_eq!(retry_shard(0, Some(0), None), 0);
    assert_eq!(retry_shard(3, None, None), 3);
}

#[test]
fn request_ids_are_propagated_or_generated() {
    let mut h = HeaderMap::new();
    h.insert("x-request-id", HeaderValue::from_static("abc-123"));
    assert_eq!(request_id(&h), "abc-123");
    h.insert("x-request-id", HeaderValue::from_static(""));
    assert_eq!(request_id(&h).len(), 26);
    assert_eq!(request_id(&HeaderMap::new()).len(), 26);
}
