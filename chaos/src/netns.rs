//! I/O adapter over iproute2's `ip`: the network namespace and veth pair behind the real
//! `partition-worker`. One namespace `wfc-<pid>` with a veth pair: the host end gets
//! `10.213.N.1/30`, the namespace end `10.213.N.2/30` (N from the pid, skipping subnets in
//! use), both up, `lo` up inside. The victim worker runs inside it from the start; the Consul
//! agent, the simulator and the webhook receiver listen on the host end's address.
//!
//! * **cut**: `ip link set <host end> down`. Packets from the namespace are lost: its
//!   connections hang, nobody sends a reset — a real partition as the worker sees it. On the
//!   host, a `blackhole` route for the /30 (a high metric, so it only matters while the link is
//!   down) keeps packets for the namespace from following the default route off the machine;
//!   host connections to it fail at once.
//! * **heal**: `ip link set <host end> up`; the caller waits until the namespace answers again.
//! * **teardown**: `ip netns del` (that removes the veth pair) and the blackhole route; run
//!   explicitly on every exit path and by `Drop`. [`remove_stale`] cleans what a run killed
//!   with SIGKILL left behind (namespaces `wfc-<pid>` whose pid is gone).
//!
//! It does not start processes in the namespace (`wafleet dev --worker-netns` does).

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

/// Namespace names start with this, followed by the owning suite's pid.
pub const PREFIX: &str = "wfc-";
/// Marks this suite's blackhole routes (so stale ones can be told from anyone else's).
const BLACKHOLE_METRIC: &str = "4213";

