//! Consul's JSON wire format for the built-in agent: request bodies it accepts (PascalCase, and
//! snake_case where Consul accepts it) and the response shapes it returns.
//!
//! Conversion only; the rules live in `state.rs`. Lenient on input (unknown fields ignored,
//! durations as Go strings or nanosecond numbers), exact on output (`[]` never `null` for lists,
//! `Value` base64 or `null`, `LockDelay` in nanoseconds).

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::duration::parse_go_duration;
use super::state::{
    CheckDefinition, CheckEntry, CheckKind, HealthEntry, KvEntry, ServiceEntry,
    ServiceRegistration, SessionCreate, SessionEntry, State, Status, TxnKvOp, TxnResult,
};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A JSON body could not be used; the text is what Consul answers with 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The body does not decode (`Request decode failed: …`).
    #[error("Request decode failed: {0}")]
    Decode(String),
    /// It decodes but a value is invalid; Consul's own text.
    #[error("{0}")]
    Invalid(String),
}

fn dec(e: impl std::fmt::Display) -> DecodeError {
    DecodeError::Decode(e.to_string())
}

/// A duration field: a Go duration string or a number of nanoseconds.
fn duration_field(v: &Value, field: &str) -> Result<Option<Duration>, DecodeError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) => parse_go_duration(s)
            .map(Some)
            .ok_or_else(|| DecodeError::Decode(format!("{field}: time: invalid duration {s:?}"))),
        Value::Number(n) => n
            .as_u64()
            .map(|ns| Some(Duration::from_nanos(ns)))
            .ok_or_else(|| DecodeError::Decode(format!("{field}: invalid duration {n}"))),
        other => Err(DecodeError::Decode(format!(
            "{field}: invalid duration {other}"
        ))),
    }
}

/// Looks up a field by any of its accepted spellings.
fn field<'a>(obj: &'a serde_json::Map<String, Value>, names: &[&str]) -> &'a Value {
    names
        .iter()
        .find_map(|n| obj.get(*n))
        .unwrap_or(&Value::Null)
}

fn string_field(
    obj: &serde_json::Map<String, Value>,
    names: &[&str],
) -> Result<String, DecodeError> {
    match field(obj, names) {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        other => Err(DecodeError::Decode(format!(
            "{}: expected a string, got {other}",
            names[0]
        ))),
    }
}

fn string_list(
    obj: &serde_json::Map<String, Value>,
    names: &[&str],
) -> Result<Option<Vec<String>>, DecodeError> {
    match field(obj, names) {
        Value::Null => Ok(None),
        v => serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|e| DecodeError::Decode(format!("{}: {e}", names[0]))),
    }
}

fn object(v: &Value) -> Result<&serde_json::Map<String, Value>, DecodeError> {
    v.as_object()
        .ok_or_else(|| DecodeError::Decode(format!("expected a JSON object, got {v}")))
}

// === session create ===

/// Decodes a `PUT /v1/session/create` body (an empty body means all defaults).
pub fn decode_session_create(body: &[u8]) -> Result<SessionCreate, DecodeError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(SessionCreate::default());
    }
    let v: Value = serde_json::from_slice(body).map_err(dec)?;
    let o = object(&v)?;
    let lock_delay = match field(o, &["LockDelay", "lock_delay"]) {
        Value::Null => None,
        // FixupLockDelay: a bare number below 1000 means seconds, otherwise nanoseconds.
        Value::Number(n) => {
            let n = n
                .as_u64()
                .ok_or_else(|| DecodeError::Decode(format!("LockDelay: invalid value {n}")))?;
            Some(if n < 1000 {
                Duration::from_secs(n)
            } else {
                Duration::from_nanos(n)
            })
        }
        other => duration_field(other, "LockDelay")?,
    };
    let node = string_field(o, &["Node", "node"])?;
    let mut node_checks = string_list(o, &["NodeChecks", "node_checks"])?;
    if let Some(checks) = string_list(o, &["Checks", "checks"])? {
        node_checks.get_or_insert_with(Vec::new).extend(checks);
    }
    let service_checks = match field(o, &["ServiceChecks", "service_checks"]) {
        Value::Null => Vec::new(),
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::Object(m) => string_field(m, &["ID", "id"]),
                Value::String(s) => Ok(s.clone()),
                other => Err(DecodeError::Decode(format!(
                    "ServiceChecks: invalid entry {other}"
                ))),
            })
            .collect::<Result<_, _>>()?,
        other => {
            return Err(DecodeError::Decode(format!(
                "ServiceChecks: invalid value {other}"
            )));
        }
    };
    let ttl = match field(o, &["TTL", "ttl"]) {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => {
            return Err(DecodeError::Decode(format!(
                "TTL: expected a string, got {other}"
            )));
        }
    };
    Ok(SessionCreate {
        name: string_field(o, &["Name", "name"])?,
        node: (!node.is_empty()).then_some(node),
        lock_delay,
        behavior: string_field(o, &["Behavior", "behavior"])?,
        ttl,
        node_checks,
        service_checks,
    })
}

