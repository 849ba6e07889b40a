//! `POST /sim/groups/{id}/participants` (a member's phone adds, removes, promotes or demotes
//! participants, as if from its own app) and `GET /sim/groups/{id}` (the group as the servers
//! hold it), over [`Sim::phone_change_members`] and [`Sim::group_state`].

use super::*;

/// The body of `POST /sim/groups/{id}/participants`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeReq {
    /// `add`, `remove`, `promote` or `demote`.
    action: String,
    /// Phones (digits).
    participants: Vec<String>,
    /// The admin's phone making the change (default: the group's owner).
    #[serde(default)]
    by: Option<String>,
}

/// The group routes of the control API.
pub(super) fn routes(
    shared: Arc<Shared>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let with = warp::any().map(move || shared.clone());
    let change = warp::path!("sim" / "groups" / String / "participants")
        .and(warp::post())
        .and(json_body::<ChangeReq>())
        .and(with.clone())
        .map(|id: String, req: ChangeReq, shared: Arc<Shared>| {
            let id = id.replace("%40", "@");
            reply(shared.with(|sim, now| {
                sim.phone_change_members(
                    &id,
                    &req.action,
                    &req.participants,
                    req.by.as_deref(),
                    now,
                )
                .map(
                    |r| serde_json::json!({ "group": id, "action": req.action, "participants": r }),
                )
            }))
        });
    let get = warp::path!("sim" / "groups" / String)
        .and(warp::get())
        .and(with)
        .map(|id: String, shared: Arc<Shared>| {
            let id = id.replace("%40", "@");
            reply(shared.with(|sim, _| sim.group_state(&id)))
        });
    change.or(get).unify()
}
