//! Session settings without a new QR (issue 12 item 5): `PATCH …/sessions/{s}` ([`routes`]).
//!
//! PURE core: [`apply_patch`] turns the current [`SessionConfig`] and a JSON merge-patch body
//! (RFC 7396: a field present replaces, `null` clears, absent keeps; objects such as `metadata`
//! and `pacing` merge key by key) into the new configuration, validated as on create, or a
//! [`PatchError`] — in which case nothing changes. It is generic over the settings: any field
//! of [`SessionConfig`] is patchable (so options other areas add to it are too), except the
//! identity and lifecycle fields in [`IMMUTABLE`]. The field list comes from the struct's own
//! serde description ([`struct_fields`]), not from a copy that could drift.
//!
//! Webhooks get their own rules, because their secrets are never shown and must survive a
//! client that reads a session and writes its targets back:
//! * `webhooks` (a list of up to [`MAX_TARGETS`] targets `{id?, url, secret?, events?,
//!   headers?}`) replaces the whole list; `null` or `[]` removes every target.
//! * `webhook` (one object, the API before lists) means a one-element list; without an `id` it
//!   keeps the current first target's id (its pending deliveries follow it to the new URL).
//! * A target whose `id` names a current target and that leaves out `secret` (or `headers`)
//!   keeps that target's secret (or headers); `"secret": null` removes it. A target without an
//!   `id` is new and gets the first free `whN`.

pub mod routes;

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::host::{SessionConfig, WebhookConfig, assign_target_ids};
use crate::webhook::{MAX_TARGETS, UrlPolicy, is_target_id};

/// Fields a PATCH may not change: the id and creation time are identity; the desired state
/// has its own routes (`POST …/start`, `…/stop`).
pub const IMMUTABLE: [&str; 3] = ["session", "created_at_ms", "desired"];

/// Why a PATCH is refused (answered 400 with [`PatchError::code`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// Not a JSON object, an unknown or immutable field, or a value of the wrong shape.
    #[error("{0}")]
    Body(String),
    /// A webhook target is invalid (URL policy, secret, events, headers, id, count).
    #[error("{message}")]
    Webhook {
        /// The create route's code for the same problem (`invalid_webhook_url`, …).
        code: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The pacing is invalid.
    #[error("pacing: {0}")]
    Pacing(String),
}

impl PatchError {
    /// The API error code.
    pub fn code(&self) -> &'static str {
        match self {
            PatchError::Body(_) => "invalid_body",
            PatchError::Webhook { code, .. } => code,
            PatchError::Pacing(_) => "invalid_pacing",
        }
    }
}

/// The field names of a struct as serde deserializes it (its `#[serde(rename)]`s applied).
pub fn struct_fields<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    /// A deserializer that only records the field list serde hands to `deserialize_struct`.
    struct Probe<'a>(&'a mut &'static [&'static str]);
    #[derive(Debug)]
    struct Stop;
    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("probe")
        }
    }
    impl std::error::Error for Stop {}
    impl serde::de::Error for Stop {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Stop
        }
    }
    impl<'de> serde::Deserializer<'de> for Probe<'_> {
        type Error = Stop;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            *self.0 = fields;
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

/// RFC 7396 merge: `patch` into `target`.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(t) = target else { return };
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// One target of a PATCH body (as on create, plus the optional `id`). `secret` and `headers`
/// tell "absent" (keep) from `null` (remove).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetPatch {
    #[serde(default)]
    id: Option<String>,
    url: String,
    #[serde(default, deserialize_with = "present")]
    secret: Option<Option<String>>,
    #[serde(default)]
    events: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    headers: Option<Option<BTreeMap<String, String>>>,
}