/// Renders a session as Consul does (`LockDelay` in nanoseconds).
pub fn session_json(s: &SessionEntry) -> Value {
    json!({
        "ID": s.id,
        "Name": s.name,
        "Node": s.node,
        "LockDelay": u64::try_from(s.lock_delay.as_nanos()).unwrap_or(u64::MAX),
        "Behavior": s.behavior.as_str(),
        "TTL": s.ttl,
        "NodeChecks": s.node_checks,
        "ServiceChecks": if s.service_checks.is_empty() {
            Value::Null
        } else {
            Value::Array(s.service_checks.iter().map(|c| json!({"ID": c, "Namespace": ""})).collect())
        },
        "CreateIndex": s.create_index,
        "ModifyIndex": s.modify_index,
    })
}

// === KV ===

/// Renders a KV entry (`Value` base64 or `null`; `Session` only when held).
pub fn kv_json(e: &KvEntry, with_value: bool) -> Value {
    let mut v = json!({
        "LockIndex": e.lock_index,
        "Key": e.key,
        "Flags": e.flags,
        "Value": if with_value && !e.value.is_empty() { Value::String(B64.encode(&e.value)) } else { Value::Null },
        "CreateIndex": e.create_index,
        "ModifyIndex": e.modify_index,
    });
    if let (Some(s), Some(map)) = (&e.session, v.as_object_mut()) {
        map.insert("Session".to_string(), Value::String(s.clone()));
    }
    v
}

// === txn ===

/// Most operations in one transaction (Consul's documented KV limit).
pub const MAX_TXN_OPS: usize = 64;

/// Decodes a `PUT /v1/txn` body holding KV operations only.
pub fn decode_txn(body: &[u8]) -> Result<Vec<TxnKvOp>, DecodeError> {
    let v: Value = serde_json::from_slice(body).map_err(dec)?;
    let Value::Array(items) = v else {
        return Err(DecodeError::Decode(
            "expected a JSON array of operations".to_string(),
        ));
    };
    items
        .iter()
        .map(|item| {
            let o = object(item)?;
            let kv = o.get("KV").ok_or_else(|| {
                DecodeError::Decode(
                    "only KV operations are supported by the built-in agent".to_string(),
                )
            })?;
            let kv = object(kv)?;
            let value = match field(kv, &["Value"]) {
                Value::Null => Vec::new(),
                Value::String(s) => B64
                    .decode(s)
                    .map_err(|e| DecodeError::Decode(format!("Value: {e}")))?,
                other => return Err(DecodeError::Decode(format!("Value: invalid value {other}"))),
            };
            let num = |name: &str| -> Result<u64, DecodeError> {
                match field(kv, &[name]) {
                    Value::Null => Ok(0),
                    Value::Number(n) => n
                        .as_u64()
                        .ok_or_else(|| DecodeError::Decode(format!("{name}: invalid value {n}"))),
                    other => Err(DecodeError::Decode(format!(
                        "{name}: invalid value {other}"
                    ))),
                }
            };
            Ok(TxnKvOp {
                verb: string_field(kv, &["Verb"])?,
                key: string_field(kv, &["Key"])?,
                value,
                flags: num("Flags")?,
                index: num("Index")?,
                session: string_field(kv, &["Session"])?,
            })
        })
        .collect()
}

/// Renders transaction results.
pub fn txn_results_json(results: &[TxnResult]) -> Value {
    json!({
        "Results": results.iter().map(|r| json!({"KV": kv_json(&r.entry, r.with_value)})).collect::<Vec<_>>(),
        "Errors": Value::Null,
    })
}

// === services and checks ===

#[derive(Debug, Default, Deserialize)]
struct WeightsIn {
    #[serde(alias = "passing", default)]
    #[serde(rename = "Passing")]
    passing: i64,
    #[serde(alias = "warning", default)]
    #[serde(rename = "Warning")]
    warning: i64,
}

