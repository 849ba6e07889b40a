//! Presence of contacts (issue #12): WhatsApp sends a contact's presence (online, typing,
//! recording, paused) only for chats the device has subscribed to, the way WhatsApp Web does
//! when its user opens a chat (`WAWebPresenceCollection.PresenceCollection.find`). A headless
//! session opens no chats, so the subscription is explicit: [`routes`]. The `presence` webhook
//! event itself is opt-in and recorded by [`super::messaging::activity`].

pub mod routes;
