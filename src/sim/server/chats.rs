//! The chat routes of the control API: `POST /sim/chats` (seed a chat with unread messages,
//! archive/pin/mute and N messages of history), `GET /sim/chats?phone=` (the chats as the servers
//! hold them, with the read receipts and earlier-message loads the pages made), `POST
//! /sim/contacts` (seed a contact: names, business and blocked flags, a profile picture), `GET
//! /sim/contacts?phone=` and `GET /sim/chatstates?phone=` (the chat states the pages sent),
//! over [`Sim::seed_chat`] and its neighbours (`state/chats.rs`).

use super::*;
use crate::sim::state::chats::{ChatSeed, ContactSeed};

/// The chat routes of the control API.
pub(super) fn routes(
    shared: Arc<Shared>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let with = warp::any().map(move || shared.clone());
    let seed_chat = warp::path!("sim" / "chats")
        .and(warp::post())
        .and(json_body::<ChatSeed>())
        .and(with.clone())
        .map(|seed: ChatSeed, shared: Arc<Shared>| {
            reply(shared.with(|sim, now| sim.seed_chat(seed, now)))
        });
    let chats = warp::path!("sim" / "chats")
        .and(warp::get())
        .and(warp::query::<PhoneQuery>())
        .and(with.clone())
        .map(|q: PhoneQuery, shared: Arc<Shared>| {
            let phone = q.phone.unwrap_or_default();
            reply(shared.with(|sim, _| sim.chats_of(&phone)))
        });
    let seed_contact = warp::path!("sim" / "contacts")
        .and(warp::post())
        .and(json_body::<ContactSeed>())
        .and(with.clone())
        .map(|seed: ContactSeed, shared: Arc<Shared>| {
            reply(shared.with(|sim, _| sim.seed_contact(seed)))
        });
    let contacts = warp::path!("sim" / "contacts")
        .and(warp::get())
        .and(warp::query::<PhoneQuery>())
        .and(with.clone())
        .map(|q: PhoneQuery, shared: Arc<Shared>| {
            let phone = q.phone.unwrap_or_default();
            reply(shared.with(|sim, _| sim.contacts_of(&phone)))
        });
    let chatstates = warp::path!("sim" / "chatstates")
        .and(warp::get())
        .and(warp::query::<PhoneQuery>())
        .and(with)
        .map(|q: PhoneQuery, shared: Arc<Shared>| {
            let phone = q.phone.unwrap_or_default();
            reply(shared.with(|sim, _| sim.chatstates_of(&phone)))
        });
    seed_chat
        .or(chats)
        .unify()
        .or(seed_contact)
        .unify()
        .or(contacts)
        .unify()
        .or(chatstates)
        .unify()
}