/// `Some(v)` for a present field (`Some(None)` for `null`), `None` (the default) when absent.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Validates a whole target list as create and PATCH accept it: at most [`MAX_TARGETS`],
/// ids valid and unique, each target passing the URL policy and the webhook rules.
pub fn validate_targets(list: &[WebhookConfig], policy: &UrlPolicy) -> Result<(), PatchError> {
    if list.len() > MAX_TARGETS {
        return Err(PatchError::Webhook {
            code: "invalid_webhooks",
            message: format!("at most {MAX_TARGETS} webhook targets per session"),
        });
    }
    for (i, t) in list.iter().enumerate() {
        if !t.id.is_empty() && !is_target_id(&t.id) {
            return Err(PatchError::Webhook {
                code: "invalid_webhooks",
                message: format!(
                    "webhook target id {:?} must be 1 to 32 of [A-Za-z0-9_-]",
                    t.id
                ),
            });
        }
        if !t.id.is_empty() && list[..i].iter().any(|o| o.id == t.id) {
            return Err(PatchError::Webhook {
                code: "invalid_webhooks",
                message: format!("webhook target id {:?} appears twice", t.id),
            });
        }
        super::messaging::validated_target(t, policy).map_err(|e| PatchError::Webhook {
            code: e.code(),
            message: e.to_string(),
        })?;
    }
    Ok(())
}

/// The new target list from a PATCH's `webhooks` (or `webhook`) value and the current list.
fn patch_targets(
    current: &[WebhookConfig],
    value: &Value,
    single: bool,
) -> Result<Vec<WebhookConfig>, PatchError> {
    let items: Vec<TargetPatch> = match value {
        Value::Null => Vec::new(),
        v if single => vec![
            serde_json::from_value(v.clone())
                .map_err(|e| PatchError::Body(format!("webhook: {e}")))?,
        ],
        v => serde_json::from_value(v.clone())
            .map_err(|e| PatchError::Body(format!("webhooks: {e}")))?,
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let id = match item.id {
            Some(id) => id,
            // The old single `webhook` replaces the first target in place.
            None if single => current.first().map(|t| t.id.clone()).unwrap_or_default(),
            None => String::new(),
        };
        let old = current.iter().find(|t| !id.is_empty() && t.id == id);
        out.push(WebhookConfig {
            secret: match item.secret {
                Some(s) => s,
                None => old.and_then(|o| o.secret.clone()),
            },
            headers: match item.headers {
                Some(h) => h.unwrap_or_default(),
                None => old.map(|o| o.headers.clone()).unwrap_or_default(),
            },
            events: item.events.unwrap_or_default(),
            url: item.url,
            id,
        });
    }
    Ok(out)
}

/// PURE. The configuration after `patch` (see the module doc); `current` is not changed.
pub fn apply_patch(
    current: &SessionConfig,
    patch: &Value,
    policy: &UrlPolicy,
) -> Result<SessionConfig, PatchError> {
    let Value::Object(fields) = patch else {
        return Err(PatchError::Body("the body must be a JSON object".into()));
    };
    let known = struct_fields::<SessionConfig>();
    for k in fields.keys() {
        if IMMUTABLE.contains(&k.as_str()) {
            return Err(PatchError::Body(format!("{k} cannot be changed")));
        }
        if !known.contains(&k.as_str()) {
            return Err(PatchError::Body(format!("unknown setting {k:?}")));
        }
    }
    if fields.contains_key("webhook") && fields.contains_key("webhooks") {
        return Err(PatchError::Body(
            "give either webhook (one target) or webhooks (the list), not both".into(),
        ));
    }
    let current_targets = current.targets();
    let mut targets = current_targets.clone();
    let mut rest = Map::new();
    for (k, v) in fields {
        match k.as_str() {
            "webhooks" => targets = patch_targets(&current_targets, v, false)?,
            "webhook" => targets = patch_targets(&current_targets, v, true)?,
            _ => {
                rest.insert(k.clone(), v.clone());
            }
        }
    }
    validate_targets(&targets, policy)?;
    let mut doc = serde_json::to_value(current)
        .map_err(|e| PatchError::Body(format!("current settings: {e}")))?;
    merge_patch(&mut doc, &Value::Object(rest));
    let mut next: SessionConfig =
        serde_json::from_value(doc).map_err(|e| PatchError::Body(e.to_string()))?;
    if let Some(p) = &next.pacing {
        p.validate().map_err(|e| PatchError::Pacing(e.to_owned()))?;
    }
    assign_target_ids(&mut targets);
    next.webhooks = targets;
    next.webhook = None;
    next.normalize();
    Ok(next)
}

#[cfg(test)]
mod tests;
