//! Blocking queries (`?index`, `?wait`) and the KV and txn endpoints.

use super::*;

// === blocking queries ===

/// `index` and `wait` of a blocking query.
pub(super) struct Blocking {
    pub(super) min_index: u64,
    pub(super) wait: Duration,
}

pub(super) fn parse_blocking(shared: &Shared, req: &Req) -> Result<Blocking, Resp> {
    let wait = match req.get("wait") {
        None | Some("") => shared.cfg.default_wait,
        Some(w) => parse_go_duration(w)
            .ok_or_else(|| text(StatusCode::BAD_REQUEST, "Invalid wait time"))?
            .min(shared.cfg.max_wait),
    };
    let min_index = match req.get("index") {
        None | Some("") => 0,
        Some(i) => i
            .parse::<u64>()
            .map_err(|_| text(StatusCode::BAD_REQUEST, "Invalid index"))?,
    };
    Ok(Blocking { min_index, wait })
}

/// Runs `query` until its index exceeds the request's `index` or the wait (plus up to
/// wait/16 of jitter) expires; returns the result and the index to report (lowered once when
/// the `index-backwards` fault is armed).
pub(super) async fn block_on<T>(
    shared: &Shared,
    req: &Req,
    query: impl Fn(&State) -> (T, u64),
) -> Result<(T, u64), Resp> {
    let b = parse_blocking(shared, req)?;
    let jitter_ms = u64::try_from(b.wait.as_millis() / 16).unwrap_or(0);
    let jitter = Duration::from_millis(if jitter_ms > 0 {
        rand::random_range(0..=jitter_ms)
    } else {
        0
    });
    let deadline = tokio::time::Instant::now() + b.wait + jitter;
    let mut changed = shared.changed.subscribe();
    let mut faults = shared.faults_changed.subscribe();
    loop {
        changed.borrow_and_update();
        faults.borrow_and_update();
        let (value, idx) = query(&shared.state());
        let backwards = {
            let mut f = shared.faults();
            match &f.index_backwards {
                Some(prefix) if req.path.starts_with(prefix.as_str()) => {
                    f.index_backwards = None;
                    true
                }
                _ => false,
            }
        };
        if backwards {
            return Ok((value, idx / 2));
        }
        if b.min_index == 0 || idx > b.min_index || tokio::time::Instant::now() >= deadline {
            return Ok((value, idx));
        }
        drop(value);
        let _parked = Parked::new(&shared.parked);
        tokio::select! {
            r = changed.changed() => { if r.is_err() { return Ok((query(&shared.state()).0, idx)); } }
            r = faults.changed() => { if r.is_err() { return Ok((query(&shared.state()).0, idx)); } }
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// Counts a parked blocking query for as long as it lives (also when the request is dropped).
pub(super) struct Parked<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Parked<'a> {
    pub(super) fn new(counter: &'a std::sync::atomic::AtomicUsize) -> Self {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Parked(counter)
    }
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

pub(super) async fn blocking_json(
    shared: &Shared,
    req: &Req,
    query: impl Fn(&State) -> (Value, u64),
) -> Result<Resp, Resp> {
    let (v, idx) = block_on(shared, req, query).await?;
    Ok(with_meta(
        json_resp(StatusCode::OK, &v, req.has("pretty")),
        idx,
    ))
}

// === KV ===

/// Parses `flags`/`cas` like Go's `strconv.ParseUint`; Consul returns that error as is, so a
/// bad value is a 500 with Go's text (an empty value is an error too).
pub(super) fn parse_u64(req: &Req, name: &str) -> Result<Option<u64>, Resp> {
    let Some(v) = req.get(name) else {
        return Ok(None);
    };
    match v.parse::<u64>() {
        Ok(n) if !v.starts_with('+') => Ok(Some(n)),
        _ => {
            let why = if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
                "value out of range"
            } else {
                "invalid syntax"
            };
            Err(text(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("strconv.ParseUint: parsing {v:?}: {why}"),
            ))
        }
    }
}

/// Consul's `conflictingFlags` answer: the query re-encoded with sorted keys, like Go's
/// `url.Values.Encode`.
pub(super) fn conflicting_flags(req: &Req) -> Resp {
    let mut pairs: Vec<(&str, &str)> = req
        .query
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    let encoded = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    text(
        StatusCode::BAD_REQUEST,
        &format!("Conflicting flags: {encoded}\n"),
    )
}

pub(super) async fn kv(shared: &Arc<Shared>, req: &Req, key: &str) -> Result<Resp, Resp> {
    // Consul's CVE-2025-11392 fix refuses traversal sequences in the path.
    if key.contains("../") || key.contains("..\\") || key.split('/').any(|s| s == "..") {
        return Err(text(
            StatusCode::BAD_REQUEST,
            "URL path contains invalid traversal sequence",
        ));
    }
    if key.chars().any(|c| c.is_control()) {
        return Err(text(StatusCode::BAD_REQUEST, "Invalid key name"));
    }
    let pretty = req.has("pretty");
    match req.method {
        Method::GET | Method::HEAD => {
            if req.has("keys") {
                let sep = req
                    .get("separator")
                    .or_else(|| req.get("seperator"))
                    .map(str::to_string);
                let prefix = key.to_string();
                let (keys, idx) =
                    block_on(shared, req, |st| st.kv_keys(&prefix, sep.as_deref())).await?;
                if keys.is_empty() && !prefix.is_empty() {
                    return Err(with_meta(text(StatusCode::NOT_FOUND, ""), idx));
                }
                return Ok(with_meta(
                    json_resp(StatusCode::OK, &json!(keys), pretty),
                    idx,
                ));
            }
            if req.has("recurse") {
                let prefix = key.to_string();
                let (list, idx) = block_on(shared, req, |st| {
                    let (entries, idx) = st.kv_list(&prefix);
                    (
                        entries
                            .into_iter()
                            .map(|e| wire::kv_json(e, true))
                            .collect::<Vec<_>>(),
                        idx,
                    )
                })
                .await?;
                if list.is_empty() {
                    return Err(with_meta(text(StatusCode::NOT_FOUND, ""), idx));
                }
                return Ok(with_meta(
                    json_resp(StatusCode::OK, &Value::Array(list), pretty),
                    idx,
                ));
            }
            if key.is_empty() {
                return Err(text(StatusCode::BAD_REQUEST, "Missing key name"));
            }
            let k = key.to_string();
            let (entry, idx) = block_on(shared, req, |st| {
                let (e, idx) = st.kv_get(&k);
                (e.cloned(), idx)
            })
            .await?;
            let Some(entry) = entry else {
                return Err(with_meta(text(StatusCode::NOT_FOUND, ""), idx));
            };
            if req.has("raw") {
                let mut resp = http::Response::new(entry.value.clone());
                let h = resp.headers_mut();
                h.insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain"),
                );
                h.insert(
                    "x-content-type-options",
                    HeaderValue::from_static("nosniff"),
                );
                h.insert(
                    "content-security-policy",
                    HeaderValue::from_static("sandbox"),
                );
                return Ok(with_meta(resp.into_response(), idx));
            }
            Ok(with_meta(
                json_resp(
                    StatusCode::OK,
                    &json!([wire::kv_json(&entry, true)]),
                    pretty,
                ),
                idx,
            ))
        }
        Method::PUT => {
            let modes = ["cas", "acquire", "release"]
                .iter()
                .filter(|f| req.has(f))
                .count();
            if key.is_empty() {
                return Err(text(StatusCode::BAD_REQUEST, "Missing key name"));
            }
            if modes > 1 {
                return Err(conflicting_flags(req));
            }
            let flags = parse_u64(req, "flags")?.unwrap_or(0);
            let mode = if req.has("cas") {
                PutMode::Cas(parse_u64(req, "cas")?.unwrap_or(0))
            } else if req.has("acquire") {
                PutMode::Acquire(req.get("acquire").unwrap_or("").to_string())
            } else if req.has("release") {
                PutMode::Release(req.get("release").unwrap_or("").to_string())
            } else {
                PutMode::Set
            };
            let value = req.body.to_vec();
            let now = now();
            let ok = shared
                .mutate(|st| st.kv_put(key, value, flags, mode, now))
                .map_err(|e| state_error(&e))?;
            Ok(json_resp(StatusCode::OK, &json!(ok), pretty))
        }
        Method::DELETE => {
            if req.has("recurse") && req.has("cas") {
                return Err(conflicting_flags(req));
            }
            let mode = if req.has("recurse") {
                DeleteMode::Tree
            } else if req.has("cas") {
                DeleteMode::Cas(parse_u64(req, "cas")?.unwrap_or(0))
            } else {
                DeleteMode::Single
            };
            let ok = shared
                .mutate(|st| st.kv_delete(key, mode))
                .map_err(|e| state_error(&e))?;
            Ok(json_resp(StatusCode::OK, &json!(ok), pretty))
        }
        _ => Err(method_not_allowed(req)),
    }
}

pub(super) fn txn(shared: &Arc<Shared>, req: &Req, pretty: bool) -> Result<Resp, Resp> {
    let ops =
        wire::decode_txn(&req.body).map_err(|e| text(StatusCode::BAD_REQUEST, &e.to_string()))?;
    if ops.len() > wire::MAX_TXN_OPS {
        return Err(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "Transaction contains too many operations ({} > {})",
                ops.len(),
                wire::MAX_TXN_OPS
            ),
        ));
    }
    let now = now();
    match shared.mutate(|st| st.txn(&ops, now)) {
        Ok(results) => Ok(json_resp(
            StatusCode::OK,
            &wire::txn_results_json(&results),
            pretty,
        )),
        Err(errors) => Err(json_resp(
            StatusCode::CONFLICT,
            &json!({
                "Results": Value::Null,
                "Errors": errors.iter().map(|e| json!({"OpIndex": e.op_index, "What": e.what})).collect::<Vec<_>>(),
            }),
            pretty,
        )),
    }
}
