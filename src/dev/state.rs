//! PURE: the `<data>/dev/state.json` document and the restart back-off of `wafleet dev`.
//!
//! `state.json` is read by the chaos suite and by scripts to find the fleet: addresses of the
//! Consul agent, router and simulator, and each worker's shard, pid and address (DESIGN §10).
//! It is rewritten (atomically) whenever a child (re)starts, so a reader always sees current
//! pids.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One worker in `state.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerEntry {
    /// Its shard.
    pub shard: u32,
    /// Its current pid.
    pub pid: u32,
    /// Its HTTP address.
    pub addr: String,
    /// How many times it was restarted.
    #[serde(default)]
    pub restarts: u32,
}

/// The whole document. Fields not known yet are `null`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevState {
    /// The `wafleet dev` process.
    pub pid: u32,
    /// Consul HTTP address (`CONSUL_HTTP_ADDR` without the scheme).
    pub consul_http: Option<String>,
    /// Consul DNS address.
    pub consul_dns: Option<String>,
    /// Router address.
    pub router: Option<String>,
    /// Simulator address (`null` with `--wa-url` or while the simulator is not available).
    pub sim: Option<String>,
    /// The WhatsApp Web URL the workers use.
    pub wa_url: Option<String>,
    /// The shared data directory.
    pub data: String,
    /// A file (mode 0600) holding the admin token.
    pub admin_token_file: String,
    /// Pids of the other children by name (`consul`, `router`, `sim`).
    pub pids: BTreeMap<String, u32>,
    /// Workers, by shard.
    pub workers: Vec<WorkerEntry>,
}

impl DevState {
    /// Records that worker `shard` (re)started with `pid` at `addr`.
    pub fn set_worker(&mut self, shard: u32, pid: u32, addr: String) {
        match self.workers.iter_mut().find(|w| w.shard == shard) {
            Some(w) => {
                w.restarts += u32::from(w.pid != pid);
                w.pid = pid;
                w.addr = addr;
            }
            None => {
                self.workers.push(WorkerEntry {
                    shard,
                    pid,
                    addr,
                    restarts: 0,
                });
                self.workers.sort_by_key(|w| w.shard);
            }
        }
    }
}

/// First restart delay after a child died.
pub const RESTART_DELAY_MS: u64 = 500;
/// Longest restart delay (a child that keeps crashing).
pub const MAX_RESTART_DELAY_MS: u64 = 10_000;
/// A child that ran at least this long counts as healthy again (back-off resets).
pub const HEALTHY_AFTER_SECS: u64 = 30;

/// Delay before restarting a child that died `consecutive` times in a row without running
/// [`HEALTHY_AFTER_SECS`] (0 for the first death): doubling from [`RESTART_DELAY_MS`].
pub fn restart_delay(consecutive: u32) -> Duration {
    let ms = RESTART_DELAY_MS.saturating_mul(1u64 << consecutive.min(16));
    Duration::from_millis(ms.min(MAX_RESTART_DELAY_MS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_delay_doubles_and_is_capped() {
        assert_eq!(restart_delay(0), Duration::from_millis(500));
        assert_eq!(restart_delay(1), Duration::from_millis(1000));
        assert_eq!(restart_delay(3), Duration::from_millis(4000));
        assert_eq!(
            restart_delay(10),
            Duration::from_millis(MAX_RESTART_DELAY_MS)
        );
        assert_eq!(
            restart_delay(u32::MAX),
            Duration::from_millis(MAX_RESTART_DELAY_MS)
        );
    }

    #[test]
    fn worker_entries_track_restarts_and_stay_sorted() {
        let mut s = DevState::default();
        s.set_worker(1, 10, "a".into());
        s.set_worker(0, 11, "b".into());
        s.set_worker(1, 12, "a".into());
        s.set_worker(1, 12, "a".into());
        assert_eq!(
            s.workers.iter().map(|w| w.shard).collect::<Vec<_>>(),
            [0, 1]
        );
        assert_eq!(s.workers[1].pid, 12);
        assert_eq!(s.workers[1].restarts, 1);
        let json = serde_json::to_value(&s).unwrap();
        assert!(json.get("consul_http").is_some() && json["workers"][0]["addr"] == "b");
    }
}
