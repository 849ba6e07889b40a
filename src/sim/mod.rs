//! The WhatsApp Web simulator (`wafleet sim`): the page with WhatsApp Web's module surface and the phone control API.

pub mod cli;
