//! The phone side of the events around messages (issue #12): `POST /sim/react`, `/sim/edit`,
//! `/sim/call`, `/sim/presence`, and `GET /sim/calls?phone=` (the calls placed to a phone and
//! whether a page rejected them), over [`crate::sim::state::activity`].

use super::*;
use crate::sim::state::activity::{CallReq, EditReq, PresenceReq, ReactReq};

/// The activity routes of the control API.
pub(super) fn routes(
    shared: Arc<Shared>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let with = warp::any().map(move || shared.clone());
    let react = warp::path!("sim" / "react")
        .and(warp::post())
        .and(json_body::<ReactReq>())
        .and(with.clone())
        .map(|req: ReactReq, shared: Arc<Shared>| {
            reply(
                shared
                    .with(|sim, now| sim.react(&req, now))
                    .map(|id| serde_json::json!({ "id": id, "target": req.wa_id })),
            )
        });
    let edit = warp::path!("sim" / "edit")
        .and(warp::post())
        .and(json_body::<EditReq>())
        .and(with.clone())
        .map(|req: EditReq, shared: Arc<Shared>| {
            reply(
                shared
                    .with(|sim, now| sim.edit(&req, now))
                    .map(|()| serde_json::json!({ "edited": req.wa_id })),
            )
        });
    let call = warp::path!("sim" / "call")
        .and(warp::post())
        .and(json_body::<CallReq>())
        .and(with.clone())
        .map(|req: CallReq, shared: Arc<Shared>| {
            reply(
                shared
                    .with(|sim, now| sim.call(&req, now))
                    .map(|id| serde_json::json!({ "call_id": id })),
            )
        });
    let presence = warp::path!("sim" / "presence")
        .and(warp::post())
        .and(json_body::<PresenceReq>())
        .and(with.clone())
        .map(|req: PresenceReq, shared: Arc<Shared>| {
            reply(
                shared
                    .with(|sim, _| sim.presence(&req))
                    .map(|n| serde_json::json!({ "delivered": n })),
            )
        });
    let calls = warp::path!("sim" / "calls")
        .and(warp::get())
        .and(warp::query::<PhoneQuery>())
        .and(with)
        .map(|q: PhoneQuery, shared: Arc<Shared>| {
            let phone = q.phone.unwrap_or_default();
            reply(shared.with(|sim, _| sim.calls(&phone)))
        });
    react
        .or(edit)
        .unify()
        .or(call)
        .unify()
        .or(presence)
        .unify()
        .or(calls)
        .unify()
}