fn decode_check(v: &Value) -> Result<CheckDefinition, DecodeError> {
    let o = object(v)?;
    let status = string_field(o, &["Status", "status"])?;
    let header = match field(o, &["Header", "header"]) {
        Value::Null => BTreeMap::new(),
        h => serde_json::from_value(h.clone())
            .map_err(|e| DecodeError::Decode(format!("Header: {e}")))?,
    };
    let http = string_field(o, &["HTTP", "http"])?;
    let method = string_field(o, &["Method", "method"])?;
    Ok(CheckDefinition {
        check_id: Some(string_field(o, &["CheckID", "check_id", "ID", "id"])?)
            .filter(|s| !s.is_empty()),
        name: Some(string_field(o, &["Name", "name"])?).filter(|s| !s.is_empty()),
        notes: string_field(o, &["Notes", "notes"])?,
        ttl: duration_field(field(o, &["TTL", "ttl"]), "TTL")?,
        http: (!http.is_empty()).then_some(http),
        method: (!method.is_empty()).then_some(method),
        header,
        interval: duration_field(field(o, &["Interval", "interval"]), "Interval")?,
        timeout: duration_field(field(o, &["Timeout", "timeout"]), "Timeout")?,
        tls_skip_verify: field(o, &["TLSSkipVerify", "tls_skip_verify"])
            .as_bool()
            .unwrap_or(false),
        status: if status.is_empty() {
            None
        } else {
            Some(Status::parse(&status).ok_or_else(|| {
                DecodeError::Invalid(
                    "Status for checks must 'passing', 'warning', 'critical'".to_string(),
                )
            })?)
        },
        deregister_critical_after: duration_field(
            field(
                o,
                &[
                    "DeregisterCriticalServiceAfter",
                    "deregister_critical_service_after",
                ],
            ),
            "DeregisterCriticalServiceAfter",
        )?,
    })
}

/// Decodes a `PUT /v1/agent/check/register` body: the check and its optional `ServiceID`.
pub fn decode_check_registration(
    body: &[u8],
) -> Result<(CheckDefinition, Option<String>), DecodeError> {
    let v: Value = serde_json::from_slice(body).map_err(dec)?;
    let def = decode_check(&v)?;
    let sid = string_field(object(&v)?, &["ServiceID", "service_id"])?;
    Ok((def, (!sid.is_empty()).then_some(sid)))
}

/// Decodes a `PUT /v1/agent/service/register` body.
pub fn decode_service_registration(body: &[u8]) -> Result<ServiceRegistration, DecodeError> {
    let v: Value = serde_json::from_slice(body).map_err(dec)?;
    let o = object(&v)?;
    let meta: BTreeMap<String, String> = match field(o, &["Meta", "meta"]) {
        Value::Null => BTreeMap::new(),
        m => serde_json::from_value(m.clone())
            .map_err(|e| DecodeError::Decode(format!("Meta: {e}")))?,
    };
    let port = match field(o, &["Port", "port"]) {
        Value::Null => 0,
        Value::Number(n) => n
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| DecodeError::Decode(format!("Port: invalid port {n}")))?,
        other => return Err(DecodeError::Decode(format!("Port: invalid port {other}"))),
    };
    let weights = match field(o, &["Weights", "weights"]) {
        Value::Null => None,
        w => {
            let w: WeightsIn = serde_json::from_value(w.clone())
                .map_err(|e| DecodeError::Decode(format!("Weights: {e}")))?;
            Some((w.passing, w.warning))
        }
    };
    let mut checks = Vec::new();
    match field(o, &["Check", "check"]) {
        Value::Null => {}
        c => checks.push(decode_check(c)?),
    }
    match field(o, &["Checks", "checks"]) {
        Value::Null => {}
        Value::Array(items) => {
            for c in items {
                checks.push(decode_check(c)?);
            }
        }
        other => {
            return Err(DecodeError::Decode(format!(
                "Checks: invalid value {other}"
            )));
        }
    }
    let id = string_field(o, &["ID", "id"])?;
    Ok(ServiceRegistration {
        id: (!id.is_empty()).then_some(id),
        name: string_field(o, &["Name", "name"])?,
        tags: string_list(o, &["Tags", "tags"])?.unwrap_or_default(),
        meta,
        address: string_field(o, &["Address", "address"])?,
        port,
        weights,
        enable_tag_override: field(o, &["EnableTagOverride", "enable_tag_override"])
            .as_bool()
            .unwrap_or(false),
        checks,
        replace_existing_checks: false,
    })
}

fn weights_json(s: &ServiceEntry) -> Value {
    json!({"Passing": s.weights.0, "Warning": s.weights.1})
}

