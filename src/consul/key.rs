//! KV key validation, done before any request is built.
//!
//! Consul itself has changed its key rules several times (1.21.5 added a regex that broke
//! existing keys; the CVE-2025-11392 fixes reject path traversal and leading/trailing spaces;
//! newer agents reject a leading `/`), so the client refuses every key that some Consul
//! version would refuse or misread, with an error that says why, instead of letting a request
//! produce a confusing 400 or, worse, touch a different key.

use super::ConsulError;

/// The longest key accepted, in bytes (Consul has no hard limit; this keeps URLs sane).
pub const MAX_KEY_LEN: usize = 512;

fn invalid(key: &str, reason: &'static str) -> ConsulError {
    ConsulError::InvalidKey {
        key: key.to_owned(),
        reason,
    }
}

/// Checks one full key: non-empty, no leading or trailing `/`, no empty, `.` or `..`
/// segments, no control characters, no leading or trailing whitespace.
pub fn validate_key(key: &str) -> Result<(), ConsulError> {
    if key.is_empty() {
        return Err(invalid(key, "a key must not be empty"));
    }
    if key.ends_with('/') {
        return Err(invalid(
            key,
            "a key must not end with '/' (that names a folder; use a prefix operation)",
        ));
    }
    check_common(key)
}

/// Checks a prefix for `recurse`/`keys` operations: like [`validate_key`], but the empty
/// prefix (the whole KV store) and one trailing `/` are allowed.
pub fn validate_prefix(prefix: &str) -> Result<(), ConsulError> {
    if prefix.is_empty() {
        return Ok(());
    }
    let body = prefix.strip_suffix('/').unwrap_or(prefix);
    if body.is_empty() {
        return Err(invalid(prefix, "a prefix must not be just '/'"));
    }
    check_common(body).map_err(|e| match e {
        ConsulError::InvalidKey { reason, .. } => invalid(prefix, reason),
        other => other,
    })
}

fn check_common(key: &str) -> Result<(), ConsulError> {
    if key.len() > MAX_KEY_LEN {
        return Err(invalid(key, "a key must not be longer than 512 bytes"));
    }
    if key.starts_with('/') {
        return Err(invalid(key, "a key must not start with '/'"));
    }
    if key.chars().any(char::is_control) {
        return Err(invalid(key, "a key must not contain control characters"));
    }
    if key.starts_with(char::is_whitespace) || key.ends_with(char::is_whitespace) {
        return Err(invalid(
            key,
            "a key must not start or end with whitespace (Consul rejects it)",
        ));
    }
    for segment in key.split('/') {
        match segment {
            "" => {
                return Err(invalid(
                    key,
                    "a key must not contain an empty segment ('//')",
                ));
            }
            "." | ".." => {
                return Err(invalid(
                    key,
                    "a key must not contain '.' or '..' segments (path traversal)",
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(r: Result<(), ConsulError>) -> &'static str {
        match r {
            Err(ConsulError::InvalidKey { reason, .. }) => reason,
            other => panic!("expected InvalidKey, got {other:?}"),
        }
    }

    #[test]
    fn accepts_ordinary_keys() {
        for k in [
            "wafleet/shardmap",
            "wafleet/locks/shards/7",
            "wafleet/locks/workspaces/acme_1-x",
            "a",
            "a.b/c..d/.e",
            "with space/inside ok",
            "ünïcode/ç",
        ] {
            assert!(validate_key(k).is_ok(), "{k}");
        }
    }

    #[test]
    fn refuses_bad_keys_with_a_reason() {
        assert!(reason(validate_key("")).contains("empty"));
        assert!(reason(validate_key("/a")).contains("start with '/'"));
        assert!(reason(validate_key("a/")).contains("end with '/'"));
        assert!(reason(validate_key("a//b")).contains("empty segment"));
        assert!(reason(validate_key("a/../b")).contains(".."));
        assert!(reason(validate_key("..")).contains(".."));
        assert!(reason(validate_key("a/./b")).contains("'.'"));
        assert!(reason(validate_key("a/.")).contains("'.'"));
        assert!(reason(validate_key("a\nb")).contains("control"));
        assert!(reason(validate_key("a\0b")).contains("control"));
        assert!(reason(validate_key("a\u{7f}")).contains("control"));
        assert!(reason(validate_key(" a")).contains("whitespace"));
        assert!(reason(validate_key("a ")).contains("whitespace"));
        assert!(reason(validate_key(&"x".repeat(600))).contains("512"));
    }

    #[test]
    fn prefixes_allow_root_and_one_trailing_slash() {
        assert!(validate_prefix("").is_ok());
        assert!(validate_prefix("wafleet/").is_ok());
        assert!(validate_prefix("wafleet/locks").is_ok());
        assert!(validate_prefix("/").is_err());
        assert!(validate_prefix("a//").is_err());
        assert!(validate_prefix("/a/").is_err());
        assert!(validate_prefix("a/../").is_err());
    }

    #[test]
    fn error_message_names_the_key_and_reason() {
        let e = validate_key("a//b").unwrap_err().to_string();
        assert!(e.contains("\"a//b\"") && e.contains("empty segment"), "{e}");
    }
}
