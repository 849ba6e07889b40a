//! `wafleet-chaos`: the chaos suite. Starts (or attaches to) a `wafleet dev` fleet, creates M
//! workspaces with one session each, keeps steady traffic on all of them through the router,
//! injects one fault per scenario, checks the fleet's invariants continuously, and writes
//! `target/chaos/report.json` plus a Markdown table. A broken invariant makes the exit status
//! non-zero and prints the evidence.
//!
//! Modules: [`model`] (records), [`check`] and [`report`] (pure), [`fleet`], [`traffic`],
//! [`observe`], [`netns`] (I/O adapters), [`scenario`] (the scenarios).

mod check;
mod fleet;
mod model;
mod netns;
mod observe;
mod report;
mod scenario;
mod traffic;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use crate::fleet::{Fleet, NetnsPlan, StartConfig};
use crate::observe::{Observations, Receiver};
use crate::scenario::{Caps, Ctx, Partition, Timing};
use crate::traffic::{Recorder, Target, TrafficConfig};

mod drive;
use drive::drive;

/// Command-line flags.
#[derive(Debug, Parser)]
#[command(name = "wafleet-chaos", about = "Chaos suite for a wafleet dev fleet")]
struct Args {
    /// Comma-separated scenarios, or `all`.
    #[arg(long, default_value = "all")]
    scenarios: String,
    /// Attach to a running fleet through its `<data>/dev/state.json` instead of starting one.
    #[arg(long)]
    state: Option<PathBuf>,
    /// The `wafleet` binary (to start the fleet, an extra worker, `shards apply`).
    #[arg(long, default_value = "target/debug/wafleet")]
    wafleet: PathBuf,
    /// Workers to start (ignored with --state).
    #[arg(long, default_value_t = 3)]
    workers: u32,
    /// Workspaces (one session each) under traffic.
    #[arg(long, default_value_t = 30)]
    workspaces: usize,
    /// Interval between two status reads of one workspace, ms.
    #[arg(long, default_value_t = 250)]
    interval_ms: u64,
    /// A send every N status reads when sends are supported (0 = never).
    #[arg(long, default_value_t = 8)]
    send_every: u64,
    /// Worker Consul session TTL, seconds (passed to `wafleet dev`).
    #[arg(long, default_value_t = 10)]
    session_ttl_secs: u64,
    /// Worker lock delay, seconds.
    #[arg(long, default_value_t = 2)]
    lock_delay_secs: u64,
    /// Worker drain grace, seconds.
    #[arg(long, default_value_t = 10)]
    drain_grace_secs: u64,
    /// How long one scenario may take to heal, seconds.
    #[arg(long, default_value_t = 120)]
    recover_timeout_secs: u64,
    /// Consecutive good reads per workspace that count as healthy.
    #[arg(long, default_value_t = 3)]
    healthy_reads: usize,
    /// How long the webhook receiver stays down in webhook-outage, seconds.
    #[arg(long, default_value_t = 10)]
    webhook_outage_secs: u64,
    /// A message/webhook later than this counts as delayed, seconds.
    #[arg(long, default_value_t = 5)]
    delay_secs: u64,
    /// Hard bound on the whole run (traffic and sampling stop by themselves), seconds.
    #[arg(long, default_value_t = 1800)]
    max_run_secs: u64,
    /// Output directory for report.json, table.md and logs.
    #[arg(long, default_value = "target/chaos")]
    out: PathBuf,
    /// Run id in workspace names (`chaos-<id>-NNN`) and message texts; random when absent. A
    /// fixed id gives the same workspaces, hence the same shard split, on every run.
    #[arg(long, value_parser = parse_run_id)]
    run_id: Option<String>,
    /// The shard the single-shard scenarios hit (default: the shard owning most workspaces).
    #[arg(long)]
    victim: Option<u32>,
    /// How partition-worker cuts the victim off from Consul: `netns` runs the victim worker in
    /// a network namespace and takes its veth link down (needs root and iproute2); `agent`
    /// uses the built-in agent's drop-session fault; `auto` is netns when the machine allows
    /// it, else agent (the reason goes to the report's notes).
    #[arg(long, value_enum, default_value_t = PartitionArg::Auto)]
    partition: PartitionArg,
}