/// One entry of `GET /v1/agent/services`.
pub fn agent_service_json(s: &ServiceEntry, datacenter: &str) -> Value {
    json!({
        "ID": s.id,
        "Service": s.name,
        "Tags": s.tags,
        "Meta": s.meta,
        "Port": s.port,
        "Address": s.address,
        "TaggedAddresses": {},
        "Weights": weights_json(s),
        "EnableTagOverride": s.enable_tag_override,
        "Datacenter": datacenter,
    })
}

fn check_type(c: &CheckEntry) -> &'static str {
    match c.kind {
        CheckKind::Ttl { .. } => "ttl",
        CheckKind::Http { .. } => "http",
        CheckKind::Other if c.id == super::state::SERF_CHECK_ID => "",
        CheckKind::Other => "",
    }
}

/// One check as the health and agent endpoints render it.
pub fn check_json(c: &CheckEntry, node: &str) -> Value {
    json!({
        "Node": node,
        "CheckID": c.id,
        "Name": c.name,
        "Status": c.status.as_str(),
        "Notes": c.notes,
        "Output": c.output,
        "ServiceID": c.service_id,
        "ServiceName": c.service_name,
        "ServiceTags": c.service_tags,
        "Type": check_type(c),
        "Definition": {},
        "CreateIndex": c.create_index,
        "ModifyIndex": c.modify_index,
    })
}

/// The node object of health results.
pub fn node_json(state: &State) -> Value {
    let cfg = state.config();
    json!({
        "ID": cfg.node_id,
        "Node": cfg.node,
        "Address": cfg.address,
        "Datacenter": cfg.datacenter,
        "TaggedAddresses": {
            "lan": cfg.address, "lan_ipv4": cfg.address,
            "wan": cfg.address, "wan_ipv4": cfg.address,
        },
        "Meta": {"consul-network-segment": ""},
        "CreateIndex": 1,
        "ModifyIndex": 1,
    })
}

/// One entry of `GET /v1/health/service/<name>`.
pub fn health_entry_json(e: &HealthEntry, node: &Value, node_name: &str) -> Value {
    let s = &e.service;
    json!({
        "Node": node,
        "Service": {
            "ID": s.id,
            "Service": s.name,
            "Tags": s.tags,
            "Address": s.address,
            "TaggedAddresses": {},
            "Meta": s.meta,
            "Port": s.port,
            "Weights": weights_json(s),
            "EnableTagOverride": s.enable_tag_override,
            "CreateIndex": s.create_index,
            "ModifyIndex": s.modify_index,
        },
        "Checks": e.checks.iter().map(|c| check_json(c, node_name)).collect::<Vec<_>>(),
    })
}

/// The fault-injection request bodies.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct FaultBody {
    /// `hang` or `unavailable` (pause).
    #[serde(default)]
    pub mode: Option<String>,
    /// Session ID to drop.
    #[serde(default)]
    pub session: Option<String>,
    /// Token to drop.
    #[serde(default)]
    pub token: Option<String>,
    /// Status to answer with (errors).
    #[serde(default)]
    pub status: Option<u16>,
    /// How many requests (errors).
    #[serde(default)]
    pub count: Option<u64>,
    /// Delay in milliseconds (delay).
    #[serde(default)]
    pub ms: Option<u64>,
    /// Only requests whose path starts with this (errors, index-backwards, delay); absent = all.
    #[serde(default)]
    pub path: Option<String>,
    /// Body of the injected errors (errors); absent = a default per status.
    #[serde(default)]
    pub message: Option<String>,
    /// Leave the cluster before going down (agent/restart), as `leave_on_terminate` does.
    #[serde(default)]
    pub leave: Option<bool>,
    /// Node name (nodes/join, nodes/leave).
    #[serde(default)]
    pub node: Option<String>,
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        /// Decoders answer `Err`, never panic, on arbitrary bytes and arbitrary JSON.
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256), s in ".{0,64}") {
            let _ = decode_session_create(&bytes);
            let _ = decode_service_registration(&bytes);
            let _ = decode_txn(&bytes);
            let json = format!(r#"{{"Name":{s:?},"TTL":{s:?},"LockDelay":{s:?},"Check":{{"TTL":{s:?},"Interval":{s:?}}}}}"#);
            let _ = decode_session_create(json.as_bytes());
            let _ = decode_service_registration(json.as_bytes());
            let _ = super::super::filter::parse(&s);
            let _ = super::super::duration::parse_go_duration(&s);
        }
    }
}
