//! The scenarios: each waits for a healthy fleet, takes a snapshot of the sessions, injects
//! one fault (recording the instant and what it hit), waits — with deadlines — for the fleet
//! to heal, and turns the recorded traffic and observations into a [`ScenarioReport`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::check::{self, names};
use crate::fleet::{self, Fleet, FleetError};
use crate::model::{InvariantResult, Violation};
use crate::observe::{Observations, Receiver};
use crate::report::{self, ScenarioReport};
use crate::traffic::{self, Recorder, Target};

mod edge_faults;
use edge_faults::{browser_crash, scale_out, webhook_outage};

mod partition;
use partition::{no_new_session, partition, shard_and_holder, shard_holders};

mod consul;
use consul::{consul_agent_restart, consul_outage};

mod measure;
use measure::{one, single};

/// Every scenario, in the order a full run uses.
pub const ALL: &[&str] = &[
    "kill-worker",
    "drain-worker",
    "partition-worker",
    "freeze-worker",
    "consul-outage",
    "consul-agent-restart",
    "rolling-restart",
    "browser-crash",
    "webhook-outage",
    "scale-out",
];

/// Scenarios run only when named: `control` is the negative control (a violation on purpose).
pub const EXTRA: &[&str] = &["control"];

/// What the fleet under test can do (probed, never assumed).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Caps {
    /// Sessions run a real engine (they showed a QR and were linked through the simulator).
    pub real_sessions: bool,
    /// `POST …/messages` answers 202.
    pub sends: bool,
    /// Webhooks reach our receiver.
    pub webhooks: bool,
    /// A simulator runs.
    pub sim: bool,
}

/// How `partition-worker` cuts the victim off from Consul.
#[derive(Debug, Clone)]
pub enum Partition {
    /// The victim runs inside this network namespace: the link is cut for real.
    Netns(Arc<crate::netns::Link>),
    /// The built-in agent's drop-session fault; `reason` says why netns mode is not used
    /// (`None`: asked for with `--partition agent`).
    Agent {
        /// Why not netns.
        reason: Option<String>,
    },
}

impl Partition {
    /// `netns` or `agent`.
    pub fn mode(&self) -> &'static str {
        match self {
            Partition::Netns(_) => "netns",
            Partition::Agent { .. } => "agent",
        }
    }
}

/// The victim shard: the one owning the most of `workspaces` under `map`, the lowest id on a
/// tie (0 when nothing is owned). Pure, so it can be computed from the initial map before the
/// fleet starts (netns mode starts the victim inside the namespace).
pub fn pick_victim(map: &wafleet::shard::ShardMap, workspaces: &[String]) -> u32 {
    let mut count: BTreeMap<u32, usize> = BTreeMap::new();
    for ws in workspaces {
        if let Ok(id) = wafleet::ids::WorkspaceId::new(ws.clone())
            && let Some(k) = map.owner(&id)
        {
            *count.entry(k).or_default() += 1;
        }
    }
    // Most workspaces; the lowest shard id on a tie.
    count
        .iter()
        .max_by_key(|(k, n)| (**n, std::cmp::Reverse(**k)))
        .map_or(0, |(k, _)| *k)
}

/// Timing knobs.
#[derive(Debug, Clone)]
pub struct Timing {
    /// Worker session TTL (the fencing deadline is 2/3 of it).
    pub session_ttl: Duration,
    /// How long a scenario may take to heal.
    pub recover_timeout: Duration,
    /// Consecutive good reads per workspace that count as healthy.
    pub healthy_reads: usize,
    /// How long the webhook receiver stays down.
    pub webhook_outage: Duration,
    /// A message or webhook later than this counts as delayed.
    pub delay_threshold: Duration,
}

/// Everything a scenario needs.
pub struct Ctx {
    /// The fleet.
    pub fleet: Arc<Fleet>,
    /// Recorded traffic.
    pub rec: Arc<Recorder>,
    /// Sampler observations.
    pub obs: Arc<Observations>,
    /// How to reach the router.
    pub target: Target,
    /// The workspaces under traffic.
    pub workspaces: Vec<String>,
    /// Workspace → phone it is linked to (real sessions).
    pub phones: BTreeMap<String, String>,
    /// The session id in every workspace.
    pub session: String,
    /// Probed capabilities.
    pub caps: Caps,
    /// Timing.
    pub timing: Timing,
    /// The webhook receiver.
    pub receiver: Receiver,
    /// Where extra process logs go.
    pub log_dir: std::path::PathBuf,
    /// Sim message texts seen so far (text → first seen).
    pub delivered: tokio::sync::Mutex<BTreeMap<String, u64>>,
    /// How partition-worker cuts the victim off.
    pub partition: Partition,
}

