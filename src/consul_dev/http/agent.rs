//! The health and agent service endpoints, and the agent's own check views.

use super::*;

// === health and agent service ===

/// Go's `strconv.ParseBool`, with a bare `?passing` meaning true.
pub(super) fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "" | "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

pub(super) async fn health_service(
    shared: &Arc<Shared>,
    req: &Req,
    name: &str,
) -> Result<Resp, Resp> {
    let passing = match req.get("passing") {
        None => false,
        Some(v) => parse_go_bool(v)
            .ok_or_else(|| text(StatusCode::BAD_REQUEST, "Invalid value for ?passing"))?,
    };
    let expr = match req.get("filter") {
        None | Some("") => None,
        Some(f) => {
            Some(filter::parse(f).map_err(|e| text(StatusCode::BAD_REQUEST, &e.to_string()))?)
        }
    };
    let tags: Vec<String> = req.all("tag").into_iter().map(str::to_string).collect();
    let name = name.to_string();
    blocking_json(shared, req, move |st| {
        let (entries, idx) = st.health_service(&name);
        let cfg = st.config();
        let node = wire::node_json(st);
        let list: Vec<Value> = entries
            .iter()
            .filter(|e| !passing || e.checks.iter().all(|c| c.status == Status::Passing))
            .filter(|e| tags.iter().all(|t| e.service.tags.contains(t)))
            .filter(|e| {
                expr.as_ref()
                    .is_none_or(|x| filter::matches(x, e, &cfg.node, &cfg.address, &cfg.datacenter))
            })
            .map(|e| wire::health_entry_json(e, &node, &cfg.node))
            .collect();
        (Value::Array(list), idx)
    })
    .await
}

/// `GET /v1/agent/service/<id>`: hash-based blocking (`?hash=` + `wait`), as Consul's
/// agent-local endpoints do; 404 `unknown service ID` when absent.
pub(super) async fn agent_service(shared: &Arc<Shared>, req: &Req, id: &str) -> Result<Resp, Resp> {
    let b = parse_blocking(shared, req)?;
    let want_hash = req.get("hash").map(str::to_string);
    let deadline = tokio::time::Instant::now() + b.wait;
    let mut changed = shared.changed.subscribe();
    loop {
        changed.borrow_and_update();
        let v = {
            let st = shared.state();
            st.service(id)
                .map(|s| wire::agent_service_json(s, &shared.cfg.datacenter))
        };
        let Some(v) = v else {
            return Err(text(
                StatusCode::NOT_FOUND,
                &format!("unknown service ID: {id}"),
            ));
        };
        let hash = {
            use sha2::Digest;
            hex::encode(&sha2::Sha256::digest(v.to_string().as_bytes())[..8])
        };
        let unchanged = want_hash.as_deref() == Some(hash.as_str());
        if !unchanged || tokio::time::Instant::now() >= deadline {
            let mut resp = json_resp(StatusCode::OK, &v, req.has("pretty"));
            if let Ok(h) = HeaderValue::from_str(&hash) {
                resp.headers_mut().insert("x-consul-contenthash", h);
            }
            return Ok(resp);
        }
        tokio::select! {
            r = changed.changed() => { if r.is_err() { return Err(text(StatusCode::SERVICE_UNAVAILABLE, "agent shutting down")); } }
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// `GET /v1/agent/health/service/{id,name}/<x>[?format=text]`: the instance's aggregated
/// status (its own checks) as 200 passing / 429 warning / 503 critical, 404 when unknown.
pub(super) fn agent_health(
    shared: &Shared,
    req: &Req,
    by_id: bool,
    what: &str,
) -> Result<Resp, Resp> {
    let st = shared.state();
    let dc = &shared.cfg.datacenter;
    let node = st.config().node.clone();
    let entries: Vec<(Status, Value)> = st
        .services()
        .filter(|s| if by_id { s.id == what } else { s.name == what })
        .map(|s| {
            let checks: Vec<_> = st.checks().filter(|c| c.service_id == s.id).collect();
            let status = checks
                .iter()
                .map(|c| c.status)
                .max()
                .unwrap_or(Status::Passing);
            let v = json!({
                "AggregatedStatus": status.as_str(),
                "Service": wire::agent_service_json(s, dc),
                "Checks": checks.iter().map(|c| wire::check_json(c, &node)).collect::<Vec<_>>(),
            });
            (status, v)
        })
        .collect();
    drop(st);
    if entries.is_empty() {
        let msg = if by_id {
            format!("ServiceId {what} not found")
        } else {
            format!("ServiceName {what} Not Found")
        };
        return Err(text(StatusCode::NOT_FOUND, &msg));
    }
    let worst = entries
        .iter()
        .map(|(s, _)| *s)
        .max()
        .unwrap_or(Status::Passing);
    let code = match worst {
        Status::Passing => StatusCode::OK,
        Status::Warning => StatusCode::TOO_MANY_REQUESTS,
        Status::Critical => StatusCode::SERVICE_UNAVAILABLE,
    };
    if req.get("format") == Some("text") {
        return Ok(text(code, worst.as_str()));
    }
    let body = if by_id {
        entries
            .into_iter()
            .map(|(_, v)| v)
            .next()
            .unwrap_or(Value::Null)
    } else {
        Value::Array(entries.into_iter().map(|(_, v)| v).collect())
    };
    Ok(json_resp(code, &body, req.has("pretty")))
}