/// Why the namespace could not be set up or changed.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// `ip` could not be run at all.
    #[error("cannot run `ip` (iproute2): {0}")]
    Io(#[from] std::io::Error),
    /// `ip` ran and failed.
    #[error("`ip {args}` failed ({status}): {stderr}")]
    Command {
        /// The arguments.
        args: String,
        /// Exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// Not running as root.
    #[error("network namespaces need root (effective uid {0})")]
    NotRoot(u32),
    /// Every `10.213.N.0/30` is in use.
    #[error("no free 10.213.N.0/30 subnet")]
    NoSubnet,
}

fn ip(args: &[&str]) -> Result<String, NetnsError> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(NetnsError::Command {
            args: args.join(" "),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Effective uid from `/proc/self/status` (no unsafe code in this crate).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Whether this machine allows the namespace: root and `ip` present. (Whether `ip netns add`
/// works is only known by trying: [`Link::create`] is the last step of the probe.)
pub fn probe() -> Result<(), NetnsError> {
    match effective_uid() {
        Some(0) => {}
        Some(uid) => return Err(NetnsError::NotRoot(uid)),
        None => return Err(NetnsError::NotRoot(u32::MAX)),
    }
    ip(&["-V"]).map(|_| ())
}

/// PURE: the namespaces in `ip netns list` output that belong to this suite, with their pid.
fn owned_namespaces(list: &str) -> Vec<(String, u32)> {
    list.lines()
        .filter_map(|l| {
            let name = l.split_whitespace().next()?;
            let pid = name.strip_prefix(PREFIX)?.parse().ok()?;
            Some((name.to_owned(), pid))
        })
        .collect()
}

/// PURE: the N of every `10.213.N.x` address in `ip -4 -o addr show` output.
fn used_subnets(addrs: &str) -> Vec<u8> {
    addrs
        .split_whitespace()
        .filter_map(|w| w.split('/').next()?.parse::<Ipv4Addr>().ok())
        .filter(|a| a.octets()[..2] == [10, 213])
        .map(|a| a.octets()[2])
        .collect()
}

/// PURE: the N of every blackhole route this suite added, in `ip route show type blackhole`.
fn our_blackholes(routes: &str) -> Vec<u8> {
    routes
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .collect::<Vec<_>>()
                .windows(2)
                .any(|w| w == ["metric", BLACKHOLE_METRIC])
        })
        .filter_map(|l| {
            let net = l.split_whitespace().find(|w| w.starts_with("10.213."))?;
            let a: Ipv4Addr = net.split('/').next()?.parse().ok()?;
            Some(a.octets()[2])
        })
        .collect()
}

/// PURE: the subnet N for `pid`: `pid mod 256`, or the next one not in `used`.
fn pick_subnet(pid: u32, used: &[u8]) -> Option<u8> {
    (0..256u32)
        .map(|i| ((pid + i) % 256) as u8)
        .find(|n| !used.contains(n))
}

/// Deletes the namespaces (and blackhole routes) of runs whose pid no longer exists. Returns
/// what it removed.
pub fn remove_stale() -> Vec<String> {
    let mut removed = Vec::new();
    let list = ip(&["netns", "list"]).unwrap_or_default();
    for (name, pid) in owned_namespaces(&list) {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            match ip(&["netns", "del", &name]) {
                Ok(_) => removed.push(name),
                Err(e) => tracing::warn!(%name, error = %e, "cannot remove a stale namespace"),
            }
        }
    }
    let used = used_subnets(&ip(&["-4", "-o", "addr", "show"]).unwrap_or_default());
    let routes = ip(&["route", "show", "type", "blackhole"]).unwrap_or_default();
    for n in our_blackholes(&routes) {
        if !used.contains(&n) {
            let net = format!("10.213.{n}.0/30");
            if ip(&[
                "route",
                "del",
                "blackhole",
                &net,
                "metric",
                BLACKHOLE_METRIC,
            ])
            .is_ok()
            {
                removed.push(format!("blackhole {net}"));
            }
        }
    }
    removed
}

/// The namespace, its veth pair and addresses. Deleted by [`Link::teardown`] or on drop.
#[derive(Debug)]
pub struct Link {
    /// Namespace name (`wfc-<pid>`).
    pub name: String,
    /// Host end of the veth pair.
    pub host_if: String,
    /// Namespace end.
    pub ns_if: String,
    /// `10.213.N.1`: the host end; what the namespace reaches (Consul, simulator, webhooks).
    pub host_ip: Ipv4Addr,
    /// `10.213.N.2`: the namespace end; where the victim worker listens.
    pub ns_ip: Ipv4Addr,
    torn_down: AtomicBool,
}

impl Link {
    /// Creates the namespace for this process (`wfc-<pid>`). On error, whatever was created is
    /// removed again.
    pub fn create(pid: u32) -> Result<Link, NetnsError> {
        let used = used_subnets(&ip(&["-4", "-o", "addr", "show"])?);
        let n = pick_subnet(pid, &used).ok_or(NetnsError::NoSubnet)?;
        let link = Link {
            name: format!("{PREFIX}{pid}"),
            // Interface names are at most 15 bytes: "wfc" + 7 digits + 1.
            host_if: format!("wfc{pid}h"),
            ns_if: format!("wfc{pid}n"),
            host_ip: Ipv4Addr::new(10, 213, n, 1),
            ns_ip: Ipv4Addr::new(10, 213, n, 2),
            torn_down: AtomicBool::new(false),
        };
        // From here on, dropping `link` on an error removes what exists.
        let (ns, h, v) = (
            link.name.as_str(),
            link.host_if.as_str(),
            link.ns_if.as_str(),
        );
        let host = format!("{}/30", link.host_ip);
        let inner = format!("{}/30", link.ns_ip);
        ip(&["netns", "add", ns])?;
        ip(&["link", "add", h, "type", "veth", "peer", "name", v])?;
        ip(&["link", "set", v, "netns", ns])?;
        ip(&["addr", "add", &host, "dev", h])?;
        ip(&["link", "set", h, "up"])?;
        ip(&["-n", ns, "addr", "add", &inner, "dev", v])?;
        ip(&["-n", ns, "link", "set", v, "up"])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        ip(&[
            "route",
            "add",
            "blackhole",
            &link.subnet(),
            "metric",
            BLACKHOLE_METRIC,
        ])?;
        tracing::info!(namespace = %link.name, host = %link.host_ip, inner = %link.ns_ip, "network namespace ready");
        Ok(link)
    }

    fn subnet(&self) -> String {
        let o = self.host_ip.octets();
        format!("{}.{}.{}.0/30", o[0], o[1], o[2])
    }

    /// Cuts the link: the host end goes down (packets lost, no reset).
    pub fn cut(&self) -> Result<(), NetnsError> {
        ip(&["link", "set", &self.host_if, "down"]).map(|_| ())
    }

    /// Heals the link: the host end comes up again.
    pub fn heal(&self) -> Result<(), NetnsError> {
        ip(&["link", "set", &self.host_if, "up"]).map(|_| ())
    }

    /// Deletes the namespace (with the veth pair) and the blackhole route. Idempotent; errors
    /// are logged (there is nothing better to do on the way out).
    pub fn teardown(&self) {
        if self.torn_down.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            tracing::warn!(namespace = %self.name, error = %e, "cannot delete the namespace");
        }
        // Gone with the namespace unless a process still holds it; then remove it here.
        let _ = ip(&["link", "del", &self.host_if]);
        let _ = ip(&[
            "route",
            "del",
            "blackhole",
            &self.subnet(),
            "metric",
            BLACKHOLE_METRIC,
        ]);
        tracing::info!(namespace = %self.name, "network namespace removed");
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.teardown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_namespaces_with_a_pid_are_listed() {
        let list = "wfc-123 (id: 0)\nwfc-x\nother\nwfc-77\n\n";
        assert_eq!(
            owned_namespaces(list),
            [("wfc-123".to_owned(), 123), ("wfc-77".to_owned(), 77)]
        );
    }

    #[test]
    fn subnets_in_use_are_skipped() {
        let addrs = "1: lo    inet 127.0.0.1/8 scope host lo\n\
                     5: wfc9h    inet 10.213.7.1/30 scope global wfc9h\n\
                     6: eth0    inet 10.214.8.1/24 scope global eth0\n";
        assert_eq!(used_subnets(addrs), [7]);
        assert_eq!(pick_subnet(7, &[]), Some(7));
        assert_eq!(pick_subnet(263, &[7]), Some(8));
        assert_eq!(pick_subnet(255, &[255]), Some(0));
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(pick_subnet(1, &all), None);
    }

    #[test]
    fn only_our_blackhole_routes_are_found() {
        let routes = "blackhole 10.213.7.0/30 metric 4213 \n\
                      blackhole 10.213.8.0/30 \n\
                      blackhole 192.168.0.0/16 metric 4213\n";
        assert_eq!(our_blackholes(routes), [7]);
    }
}
