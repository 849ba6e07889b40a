//! The router (`wafleet router`): routing table, resolution and the proxying HTTP surface.

pub mod cli;
