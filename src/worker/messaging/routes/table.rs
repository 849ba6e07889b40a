//! The table of every route the worker and the router serve (method, path template, who serves it):
//! the one list the API contract test checks against docs/openapi.yaml.

/// Every route of the worker and the router: `(method, path template, who serves it)`, where
/// "who" is `"worker"`, `"router"` or `"both"` (workspace routes are served by the worker and
/// forwarded by the router).
pub const ROUTES: &[(&str, &str, &str)] = &[
    ("GET", "/healthz", "both"),
    ("GET", "/readyz", "both"),
    ("GET", "/metrics", "both"),
    ("GET", "/v1/worker/state", "worker"),
    ("GET", "/v1/shards", "router"),
    ("PUT", "/v1/shards", "router"),
    ("POST", "/v1/shards/plan", "router"),
    ("PUT", "/v1/shards/pins/{ws}", "router"),
    ("DELETE", "/v1/shards/pins/{ws}", "router"),
    ("GET", "/v1/route/{ws}", "router"),
    ("GET", "/v1/sessions", "both"),
    ("GET", "/v1/workspaces/{ws}/sessions", "both"),
    ("POST", "/v1/workspaces/{ws}/sessions", "both"),
    ("GET", "/v1/workspaces/{ws}/sessions/{s}", "both"),
    ("DELETE", "/v1/workspaces/{ws}/sessions/{s}", "both"),
    ("PATCH", "/v1/workspaces/{ws}/sessions/{s}", "both"),
    ("GET", "/v1/workspaces/{ws}/sessions/{s}/qr", "both"),
    (
        "POST",
        "/v1/workspaces/{ws}/sessions/{s}/pairing-code",
        "both",
    ),
    ("POST", "/v1/workspaces/{ws}/sessions/{s}/start", "both"),
    ("POST", "/v1/workspaces/{ws}/sessions/{s}/stop", "both"),
    ("POST", "/v1/workspaces/{ws}/sessions/{s}/restart", "both"),
    ("POST", "/v1/workspaces/{ws}/sessions/{s}/logout", "both"),
    ("POST", "/v1/workspaces/{ws}/sessions/{s}/messages", "both"),
    (
        "POST",
        "/v1/workspaces/{ws}/sessions/{s}/presence/subscribe",
        "both",
    ),
    (
        "GET",
        "/v1/workspaces/{ws}/sessions/{s}/messages/{id}",
        "both",
    ),
    ("GET", "/v1/workspaces/{ws}/sessions/{s}/events", "both"),
    ("PUT", "/v1/workspaces/{ws}/sessions/{s}/profile", "both"),
    ("GET", "/v1/workspaces/{ws}/sessions/{s}/profile", "both"),
    (
        "GET",
        "/v1/workspaces/{ws}/sessions/{s}/contacts/{phone}/exists",
        "both",
    ),
    ("GET", "/v1/workspaces/{ws}/sessions/{s}/lids/{lid}", "both"),
    (
        "GET",
        "/v1/workspaces/{ws}/sessions/{s}/messages/{wa_id}/media",
        "both",
    ),
    (
        "GET",
        "/v1/workspaces/{ws}/sessions/{s}/lids/pn/{phone}",
        "both",
    ),
    ("GET", "/v1/workspaces/{ws}/sessions/{s}/chats", "both"),
    (
        "GET",
        "/v1/workspaces/{ws}/sessions/{s}/chats/{chat}/messages",
        "both",
    ),
    (
        "POST",
        "/v1/workspaces/{ws}/sessions/{s}/chats/{chat}/read",
        "both",
    ),
    (
        "POST",
        "/v1/workspaces/{ws}/sessions/{s}/chats/{chat}/seen",
        "both",
    ),
    (
        "POST",
        "/v1/workspaces/{ws}/sessions/{s}/chats/{chat}/archive",
        "both",
    ),
    (
        "POST",
        "/v1/workspaces/{ws}/sessions/{s}/chats/{chat}/unarchive",
        "both",
    ),
    (
        "POST",
        "/v1/workspaces/{ws}/sessions/{s}/chats/{chat}/presence",
        "both",
    ),
    ("GET", "/v1/workspaces/{ws}/sessions/{s}/contacts", "both"),
    (
        "GET",
        "/v1/workspaces/{ws}/sessions/{s}/contacts/{id}/picture",
        "both",
    ),
    (
        "POST",
        "/v1/workspaces/{ws}/sessions/{s}/contacts/{id}/block",
        "both",
    ),
    (
        "POST",
        "/v1/workspaces/{ws}/sessions/{s}/contacts/{id}/unblock",
        "both",
    ),
    ("GET", "/v1/workspaces/{ws}/sessions/{s}/groups", "both"),
    ("POST", "/v1/workspaces/{ws}/sessions/{s}/groups", "both"),
    (
        "GET",
        "/v1/workspaces/{ws}/sessions/{s}/groups/{group}",
        "both",
    ),
    (
        "POST",
        "/v1/workspaces/{ws}/sessions/{s}/groups/{group}/participants/add",
        "both",
    ),
    (
        "POST",
        "/v1/workspaces/{ws}/sessions/{s}/groups/{group}/participants/remove",
        "both",
    ),
    (
        "POST",
        "/v1/workspaces/{ws}/sessions/{s}/groups/{group}/participants/promote",
        "both",
    ),
    (
        "POST",
        "/v1/workspaces/{ws}/sessions/{s}/groups/{group}/participants/demote",
        "both",
    ),
    (
        "GET",
        "/v1/workspaces/{ws}/sessions/{s}/groups/{group}/invite",
        "both",
    ),
    (
        "POST",
        "/v1/workspaces/{ws}/sessions/{s}/groups/{group}/invite/reset",
        "both",
    ),
    (
        "POST",
        "/v1/workspaces/{ws}/sessions/{s}/groups/{group}/leave",
        "both",
    ),
    (
        "PUT",
        "/v1/workspaces/{ws}/sessions/{s}/groups/{group}/subject",
        "both",
    ),
    (
        "PUT",
        "/v1/workspaces/{ws}/sessions/{s}/groups/{group}/description",
        "both",
    ),
    ("GET", "/v1/workspaces/{ws}/webhooks/dead", "both"),
    (
        "POST",
        "/v1/workspaces/{ws}/webhooks/dead/{id}/replay",
        "both",
    ),
];
