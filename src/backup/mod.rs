//! Profile backups (`wafleet backup` / `wafleet restore`): consistent copies with checksums and retention.

pub mod cli;
