//! The router (`wafleet router`): routing table, resolution and the proxying HTTP surface.

pub mod cli;
pub mod consul;
pub mod source;

pub use source::{
    KvRead, KvSource, MapFeed, ResolveError, Resolver, SourceError, WatchOptions, watch_map,
};
