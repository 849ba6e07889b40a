//! The worker's HTTP surface (warp): the composition root of its routes. Health, readiness,
//! metrics and the state endpoint live here; the resources have their own modules (sessions,
//! messages, media, chats, contacts, LIDs, groups, presence, webhooks, profiles, the fleet list:
//! see [`super`]) over the shared request layer ([`super::request`]), so no route module
//! depends on this one.
//!
//! Every answer carries `X-Wafleet-Shard: K`. A workspace route answers, in this order:
//! 400 for an invalid id, 401/403 for a bad token, 503 (`Retry-After`) while the worker is not
//! ready or fenced, 421 `not_owner` when the shard map gives the workspace to another shard,
//! 503 while the workspace's lock is being taken (handoff), then the answer itself. Handlers
//! read the published [`super::driver::Status`]; they never talk to Consul.

use std::convert::Infallible;

use http::{HeaderValue, StatusCode};
use warp::{Filter, Reply};

use super::driver::Status;
use super::request::{Api, auth_error};
use crate::api::{MAX_BODY_BYTES, recover};

/// The header naming the shard that answered.
pub const SHARD_HEADER: &str = "x-wafleet-shard";

/// One route (or group of routes) of the worker, boxed.
type Route = warp::filters::BoxedFilter<(warp::reply::Response,)>;
/// All routes, with the JSON rejection handler and the shard header applied.
pub fn filters(api: Api) -> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone {
    let shard = api.shared.shard;
    let with = {
        let api = api.clone();
        warp::any().map(move || api.clone())
    };
    let auth = warp::header::optional::<String>("authorization");

    let healthz = warp::path!("healthz")
        .and(warp::get())
        .map(|| warp::reply::json(&serde_json::json!({"status": "ok"})).into_response());
    let readyz = warp::path!("readyz")
        .and(warp::get())
        .and(with.clone())
        .map(|api: Api| readyz(&api.shared.status.borrow()));
    let metrics = warp::path!("metrics").and(warp::get()).map(|| {
        warp::reply::with_header(
            crate::telemetry::prometheus().render(),
            "content-type",
            "text/plain; version=0.0.4",
        )
        .into_response()
    });
    let state = warp::path!("v1" / "worker" / "state")
        .and(warp::get())
        .and(with.clone())
        .and(auth)
        .and_then(state);
    let create = warp::path!("v1" / "workspaces" / String / "sessions")
        .and(warp::post())
        .and(with.clone())
        .and(auth)
        .and(warp::header::optional::<String>("idempotency-key"))
        .and(warp::body::content_length_limit(MAX_BODY_BYTES))
        .and(warp::body::bytes())
        .and_then(super::session_routes::create::create);
    // Every route is boxed before it joins the chain: a chain of twenty-odd unboxed warp
    // filters is one enormous nested type, and type-checking it was most of the crate's
    // compile time. At run time a boxed filter costs one indirect call per route tried.
    let rest: Vec<Route> = vec![
        readyz.boxed(),
        metrics.boxed(),
        state.boxed(),
        create.boxed(),
        super::session_routes::routes(api.clone()).boxed(),
        super::messaging::routes::routes(api.clone()).boxed(),
        super::profile_routes::routes(api.clone()).boxed(),
        super::fleet_api::routes(api.clone()).boxed(),
        super::contacts::routes::routes(api.clone()).boxed(),
        super::lids::routes(api.clone()).boxed(),
        super::webhooks::routes(api.clone()).boxed(),
        super::settings::routes::routes(api.clone()).boxed(),
        super::contacts::list::routes(api.clone()).boxed(),
        super::contacts::actions::routes(api.clone()).boxed(),
        super::chats::routes::routes(api.clone()).boxed(),
        super::presence::routes::routes(api.clone()).boxed(),
        super::groups::routes::routes(api.clone()).boxed(),
        super::media::routes::routes(api).boxed(),
    ];
    let mut all: Route = healthz.boxed();
    for route in rest {
        all = all.or(route).unify().boxed();
    }
    all.recover(recover)
        .unify()
        .map(move |mut resp: warp::reply::Response| {
            resp.headers_mut()
                .insert(SHARD_HEADER, HeaderValue::from(shard));
            resp
        })
}

fn readyz(status: &Status) -> warp::reply::Response {
    let body = serde_json::json!({
        "ready": status.ready,
        "fenced": status.fenced,
        "draining": status.draining,
        "map_version": status.map_version,
        "reason": status.reason,
    });
    let code = if status.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    warp::reply::with_status(warp::reply::json(&body), code).into_response()
}

async fn state(api: Api, auth: Option<String>) -> Result<warp::reply::Response, warp::Rejection> {
    api.authority
        .authorize(auth.as_deref(), None)
        .map_err(|e| warp::reject::custom(auth_error(e)))?;
    let status = api.shared.status.borrow().clone();
    let mut body = serde_json::to_value(&status).unwrap_or_default();
    body["shard"] = serde_json::json!(api.shared.shard);
    Ok(warp::reply::json(&body).into_response())
}
