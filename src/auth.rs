//! Admin and workspace tokens (DESIGN §7).
//!
//! Every API call carries `Authorization: Bearer <token>`. The admin token may do everything. A
//! workspace token is minted statelessly from a shared secret — `wft1.<ws>.<mac>` where `mac` is
//! the base64url HMAC-SHA256 of the workspace id under `WAFLEET_TOKEN_SECRET` — so routers and
//! workers check it without a database, and it is valid only under `/v1/workspaces/<ws>/…`.
//! While a secret is being rotated, tokens minted with `WAFLEET_TOKEN_SECRET_PREVIOUS` are
//! accepted too. Comparisons are constant-time.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::ids::WorkspaceId;

/// Environment variable holding the admin token.
pub const ENV_ADMIN_TOKEN: &str = "WAFLEET_ADMIN_TOKEN";
/// Environment variable naming a file that holds the admin token (used when the token is unset).
pub const ENV_ADMIN_TOKEN_FILE: &str = "WAFLEET_ADMIN_TOKEN_FILE";
/// Environment variable holding the secret that workspace tokens are minted from.
pub const ENV_TOKEN_SECRET: &str = "WAFLEET_TOKEN_SECRET";
/// Environment variable holding the previous secret, accepted while rotating.
pub const ENV_TOKEN_SECRET_PREVIOUS: &str = "WAFLEET_TOKEN_SECRET_PREVIOUS";

/// The prefix and version of workspace tokens.
const WORKSPACE_TOKEN_PREFIX: &str = "wft1";
/// Domain separation for the MAC, so the secret can never sign anything else by accident.
const MAC_CONTEXT: &[u8] = b"wafleet/v1/workspace-token/";

/// What a valid token may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Everything.
    Admin,
    /// Only `/v1/workspaces/<ws>/…` of this workspace.
    Workspace(WorkspaceId),
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token, a malformed header, or a token that no secret signed: 401.
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// A valid token for another workspace, or a workspace token on an admin route: 403.
    #[error("this token may not access this resource")]
    Forbidden,
    /// The configuration cannot work (for example an empty secret).
    #[error("auth configuration: {0}")]
    Config(String),
}

type HmacSha256 = Hmac<Sha256>;

/// The secrets a process checks tokens against. `Debug` never prints them.
#[derive(Clone)]
pub struct Authority {
    admin: Option<Vec<u8>>,
    /// One MAC state per secret (current first), already keyed and fed [`MAC_CONTEXT`]: every
    /// check clones one and adds only the workspace id, instead of hashing the key pads again
    /// (half the SHA-256 blocks of a check).
    keyed: Vec<HmacSha256>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("admin", &self.admin.as_ref().map(|_| "<redacted>"))
            .field("secrets", &self.keyed.len())
            .finish()
    }
}

// === impl Authority ===

impl Authority {
    /// An authority from an admin token and the workspace-token secrets (current first).
    pub fn new(admin: Option<String>, secrets: Vec<String>) -> Result<Self, AuthError> {
        if admin.as_deref().is_some_and(|a| a.trim().is_empty()) {
            return Err(AuthError::Config("the admin token is empty".into()));
        }
        if secrets.iter().any(|s| s.len() < 16) {
            return Err(AuthError::Config(
                "a token secret must be at least 16 bytes".into(),
            ));
        }
        let keyed = secrets
            .iter()
            .map(|s| {
                // HMAC accepts keys of any length, so `new_from_slice` cannot fail here.
                let mut m = <HmacSha256 as Mac>::new_from_slice(s.as_bytes())
                    .expect("HMAC takes any key length");
                m.update(MAC_CONTEXT);
                m
            })
            .collect();
        Ok(Self {
            admin: admin.map(|a| a.trim().as_bytes().to_vec()),
            keyed,
        })
    }

