//! `POST /sim/accounts` (make a number a WhatsApp account) and `GET /sim/queries?phone=` (the
//! exists queries a linked phone's pages made), over [`Sim::add_account`] and [`Sim::queries`].

use super::*;

/// The contact routes of the control API.
pub(super) fn routes(
    shared: Arc<Shared>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let with = warp::any().map(move || shared.clone());
    let accounts = warp::path!("sim" / "accounts")
        .and(warp::post())
        .and(json_body::<PhoneReq>())
        .and(with.clone())
        .map(|req: PhoneReq, shared: Arc<Shared>| {
            reply(
                shared
                    .with(|sim, _| sim.add_account(&req.phone))
                    .map(|lid| serde_json::json!({ "phone": req.phone, "lid": lid })),
            )
        });
    let queries = warp::path!("sim" / "queries")
        .and(warp::get())
        .and(warp::query::<PhoneQuery>())
        .and(with)
        .map(|q: PhoneQuery, shared: Arc<Shared>| {
            let phone = q.phone.unwrap_or_default();
            reply(shared.with(|sim, _| sim.queries(&phone)))
        });
    accounts.or(queries).unify()
}