/// What an injected fault hit.
struct Fault {
    /// One line: what was done to whom.
    action: String,
    /// Shards it targets.
    shards: Vec<u32>,
    /// `(from_ms, to_ms, affected workspaces)`: inside each window, workspaces outside the set
    /// must see no error.
    windows: Vec<(u64, u64, BTreeSet<String>)>,
    /// Workspaces affected over the whole scenario (for the measures).
    affected: BTreeSet<String>,
    /// Extra violations the scenario found itself.
    violations: Vec<Violation>,
    /// Notes.
    notes: Vec<String>,
}

impl Ctx {
    fn owners(&self, map: &wafleet::shard::ShardMap) -> BTreeMap<String, u32> {
        self.workspaces
            .iter()
            .filter_map(|ws| {
                let id = wafleet::ids::WorkspaceId::new(ws.clone()).ok()?;
                Some((ws.clone(), map.owner(&id)?))
            })
            .collect()
    }

    fn of_shards(&self, owners: &BTreeMap<String, u32>, shards: &[u32]) -> BTreeSet<String> {
        owners
            .iter()
            .filter(|(_, k)| shards.contains(k))
            .map(|(w, _)| w.clone())
            .collect()
    }

    /// Waits until every workspace has `healthy_reads` consecutive successful WORKING status
    /// reads, all sent after `since_ms`. Returns the instant it held.
    async fn wait_healthy(&self, since_ms: u64, timeout: Duration) -> Result<u64, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let outcomes = self.rec.outcomes();
            let mut sick = Vec::new();
            for ws in &self.workspaces {
                let mine: Vec<_> = outcomes
                    .iter()
                    .filter(|o| {
                        &o.ws == ws && o.t_ms >= since_ms && o.kind == crate::model::Kind::Status
                    })
                    .collect();
                let tail = &mine[mine.len().saturating_sub(self.timing.healthy_reads)..];
                if tail.len() < self.timing.healthy_reads || !tail.iter().all(|o| o.ok_working()) {
                    sick.push(ws.clone());
                }
            }
            if sick.is_empty() {
                return Ok(self.rec.now_ms());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} workspace(s) not healthy within {timeout:?}: {:?}",
                    sick.len(),
                    &sick[..sick.len().min(5)]
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until worker `shard` has a pid other than `old` in state.json (restarted by
    /// `wafleet dev`).
    async fn wait_restarted(&self, shard: u32, old: u32) -> Result<u32, FleetError> {
        let s = self
            .fleet
            .wait_for(
                &format!("worker {shard} to be restarted"),
                self.timing.recover_timeout,
                |s| s.workers.iter().any(|w| w.shard == shard && w.pid != old),
            )
            .await?;
        Ok(s.workers
            .iter()
            .find(|w| w.shard == shard)
            .map_or(0, |w| w.pid))
    }

    fn pid_of(&self, shard: u32) -> Result<u32, FleetError> {
        self.fleet
            .workers()
            .iter()
            .find(|w| w.shard == shard)
            .map(|w| w.pid)
            .ok_or_else(|| FleetError::Fleet(format!("no worker for shard {shard}")))
    }

    /// The messages accepted (202) in `[from, to]`.
    fn accepted_between(&self, from: u64, to: u64) -> Vec<crate::model::Accepted> {
        self.rec
            .accepted()
            .into_iter()
            .filter(|a| a.t_ms >= from && a.t_ms <= to)
            .collect()
    }

    /// Polls the simulator and message statuses until every message accepted in
    /// `[from, to]` is delivered or failed, or `timeout`.
    async fn settle_messages(
        &self,
        from: u64,
        to: u64,
        timeout: Duration,
    ) -> (check::MessageTally, Vec<Violation>) {
        let deadline = Instant::now() + timeout;
        let accepted = self.accepted_between(from, to);
        let mut failed = BTreeSet::new();
        loop {
            let sim = self.fleet.sim();
            let mut delivered = self.delivered.lock().await;
            if let Some(sim) = &sim {
                for phone in self.phones.values() {
                    traffic::sim_messages(&self.fleet.http, sim, phone, &self.rec, &mut delivered)
                        .await;
                }
            }
            for a in accepted.iter().filter(|a| !delivered.contains_key(&a.text)) {
                if !failed.contains(&a.id)
                    && traffic::message_status(&self.target, a).await.as_deref() == Some("failed")
                {
                    failed.insert(a.id.clone());
                }
            }
            let pending = accepted
                .iter()
                .filter(|a| !delivered.contains_key(&a.text) && !failed.contains(&a.id))
                .count();
            if pending == 0 || Instant::now() >= deadline {
                return check::messages(
                    self.rec.now_ms(),
                    &accepted,
                    &delivered,
                    &failed,
                    self.timing.delay_threshold.as_millis() as u64,
                );
            }
            drop(delivered);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn settle_webhooks(
        &self,
        from: u64,
        to: u64,
        timeout: Duration,
    ) -> (check::WebhookTally, Vec<Violation>) {
        let deadline = Instant::now() + timeout;
        let accepted = self.accepted_between(from, to);
        loop {
            let got = self.receiver.received();
            let r = check::webhooks(
                self.rec.now_ms(),
                &accepted,
                &got,
                self.timing.delay_threshold.as_millis() as u64,
            );
            if r.0.lost == 0 || Instant::now() >= deadline {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Runs one scenario by name; may produce several report rows (consul-outage: short, long).
pub async fn run(ctx: &Ctx, name: &str, victim: u32) -> Vec<ScenarioReport> {
    match name {
        "consul-outage" => {
            let fence = ctx.timing.session_ttl * 2 / 3;
            let short = fence / 2;
            let long = ctx.timing.session_ttl + Duration::from_secs(3);
            vec![
                one(ctx, "consul-outage-short", |c| {
                    consul_outage(c, short, false)
                })
                .await,
                one(ctx, "consul-outage-long", |c| consul_outage(c, long, true)).await,
            ]
        }
        "consul-agent-restart" => vec![one(ctx, name, consul_agent_restart).await],
        "kill-worker" => vec![one(ctx, name, |c| restart_worker(c, victim, "KILL")).await],
        "control" => vec![control(ctx, victim).await],
        "drain-worker" => vec![one(ctx, name, |c| restart_worker(c, victim, "TERM")).await],
        "partition-worker" => vec![one(ctx, name, |c| partition(c, victim)).await],
        "freeze-worker" => vec![one(ctx, name, |c| freeze_worker(c, victim)).await],
        "rolling-restart" => vec![one(ctx, name, rolling).await],
        "scale-out" => vec![one(ctx, name, scale_out).await],
        "browser-crash" if !ctx.caps.real_sessions => vec![ScenarioReport::skipped(
            name,
            "sessions are placeholders (no Chromium runs): nothing to crash".into(),
        )],
        "browser-crash" => vec![one(ctx, name, |c| browser_crash(c, victim)).await],
        "webhook-outage" if !ctx.caps.webhooks => vec![ScenarioReport::skipped(
            name,
            "webhooks are not delivered by this fleet yet (no event reached the receiver)".into(),
        )],
        "webhook-outage" if !ctx.caps.sends => vec![ScenarioReport::skipped(
            name,
            "webhook-outage needs sends to generate message events; sends are not supported".into(),
        )],
        "webhook-outage" => vec![one(ctx, name, webhook_outage).await],
        other => vec![ScenarioReport::skipped(other, "unknown scenario".into())],
    }
}

/// The negative control: kill-worker again, but *declare* that no workspace is affected. The
/// unaffected-shards invariant must then catch the victim shard's errors; the control passes
/// only if it does, proving the suite can see a broken invariant.
async fn control(ctx: &Ctx, victim: u32) -> ScenarioReport {
    let mut rep = one(ctx, "control", |c| async move {
        let mut f = restart_worker(c, victim, "KILL").await?;
        f.affected.clear();
        for w in &mut f.windows {
            w.2.clear();
        }
        f.action = format!(
            "negative control: {} (declared as affecting nothing)",
            f.action
        );
        Ok(f)
    })
    .await;
    // What the checker itself reported (not the measures, which are computed separately).
    let caught = rep
        .invariants
        .iter()
        .find(|i| i.name == names::UNAFFECTED_NO_ERROR)
        .map_or(0, |i| i.violations.len());
    let others_held = rep
        .invariants
        .iter()
        .filter(|i| i.name != names::UNAFFECTED_NO_ERROR)
        .all(InvariantResult::held);
    rep.passed = caught > 0 && others_held;
    rep.notes.push(format!(
        "negative control: the unaffected-shards checker reported violations on purpose ({caught} kept as evidence, expected > 0); they do not fail the run"
    ));
    rep
}

async fn current_owners(ctx: &Ctx) -> Result<BTreeMap<String, u32>, String> {
    Ok(ctx.owners(&ctx.fleet.shard_map().await.map_err(|e| e.to_string())?))
}

/// kill-worker (SIGKILL) and drain-worker (SIGTERM): `wafleet dev` restarts the worker.
async fn restart_worker(ctx: &Ctx, shard: u32, sig: &str) -> Result<Fault, String> {
    let owners = current_owners(ctx).await?;
    let affected = ctx.of_shards(&owners, &[shard]);
    let pid = ctx.pid_of(shard).map_err(|e| e.to_string())?;
    let from = ctx.rec.now_ms();
    fleet::signal(pid, sig).await.map_err(|e| e.to_string())?;
    let new = ctx
        .wait_restarted(shard, pid)
        .await
        .map_err(|e| e.to_string())?;
    Ok(single(
        format!(
            "SIG{sig} worker shard {shard} pid {pid} ({} workspaces); wafleet dev restarted it as pid {new}",
            affected.len()
        ),
        vec![shard],
        affected,
        from,
    ))
}

/// Sends SIGCONT to a frozen worker if the scenario ends before it did (an error, a cut-off
/// run): a worker left stopped would hold up everything after it.
struct Thaw(Option<u32>);

impl Drop for Thaw {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            let _ = std::process::Command::new("kill")
                .args(["-CONT", &pid.to_string()])
                .status();
        }
    }
}

/// freeze-worker: SIGSTOP the victim's worker (a VM pause, a process stuck for longer than its
/// TTL) until Consul has invalidated its session and the shard lock is free, then SIGCONT. Its
/// Chromiums keep running meanwhile (separate processes). On resume the worker must notice at
/// once that its locks are gone — fence and close its browsers before anything else — then
/// take the shard again with a new session and restore every session without a QR; the
/// sampler's lock checks (runner without a lock holder in two rounds) watch that moment.
async fn freeze_worker(ctx: &Ctx, shard: u32) -> Result<Fault, String> {
    let (affected, session) = shard_and_holder(ctx, shard).await?;
    let pid = ctx.pid_of(shard).map_err(|e| e.to_string())?;
    let from = ctx.rec.now_ms();
    fleet::signal(pid, "STOP")
        .await
        .map_err(|e| e.to_string())?;
    let mut thaw = Thaw(Some(pid));
    let frozen = Instant::now();
    let deadline = frozen + ctx.timing.recover_timeout;
    let holder =
        |h: Option<BTreeMap<String, String>>| h.and_then(|h| h.get(&shard.to_string()).cloned());
    // The fault must outlast the session: wait until the old session no longer holds the lock.
    loop {
        let now = holder(ctx.fleet.lock_holders("wafleet/locks/shards/").await);
        if now.as_deref() != Some(session.as_str()) {
            break;
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "shard {shard}'s lock was still held by the frozen worker's session {session} after {:?}",
                ctx.timing.recover_timeout
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let released = frozen.elapsed();
    fleet::signal(pid, "CONT")
        .await
        .map_err(|e| e.to_string())?;
    thaw.0 = None;
    // The same process takes the shard back with a new session.
    let mut violations = Vec::new();
    let new_session = loop {
        let now = holder(ctx.fleet.lock_holders("wafleet/locks/shards/").await);
        if let Some(s) = now.filter(|s| *s != session) {
            break Some(s);
        }
        if Instant::now() >= deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if new_session.is_none() {
        violations.push(no_new_session(ctx.rec.now_ms(), shard, &session));
    }
    let mut f = single(
        format!(
            "SIGSTOP worker shard {shard} pid {pid} ({} workspaces) until its session {session} lost the shard lock ({:.1}s), then SIGCONT; new session {}",
            affected.len(),
            released.as_secs_f64(),
            new_session.as_deref().unwrap_or("none")
        ),
        vec![shard],
        affected,
        from,
    );
    if ctx.pid_of(shard).ok() == Some(pid) {
        f.notes
            .push("the thawed process itself recovered (no restart by wafleet dev)".into());
    }
    f.violations = violations;
    Ok(f)
}

/// rolling-restart: SIGTERM every worker in turn, waiting for a healthy fleet in between.
async fn rolling(ctx: &Ctx) -> Result<Fault, String> {
    let owners = current_owners(ctx).await?;
    let mut shards: Vec<u32> = ctx.fleet.workers().iter().map(|w| w.shard).collect();
    shards.sort_unstable();
    let mut windows = Vec::new();
    let mut actions = Vec::new();
    for k in &shards {
        let affected = ctx.of_shards(&owners, &[*k]);
        let pid = ctx.pid_of(*k).map_err(|e| e.to_string())?;
        let from = ctx.rec.now_ms();
        fleet::signal(pid, "TERM")
            .await
            .map_err(|e| e.to_string())?;
        let new = ctx
            .wait_restarted(*k, pid)
            .await
            .map_err(|e| e.to_string())?;
        ctx.wait_healthy(ctx.rec.now_ms(), ctx.timing.recover_timeout)
            .await?;
        windows.push((from, ctx.rec.now_ms(), affected));
        actions.push(format!("{k}:{pid}→{new}"));
    }
    Ok(Fault {
        action: format!(
            "SIGTERM each worker in turn (shard:pid→new pid) {}",
            actions.join(", ")
        ),
        shards: shards.clone(),
        windows,
        affected: owners.keys().cloned().collect(),
        violations: Vec::new(),
        notes: Vec::new(),
    })
}