    /// Reads the configuration through `lookup` (normally `std::env::var`), so tests pass maps.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, AuthError> {
        let admin = match lookup(ENV_ADMIN_TOKEN).filter(|s| !s.is_empty()) {
            Some(t) => Some(t),
            None => match lookup(ENV_ADMIN_TOKEN_FILE).filter(|s| !s.is_empty()) {
                Some(path) => Some(std::fs::read_to_string(&path).map_err(|e| {
                    AuthError::Config(format!("cannot read admin token file {path}: {e}"))
                })?),
                None => None,
            },
        };
        let secrets = [ENV_TOKEN_SECRET, ENV_TOKEN_SECRET_PREVIOUS]
            .into_iter()
            .filter_map(|k| lookup(k).filter(|s| !s.is_empty()))
            .collect();
        Self::new(admin, secrets)
    }

    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, AuthError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Mints a token for `ws` with the current secret; `None` when no secret is configured.
    pub fn mint(&self, ws: &WorkspaceId) -> Option<String> {
        let key = self.keyed.first()?;
        Some(format!(
            "{WORKSPACE_TOKEN_PREFIX}.{ws}.{}",
            URL_SAFE_NO_PAD.encode(mac(key, ws))
        ))
    }

    /// Checks an `Authorization` header value and returns what the token may do.
    pub fn authenticate(&self, header: Option<&str>) -> Result<Scope, AuthError> {
        let token = header
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Unauthorized)?;
        if let Some(admin) = &self.admin
            && bool::from(token.as_bytes().ct_eq(admin))
        {
            return Ok(Scope::Admin);
        }
        let mut parts = token.splitn(3, '.');
        let (Some(WORKSPACE_TOKEN_PREFIX), Some(ws), Some(tag)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Unauthorized);
        };
        let ws = WorkspaceId::new(ws).map_err(|_| AuthError::Unauthorized)?;
        // A tag is 32 bytes (43 characters); decode into a stack buffer with room to spare
        // (the decoder's size estimate is conservative) and compare the decoded length.
        let mut buf = [0u8; 48];
        let n = URL_SAFE_NO_PAD
            .decode_slice(tag, &mut buf)
            .map_err(|_| AuthError::Unauthorized)?;
        let tag = &buf[..n];
        // Check every secret without stopping early, so timing does not tell which one matched.
        let mut ok = subtle::Choice::from(0u8);
        for key in &self.keyed {
            ok |= mac(key, &ws).as_slice().ct_eq(tag);
        }
        if bool::from(ok) {
            Ok(Scope::Workspace(ws))
        } else {
            Err(AuthError::Unauthorized)
        }
    }

    /// Checks a header for a route: `ws` is the workspace in the path, `None` for admin routes.
    pub fn authorize(
        &self,
        header: Option<&str>,
        ws: Option<&WorkspaceId>,
    ) -> Result<Scope, AuthError> {
        let scope = self.authenticate(header)?;
        match (&scope, ws) {
            (Scope::Admin, _) => Ok(scope),
            (Scope::Workspace(own), Some(ws)) if own == ws => Ok(scope),
            _ => Err(AuthError::Forbidden),
        }
    }
}

/// The tag of `ws` under a keyed state (see [`Authority::keyed`]).
fn mac(keyed: &HmacSha256, ws: &WorkspaceId) -> [u8; 32] {
    let mut m = keyed.clone();
    m.update(ws.as_str().as_bytes());
    let mut tag = [0u8; 32];
    tag.copy_from_slice(&m.finalize().into_bytes());
    tag
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws(s: &str) -> WorkspaceId {
        WorkspaceId::new(s).unwrap()
    }

    fn authority(secrets: &[&str]) -> Authority {
        Authority::new(
            Some("admin-token".into()),
            secrets.iter().map(|s| s.to_string()).collect(),
        )
        .unwrap()
    }

    #[test]
    fn workspace_token_is_limited_to_its_workspace() {
        let a = authority(&["0123456789abcdef0123"]);
        let t = format!("Bearer {}", a.mint(&ws("acme")).unwrap());
        assert_eq!(
            a.authorize(Some(&t), Some(&ws("acme"))),
            Ok(Scope::Workspace(ws("acme")))
        );
        assert_eq!(
            a.authorize(Some(&t), Some(&ws("other"))),
            Err(AuthError::Forbidden)
        );
        assert_eq!(a.authorize(Some(&t), None), Err(AuthError::Forbidden));
    }

    #[test]
    fn admin_token_may_do_everything() {
        let a = authority(&[]);
        assert_eq!(
            a.authorize(Some("Bearer admin-token"), None),
            Ok(Scope::Admin)
        );
        assert_eq!(
            a.authorize(Some("Bearer admin-token"), Some(&ws("x"))),
            Ok(Scope::Admin)
        );
    }

    #[test]
    fn forged_or_missing_tokens_are_unauthorized() {
        let a = authority(&["0123456789abcdef0123"]);
        let other = authority(&["another-secret-0123456"]);
        let forged = format!("Bearer {}", other.mint(&ws("acme")).unwrap());
        for h in [
            None,
            Some(""),
            Some("Bearer "),
            Some("Basic abc"),
            Some("Bearer wft1.acme"),
            Some("Bearer wft1.acme.!!!"),
            Some("Bearer wft1.../x.AAAA"),
            Some(forged.as_str()),
        ] {
            assert_eq!(
                a.authorize(h, Some(&ws("acme"))),
                Err(AuthError::Unauthorized),
                "{h:?}"
            );
        }
    }

    #[test]
    fn previous_secret_is_accepted_while_rotating() {
        let old = authority(&["old-secret-0123456789"]);
        let rotating = authority(&["new-secret-0123456789", "old-secret-0123456789"]);
        let t = format!("Bearer {}", old.mint(&ws("acme")).unwrap());
        assert!(rotating.authorize(Some(&t), Some(&ws("acme"))).is_ok());
        // New tokens are minted with the new secret.
        assert_ne!(rotating.mint(&ws("acme")), old.mint(&ws("acme")));
    }

    #[test]
    fn short_secrets_and_empty_admin_tokens_are_refused() {
        assert!(Authority::new(None, vec!["short".into()]).is_err());
        assert!(Authority::new(Some(" ".into()), vec![]).is_err());
    }

    #[test]
    fn debug_output_hides_secrets() {
        let a = authority(&["0123456789abcdef0123"]);
        let s = format!("{a:?}");
        assert!(!s.contains("admin-token") && !s.contains("0123456789abcdef"));
    }
}