/// `--partition`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum PartitionArg {
    /// netns when the probe passes, else agent.
    Auto,
    /// A network namespace with a veth pair (fails when the machine does not allow it).
    Netns,
    /// The agent's drop-session fault.
    Agent,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    wafleet::telemetry::init_tracing(wafleet::telemetry::LogFormat::Text);
    let args = Args::parse();
    match run(args).await {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("wafleet-chaos: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

fn utc_now() -> String {
    civil(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default(),
    )
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
fn civil(secs: u64) -> String {
    // Civil date from days since 1970 (Howard Hinnant's algorithm).
    let days = (secs / 86_400) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let s = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

async fn run(args: Args) -> Result<bool, Box<dyn std::error::Error>> {
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let started_at = utc_now();
    std::fs::create_dir_all(&args.out)?;
    let out = std::path::absolute(&args.out)?;
    let log_dir = out.join("logs");
    std::fs::create_dir_all(&log_dir)?;
    let names: Vec<String> = if args.scenarios == "all" {
        scenario::ALL.iter().map(|s| (*s).to_owned()).collect()
    } else {
        args.scenarios
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    };
    for n in &names {
        if !scenario::ALL.contains(&n.as_str()) && !scenario::EXTRA.contains(&n.as_str()) {
            return Err(format!(
                "unknown scenario {n} (known: {}, {})",
                scenario::ALL.join(", "),
                scenario::EXTRA.join(", ")
            )
            .into());
        }
    }

    // Signals are handled from the start, so a Ctrl-C during start-up still stops the fleet
    // and removes the namespace.
    let interrupted = CancellationToken::new();
    {
        let t = interrupted.clone();
        tokio::spawn(async move {
            wafleet::shutdown::signal().await;
            t.cancel();
        });
    }
    let run_id = args
        .run_id
        .clone()
        .unwrap_or_else(|| format!("{:06x}", rand::random::<u32>() & 0xff_ffff));
    let workspaces: Vec<String> = (0..args.workspaces)
        .map(|i| format!("chaos-{run_id}-{i:03}"))
        .collect();

    // The partition mode, and in netns mode the namespace (before the fleet: the victim
    // worker starts inside it).
    let (partition, victim) = choose_partition(&args, &workspaces)?;
    tracing::info!(mode = partition.mode(), ?victim, "partition-worker mode");
    let link = match &partition {
        Partition::Netns(l) => Some(l.clone()),
        Partition::Agent { .. } => None,
    };

    let dev_pid = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let fleet = match &args.state {
        Some(state) => Fleet::attach(state, args.wafleet.clone(), |k| std::env::var(k).ok())?,
        None => {
            let cfg = StartConfig {
                bin: std::path::absolute(&args.wafleet)?,
                workers: args.workers,
                session_ttl_secs: args.session_ttl_secs,
                lock_delay_secs: args.lock_delay_secs,
                drain_grace_secs: args.drain_grace_secs,
                log: log_dir.join("dev.log"),
                netns: link.as_ref().zip(victim).map(|(l, shard)| NetnsPlan {
                    shard,
                    netns: l.name.clone(),
                    inner_ip: l.ns_ip,
                    host_ip: l.host_ip,
                }),
                dev_pid: dev_pid.clone(),
            };
            let start = Fleet::start(&cfg);
            tokio::pin!(start);
            tokio::select! {
                r = &mut start => match r {
                    Ok(f) => f,
                    Err(e) => {
                        if let Some(l) = &link {
                            l.teardown();
                        }
                        return Err(e.into());
                    }
                },
                _ = interrupted.cancelled() => {
                    // Stop dev cleanly (it drains its workers), then remove the namespace.
                    let pid = dev_pid.load(std::sync::atomic::Ordering::SeqCst);
                    if pid != 0 {
                        let _ = fleet::signal(pid, "TERM").await;
                        wait_exited(pid, Duration::from_secs(args.drain_grace_secs + 20)).await;
                    }
                    if let Some(l) = &link {
                        l.teardown();
                    }
                    return Err("interrupted by a signal during start-up; fleet stopped".into());
                }
            }
        }
    };
    let fleet = Arc::new(fleet);
    // SIGINT/SIGTERM (Ctrl-C, `timeout`) still stops the fleet we started.
    let plan = Plan {
        run_id,
        workspaces,
        victim,
        partition,
    };
    let result = tokio::select! {
        r = drive(&args, fleet.clone(), command, started_at, &out, log_dir, plan) => r,
        _ = interrupted.cancelled() => Err("interrupted by a signal; stopping the fleet".into()),
    };
    // Stops what the suite started: its extra workers, and the fleet when it started it.
    tracing::info!(owned = fleet.owned(), "stopping what the suite started");
    fleet
        .stop(Duration::from_secs(args.drain_grace_secs + 20))
        .await;
    // Only after the namespaced worker has stopped.
    if let Some(l) = &link {
        l.teardown();
    }
    result
}

/// Waits (bounded) until `pid` has exited (gone, or a zombie waiting for its parent).
async fn wait_exited(pid: u32, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
        let alive = state
            .as_deref()
            .and_then(|s| s.rsplit_once(") "))
            .is_some_and(|(_, rest)| !rest.starts_with('Z'));
        if !alive {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What `run` decided before the fleet started.
struct Plan {
    run_id: String,
    workspaces: Vec<String>,
    /// The victim shard when it had to be known before the start (netns mode, `--victim`).
    victim: Option<u32>,
    partition: Partition,
}

/// PURE: the partition mode from the flag, attaching or not, and the probe's outcome.
/// `Ok(true)` = netns; `Ok(false)` = agent with that reason (`None`: asked for); `Err`: netns
/// was demanded but is impossible.
fn decide_mode(
    arg: PartitionArg,
    attached: bool,
    probe: impl FnOnce() -> Result<(), String>,
) -> Result<Result<(), Option<String>>, String> {
    match arg {
        PartitionArg::Agent => Ok(Err(None)),
        _ if attached => {
            let why = "attached to a running fleet (--state): its workers cannot be moved into a network namespace".to_owned();
            if arg == PartitionArg::Netns {
                Err(format!("--partition netns: {why}"))
            } else {
                Ok(Err(Some(why)))
            }
        }
        _ => match probe() {
            Ok(()) => Ok(Ok(())),
            Err(why) if arg == PartitionArg::Netns => Err(format!("--partition netns: {why}")),
            Err(why) => Ok(Err(Some(why))),
        },
    }
}

/// Chooses the partition mode (creating the namespace in netns mode) and, in netns mode or
/// with `--victim`, the victim shard.
fn choose_partition(
    args: &Args,
    workspaces: &[String],
) -> Result<(Partition, Option<u32>), Box<dyn std::error::Error>> {
    let pid = std::process::id();
    let mut link = None;
    let mode = decide_mode(args.partition, args.state.is_some(), || {
        netns::probe().map_err(|e| e.to_string())?;
        let stale = netns::remove_stale();
        if !stale.is_empty() {
            tracing::info!(?stale, "removed what earlier runs left behind");
        }
        link = Some(netns::Link::create(pid).map_err(|e| e.to_string())?);
        Ok(())
    })?;
    match (mode, link) {
        (Ok(()), Some(link)) => {
            // The workspaces' owners are a pure function of their names and the initial map.
            let victim = args.victim.unwrap_or_else(|| {
                scenario::pick_victim(&wafleet::shard::ShardMap::uniform(args.workers), workspaces)
            });
            if victim >= args.workers {
                return Err(format!("--victim {victim}: only {} workers", args.workers).into());
            }
            Ok((Partition::Netns(Arc::new(link)), Some(victim)))
        }
        (Ok(()), None) => Err("internal: netns mode without a namespace".into()),
        (Err(reason), _) => Ok((Partition::Agent { reason }, args.victim)),
    }
}

/// Run ids end up in workspace ids (`^[A-Za-z0-9_-]{1,64}$`, with room for the rest).
fn parse_run_id(s: &str) -> Result<String, String> {
    if (1..=16).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric()) {
        Ok(s.to_owned())
    } else {
        Err("1 to 16 ASCII letters or digits".into())
    }
}

impl Args {
    fn scenarios_list(&self) -> Vec<String> {
        if self.scenarios == "all" {
            scenario::ALL.iter().map(|s| (*s).to_owned()).collect()
        } else {
            self.scenarios
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        }
    }
}

#[cfg(test)]
mod tests;
