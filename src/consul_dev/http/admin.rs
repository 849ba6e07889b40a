//! Fault injection: the admin paths under `/_dev/faults` (pause, drop, refuse, ACL).

use super::*;

// === fault injection ===

pub(super) fn admin(shared: &Shared, req: &Req) -> Resp {
    let body: wire::FaultBody = if req.body.iter().all(u8::is_ascii_whitespace) {
        wire::FaultBody::default()
    } else {
        match serde_json::from_slice(&req.body) {
            Ok(b) => b,
            Err(e) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    &format!("Request decode failed: {e}"),
                );
            }
        }
    };
    let write = req.method == Method::POST || req.method == Method::PUT;
    let ok = || json_resp(StatusCode::OK, &json!(true), false);
    match (req.path.as_str(), &req.method) {
        ("/_dev/faults", &Method::DELETE) | ("/_dev/faults/clear", _)
            if req.method != Method::GET =>
        {
            let mut rejoin = false;
            shared.update_faults(|f| {
                rejoin = f.rejoin;
                *f = Faults::default();
            });
            // A cleared restart ends now: a node that left joins again, a failed one is alive.
            shared.agent_back(rejoin);
            ok()
        }
        ("/_dev/faults", &Method::GET) => {
            let f = shared.faults().clone();
            json_resp(
                StatusCode::OK,
                &json!({
                    "pause": f.pause.map(|p| match p { PauseMode::Hang => "hang", PauseMode::Unavailable => "unavailable" }),
                    "drop_sessions": f.drop_sessions,
                    "drop_tokens": f.drop_tokens,
                    "index_backwards": f.index_backwards,
                    "errors": f.errors.map(|(s, n)| json!({"status": s, "count": n, "path": f.errors_path})),
                    "delay": f.delay.as_ref().map(|(d, p)| json!({"ms": u64::try_from(d.as_millis()).unwrap_or(u64::MAX), "path": p})),
                    "agent_down_ms": f.down_until.map(|u| u64::try_from(u.saturating_duration_since(now()).as_millis()).unwrap_or(u64::MAX)),
                    "serf_critical": shared.state().serf_critical(&shared.cfg.node),
                }),
                false,
            )
        }
        ("/_dev/faults/pause", _) if write => {
            let mode = match body.mode.as_deref() {
                None | Some("hang") => PauseMode::Hang,
                Some("unavailable") => PauseMode::Unavailable,
                Some(other) => {
                    return text(
                        StatusCode::BAD_REQUEST,
                        &format!("unknown pause mode {other:?} (hang|unavailable)"),
                    );
                }
            };
            shared.update_faults(|f| f.pause = Some(mode));
            ok()
        }
        ("/_dev/faults/resume", _) if write => {
            shared.update_faults(|f| f.pause = None);
            ok()
        }
        ("/_dev/faults/drop", _) if write => {
            if body.session.is_none() && body.token.is_none() {
                return text(
                    StatusCode::BAD_REQUEST,
                    "drop needs \"session\" or \"token\"",
                );
            }
            shared.update_faults(|f| {
                if let Some(s) = body.session.filter(|s| !s.is_empty()) {
                    f.drop_sessions.insert(s);
                }
                if let Some(t) = body.token.filter(|t| !t.is_empty()) {
                    f.drop_tokens.insert(t);
                }
            });
            ok()
        }
        ("/_dev/faults/index-backwards", _) if write => {
            shared.update_faults(|f| f.index_backwards = Some(body.path.unwrap_or_default()));
            ok()
        }
        ("/_dev/faults/errors", _) if write => {
            let status = body.status.unwrap_or(500);
            if !(400..=599).contains(&status) {
                return text(StatusCode::BAD_REQUEST, "status must be 400..=599");
            }
            let count = body.count.unwrap_or(1);
            shared.update_faults(|f| {
                f.errors = (count > 0).then_some((status, count));
                f.errors_path = body.path.unwrap_or_default();
                f.errors_message = body.message.filter(|m| !m.is_empty());
            });
            ok()
        }
        ("/_dev/faults/no-leader", _) if write => {
            // What a Consul server answers while it elects a leader: the RPC fails with
            // structs.ErrNoLeader, which the HTTP layer turns into a 500 with this text.
            let count = body.count.unwrap_or(1);
            shared.update_faults(|f| {
                f.errors = (count > 0).then_some((500, count));
                f.errors_path = body.path.unwrap_or_default();
                f.errors_message = Some("No cluster leader".into());
            });
            ok()
        }
        ("/_dev/agent/restart" | "/_dev/faults/agent-restart", _) if write => {
            let ms = body.ms.unwrap_or(0).min(10 * 60 * 1000);
            let leave = body.leave.unwrap_or(false);
            let now = now();
            let mut invalidated = 0;
            if leave {
                let node = shared.cfg.node.clone();
                invalidated = shared.mutate(|st| st.node_leave(&node, now));
            }
            shared.update_faults(|f| {
                // A restart during a restart keeps the failure detector's clock running.
                if f.down_until.is_none_or(|u| u <= now) {
                    f.down_since = Some(now);
                }
                f.down_until = Some(now + std::time::Duration::from_millis(ms));
                f.rejoin = f.rejoin || leave;
            });
            tracing::info!(ms, leave, invalidated, "consul-dev: agent restarting");
            json_resp(
                StatusCode::OK,
                &json!({"down_ms": ms, "left": leave, "sessions_invalidated": invalidated}),
                false,
            )
        }
        ("/_dev/nodes/join", _) if write => match body.node.filter(|n| valid_node_name(n)) {
            Some(node) => {
                shared.mutate(|st| st.node_join(&node));
                ok()
            }
            None => text(StatusCode::BAD_REQUEST, "join needs a valid \"node\" name"),
        },
        ("/_dev/nodes/leave", _) if write => match body.node.filter(|n| valid_node_name(n)) {
            Some(node) => {
                let now = now();
                let n = shared.mutate(|st| st.node_leave(&node, now));
                json_resp(StatusCode::OK, &json!({"sessions_invalidated": n}), false)
            }
            None => text(StatusCode::BAD_REQUEST, "leave needs a valid \"node\" name"),
        },
        ("/_dev/nodes", &Method::GET) => {
            let nodes: Vec<String> = shared.state().node_names().map(str::to_owned).collect();
            json_resp(StatusCode::OK, &json!(nodes), false)
        }
        ("/_dev/stats", &Method::GET) => {
            let by = shared
                .requests
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let total: u64 = by.values().sum();
            json_resp(
                StatusCode::OK,
                &json!({"requests": total, "by_endpoint": by}),
                false,
            )
        }
        ("/_dev/stats", &Method::DELETE) => {
            shared
                .requests
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
            ok()
        }
        ("/_dev/faults/delay", _) if write => {
            let ms = body.ms.unwrap_or(0).min(10 * 60 * 1000);
            shared.update_faults(|f| {
                f.delay = (ms > 0).then(|| {
                    (
                        std::time::Duration::from_millis(ms),
                        body.path.unwrap_or_default(),
                    )
                });
            });
            ok()
        }
        ("/_dev/faults/forget-services", _) if write => {
            let now = now();
            shared.mutate(|st| st.forget_services(now));
            ok()
        }
        _ => text(StatusCode::NOT_FOUND, "unknown fault path"),
    }
}

/// A node name the admin paths accept: what a hostname may hold.
pub(super) fn valid_node_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 128
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}
