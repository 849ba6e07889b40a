//! The agent's HTTP routes: one match from method and path to the handler of each endpoint (txn,
//! session, catalog, health, agent, status, coordinate, operator and the dev-only ones), after the
//! ACL and datacenter checks.

use super::*;

pub(super) async fn route(shared: &Arc<Shared>, req: &Req) -> Result<Resp, Resp> {
    check_acl(shared, req)?;
    if let Some(dc) = req.get("dc")
        && !dc.is_empty()
        && dc != shared.cfg.datacenter
    {
        return Err(text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "No path to datacenter",
        ));
    }
    let path = req.path.as_str();
    let pretty = req.has("pretty");
    if let Some(key) = path.strip_prefix("/v1/kv/") {
        return kv(shared, req, key).await;
    }
    if path == "/v1/kv" {
        return kv(shared, req, "").await;
    }
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let m = &req.method;
    match segs.as_slice() {
        ["v1", "txn"] => {
            if *m != Method::PUT {
                return Err(method_not_allowed(req));
            }
            txn(shared, req, pretty)
        }
        ["v1", "session", "create"] => {
            if *m != Method::PUT {
                return Err(method_not_allowed(req));
            }
            let create = wire::decode_session_create(&req.body)
                .map_err(|e| text(StatusCode::BAD_REQUEST, &e.to_string()))?;
            let now = now();
            let id = shared
                .mutate(|st| st.session_create(create, now))
                .map_err(|e| state_error(&e))?;
            Ok(json_resp(StatusCode::OK, &json!({"ID": id}), pretty))
        }
        ["v1", "session", "renew", id] => {
            if *m != Method::PUT {
                return Err(method_not_allowed(req));
            }
            let now = now();
            let s = shared
                .mutate(|st| st.session_renew(id, now))
                .map_err(|e| state_error(&e))?;
            Ok(json_resp(
                StatusCode::OK,
                &json!([wire::session_json(&s)]),
                pretty,
            ))
        }
        ["v1", "session", "destroy", id] => {
            if *m != Method::PUT {
                return Err(method_not_allowed(req));
            }
            let now = now();
            let ok = shared.mutate(|st| st.session_destroy(id, now));
            Ok(json_resp(StatusCode::OK, &json!(ok), pretty))
        }
        ["v1", "session", "info", id] => {
            get_only(req)?;
            let id = id.to_string();
            blocking_json(shared, req, move |st| {
                let (s, idx) = st.session_info(&id);
                (
                    Value::Array(s.into_iter().map(wire::session_json).collect()),
                    idx,
                )
            })
            .await
        }
        ["v1", "session", "list"] => {
            get_only(req)?;
            blocking_json(shared, req, |st| {
                let (s, idx) = st.session_list();
                (
                    Value::Array(s.into_iter().map(wire::session_json).collect()),
                    idx,
                )
            })
            .await
        }
        ["v1", "session", "node", node] => {
            get_only(req)?;
            let node = node.to_string();
            blocking_json(shared, req, move |st| {
                let (s, idx) = st.session_list();
                (
                    Value::Array(
                        s.into_iter()
                            .filter(|s| s.node == node)
                            .map(wire::session_json)
                            .collect(),
                    ),
                    idx,
                )
            })
            .await
        }
        ["v1", "agent", "service", "register"] => {
            if *m != Method::PUT {
                return Err(method_not_allowed(req));
            }
            let mut reg = wire::decode_service_registration(&req.body)
                .map_err(|e| text(StatusCode::BAD_REQUEST, &e.to_string()))?;
            reg.replace_existing_checks = req.has("replace-existing-checks");
            let now = now();
            shared
                .mutate(|st| st.register_service(reg, now))
                .map_err(|e| state_error(&e))?;
            Ok(empty_ok())
        }
        ["v1", "agent", "service", "deregister", id] => {
            if *m != Method::PUT {
                return Err(method_not_allowed(req));
            }
            let now = now();
            shared.mutate(|st| st.deregister_service(id, now));
            Ok(empty_ok())
        }
        ["v1", "agent", "services"] => {
            get_only(req)?;
            let st = shared.state();
            let map: serde_json::Map<String, Value> = st
                .services()
                .map(|s| {
                    (
                        s.id.clone(),
                        wire::agent_service_json(s, &shared.cfg.datacenter),
                    )
                })
                .collect();
            Ok(json_resp(StatusCode::OK, &Value::Object(map), pretty))
        }
        ["v1", "agent", "service", id] => {
            get_only(req)?;
            agent_service(shared, req, id).await
        }
        ["v1", "agent", "checks"] => {
            get_only(req)?;
            let st = shared.state();
            let node = st.config().node.clone();
            let map: serde_json::Map<String, Value> = st
                .checks()
                .map(|c| (c.id.clone(), wire::check_json(c, &node)))
                .collect();
            Ok(json_resp(StatusCode::OK, &Value::Object(map), pretty))
        }
        [
            "v1",
            "agent",
            "check",
            verb @ ("pass" | "warn" | "fail"),
            id,
        ] => {
            if *m != Method::PUT {
                return Err(method_not_allowed(req));
            }
            let status = match *verb {
                "pass" => Status::Passing,
                "warn" => Status::Warning,
                _ => Status::Critical,
            };
            let note = req.get("note").unwrap_or("").to_string();
            let now = now();
            shared
                .mutate(|st| st.update_ttl_check(id, status, &note, now))
                .map_err(|e| state_error(&e))?;
            Ok(empty_ok())
        }
        ["v1", "agent", "check", "register"] => {
            if *m != Method::PUT {
                return Err(method_not_allowed(req));
            }
            let (def, sid) = wire::decode_check_registration(&req.body)
                .map_err(|e| text(StatusCode::BAD_REQUEST, &e.to_string()))?;
            let now = now();
            shared
                .mutate(|st| st.register_check(def, sid.as_deref(), now))
                .map_err(|e| state_error(&e))?;
            Ok(empty_ok())
        }
        ["v1", "agent", "check", "deregister", id] => {
            if *m != Method::PUT {
                return Err(method_not_allowed(req));
            }
            let now = now();
            shared.mutate(|st| st.deregister_check(id, now));
            Ok(empty_ok())
        }
        ["v1", "agent", "check", "update", id] => {
            if *m != Method::PUT {
                return Err(method_not_allowed(req));
            }
            let v: Value = serde_json::from_slice(&req.body).map_err(|e| {
                text(
                    StatusCode::BAD_REQUEST,
                    &format!("Request decode failed: {e}"),
                )
            })?;
            let status_text = v.get("Status").and_then(Value::as_str).unwrap_or("");
            let Some(status) = Status::parse(status_text) else {
                return Err(text(
                    StatusCode::BAD_REQUEST,
                    &format!("Invalid check status: '{status_text}'"),
                ));
            };
            let output = v
                .get("Output")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let now = now();
            shared
                .mutate(|st| st.update_ttl_check(id, status, &output, now))
                .map_err(|e| state_error(&e))?;
            Ok(empty_ok())
        }
        [
            "v1",
            "agent",
            "health",
            "service",
            by @ ("id" | "name"),
            what,
        ] => {
            get_only(req)?;
            agent_health(shared, req, by == &"id", what)
        }
        ["v1", "health", "node", node] => {
            get_only(req)?;
            let node = node.to_string();
            blocking_json(shared, req, move |st| {
                let cfg_node = st.config().node.clone();
                let list: Vec<Value> = if node == cfg_node {
                    std::iter::once(st.serf_check())
                        .chain(st.checks().cloned())
                        .map(|c| wire::check_json(&c, &cfg_node))
                        .collect()
                } else {
                    Vec::new()
                };
                (Value::Array(list), st.catalog_index())
            })
            .await
        }
        ["v1", "agent", "self"] => {
            get_only(req)?;
            let st = shared.state();
            let cfg = st.config();
            Ok(json_resp(
                StatusCode::OK,
                &json!({
                    "Config": {"Datacenter": cfg.datacenter, "NodeName": cfg.node, "NodeID": cfg.node_id, "Server": true, "Version": "1.16.6-wafleet-dev"},
                    "Member": {"Name": cfg.node, "Addr": cfg.address, "Status": 1},
                }),
                pretty,
            ))
        }
        ["v1", "health", "service", name] => {
            get_only(req)?;
            health_service(shared, req, name).await
        }
        ["v1", "health", "state", state] => {
            get_only(req)?;
            let wanted = match *state {
                "any" => None,
                s => match Status::parse(s) {
                    Some(st) => Some(st),
                    None => return Err(text(StatusCode::BAD_REQUEST, "Invalid state")),
                },
            };
            blocking_json(shared, req, move |st| {
                let node = st.config().node.clone();
                let list: Vec<Value> = std::iter::once(st.serf_check())
                    .chain(st.checks().cloned())
                    .filter(|c| wanted.is_none_or(|w| c.status == w))
                    .map(|c| wire::check_json(&c, &node))
                    .collect();
                (Value::Array(list), st.catalog_index())
            })
            .await
        }
        ["v1", "health", "checks", name] => {
            get_only(req)?;
            let name = name.to_string();
            blocking_json(shared, req, move |st| {
                let node = st.config().node.clone();
                let (_, idx) = st.health_service(&name);
                let list: Vec<Value> = st
                    .checks()
                    .filter(|c| c.service_name == name)
                    .map(|c| wire::check_json(c, &node))
                    .collect();
                (Value::Array(list), idx)
            })
            .await
        }
        ["v1", "catalog", "services"] => {
            get_only(req)?;
            blocking_json(shared, req, |st| {
                let (map, idx) = st.catalog_services();
                (json!(map), idx)
            })
            .await
        }
        ["v1", "catalog", "service", name] => {
            get_only(req)?;
            let name = name.to_string();
            let tags: Vec<String> = req.all("tag").into_iter().map(str::to_string).collect();
            blocking_json(shared, req, move |st| {
                let (entries, idx) = st.health_service(&name);
                let cfg = st.config();
                let list: Vec<Value> = entries
                    .iter()
                    .filter(|e| tags.iter().all(|t| e.service.tags.contains(t)))
                    .map(|e| {
                        let s = &e.service;
                        json!({
                            "ID": cfg.node_id, "Node": cfg.node, "Address": cfg.address,
                            "Datacenter": cfg.datacenter,
                            "TaggedAddresses": {"lan": cfg.address, "wan": cfg.address},
                            "NodeMeta": {},
                            "ServiceID": s.id, "ServiceName": s.name, "ServiceTags": s.tags,
                            "ServiceAddress": s.address, "ServicePort": s.port,
                            "ServiceMeta": s.meta, "ServiceTaggedAddresses": {},
                            "ServiceEnableTagOverride": s.enable_tag_override,
                            "ServiceWeights": {"Passing": s.weights.0, "Warning": s.weights.1},
                            "CreateIndex": s.create_index, "ModifyIndex": s.modify_index,
                        })
                    })
                    .collect();
                (Value::Array(list), idx)
            })
            .await
        }
        ["v1", "catalog", "datacenters"] => {
            get_only(req)?;
            Ok(json_resp(
                StatusCode::OK,
                &json!([shared.cfg.datacenter]),
                pretty,
            ))
        }
        ["v1", "catalog", "nodes"] => {
            get_only(req)?;
            let st = shared.state();
            let idx = st.catalog_index();
            let node = wire::node_json(&st);
            Ok(with_meta(
                json_resp(StatusCode::OK, &json!([node]), pretty),
                idx,
            ))
        }
        ["v1", "status", "leader"] => {
            Ok(json_resp(StatusCode::OK, &json!("127.0.0.1:8300"), pretty))
        }
        ["v1", "status", "peers"] => Ok(json_resp(
            StatusCode::OK,
            &json!(["127.0.0.1:8300"]),
            pretty,
        )),
        _ => Err(text(StatusCode::NOT_FOUND, "404 page not found")),
    }
}
