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

/// The common frame: healthy → snapshot → fault → healthy again → checks.
async fn one<'a, F, Fut>(ctx: &'a Ctx, name: &str, inject: F) -> ScenarioReport
where
    F: FnOnce(&'a Ctx) -> Fut,
    Fut: std::future::Future<Output = Result<Fault, String>> + 'a,
{
    tracing::info!(scenario = name, "waiting for a healthy fleet");
    let mut rep = ScenarioReport::skipped(name, String::new());
    rep.skipped = None;
    let pre = ctx.rec.now_ms();
    if let Err(e) = ctx.wait_healthy(pre, ctx.timing.recover_timeout).await {
        rep.passed = false;
        rep.notes
            .push(format!("fleet not healthy before the fault: {e}"));
        return rep;
    }
    let before =
        traffic::session_table(&ctx.target, &ctx.workspaces, Duration::from_secs(10)).await;
    let map = match ctx.fleet.shard_map().await {
        Ok(m) => m,
        Err(e) => {
            rep.passed = false;
            rep.notes.push(format!("cannot read the shard map: {e}"));
            return rep;
        }
    };
    let owners = ctx.owners(&map);
    let fault_ms = ctx.rec.now_ms();
    rep.fault_ms = fault_ms;
    tracing::info!(scenario = name, "injecting");
    let fault = inject(ctx).await;
    let mut fault = match fault {
        Ok(f) => f,
        Err(e) => {
            rep.passed = false;
            rep.notes.push(format!("scenario did not complete: {e}"));
            rep.end_ms = ctx.rec.now_ms();
            Fault {
                action: String::new(),
                shards: Vec::new(),
                windows: vec![(fault_ms, rep.end_ms, owners.keys().cloned().collect())],
                affected: owners.keys().cloned().collect(),
                violations: Vec::new(),
                notes: Vec::new(),
            }
        }
    };
    // Healthy again: every workspace answers 200 with its sessions WORKING.
    let healed = ctx
        .wait_healthy(ctx.rec.now_ms(), ctx.timing.recover_timeout)
        .await;
    let end_ms = ctx.rec.now_ms();
    rep.end_ms = end_ms;
    rep.action = fault.action.clone();
    rep.affected_shards = fault.shards.clone();
    rep.notes.append(&mut fault.notes);
    let after = traffic::session_table(&ctx.target, &ctx.workspaces, Duration::from_secs(10)).await;
    let outcomes = ctx.rec.outcomes();
    // Detection and recovery count from the injection itself (scale-out first starts a
    // worker); the invariants keep the wider window from before the injection.
    let injected_ms = fault
        .windows
        .iter()
        .map(|w| w.0)
        .min()
        .unwrap_or(fault_ms)
        .max(fault_ms);
    rep.fault_ms = injected_ms;
    if injected_ms > fault_ms {
        // Before the injection proper (e.g. while scale-out starts a worker) nothing may fail.
        fault
            .windows
            .push((fault_ms, injected_ms.saturating_sub(1), BTreeSet::new()));
    }
    rep.measures = report::measure(
        &outcomes,
        &ctx.workspaces,
        &owners,
        &fault.affected,
        injected_ms,
        end_ms,
    );
    rep.measures.router_detect_ms = ctx
        .obs
        .router_unhealthy
        .lock()
        .ok()
        .and_then(|v| report::router_detect(&v, &fault.shards, injected_ms, end_ms));

    // Invariants.
    let mut inv = Vec::new();
    let mut unaffected = Vec::new();
    let mut checked = 0;
    // A request sent just before the injection and answered after it was hit by the fault:
    // on a workspace of the faulted shards it is the fault's, not an unaffected error.
    let mut attributed = check::attribute_in_flight(&outcomes, injected_ms, &fault.affected);
    // The same at the start of every window: in a rolling restart a request sent while shard k
    // was being checked and answered after shard k+1's SIGTERM belongs to shard k+1.
    for (from, _, affected) in &fault.windows {
        attributed = check::attribute_in_flight(&attributed, *from, affected);
    }
    for (from, to, affected) in &fault.windows {
        checked += attributed
            .iter()
            .filter(|o| o.t_ms >= *from && o.t_ms <= *to && !affected.contains(&o.ws))
            .count();
        unaffected.extend(check::unaffected_errors(&attributed, affected, *from, *to));
    }
    let failed = unaffected.len();
    unaffected.truncate(20);
    inv.push(if checked == 0 {
        InvariantResult::vacuous(
            names::UNAFFECTED_NO_ERROR,
            "the fault targets every workspace: no unaffected request to check".into(),
        )
    } else {
        InvariantResult::checked(
            names::UNAFFECTED_NO_ERROR,
            format!(
                "{checked} requests on unaffected workspaces, {failed} failed{}",
                if failed > 20 {
                    " (first 20 kept as evidence)"
                } else {
                    ""
                }
            ),
            unaffected,
        )
    });
    let (rounds, pairs, holders) = ctx.obs.rounds_between(fault_ms, end_ms);
    let mut runner_v = ctx
        .obs
        .violations_between(names::ONE_RUNNER, fault_ms, end_ms);
    runner_v.extend(
        fault
            .violations
            .iter()
            .filter(|x| x.invariant == names::ONE_RUNNER)
            .cloned(),
    );
    let detail = format!(
        "{rounds} sampling rounds: {pairs} confirmed (workspace, worker) runner observations against {holders} KV lock holders{}",
        if ctx.caps.real_sessions {
            ""
        } else {
            " (placeholder sessions count as runners)"
        }
    );
    inv.push(if pairs == 0 && runner_v.is_empty() {
        InvariantResult::vacuous(names::ONE_RUNNER, detail)
    } else {
        InvariantResult::checked(names::ONE_RUNNER, detail, runner_v)
    });
    let browsers = ctx
        .obs
        .max_browsers
        .load(std::sync::atomic::Ordering::Relaxed);
    let chromium = ctx
        .obs
        .violations_between(names::ONE_CHROMIUM, fault_ms, end_ms);
    inv.push(if browsers > 0 || !chromium.is_empty() {
        InvariantResult::checked(
            names::ONE_CHROMIUM,
            format!("/proc sampled continuously, up to {browsers} browsers seen at once"),
            chromium,
        )
    } else {
        InvariantResult::vacuous(
            names::ONE_CHROMIUM,
            "/proc sampled continuously, but no Chromium runs under the data dir (placeholder sessions)".into(),
        )
    });
    let seen: Vec<_> = outcomes
        .iter()
        .filter(|o| o.t_ms >= fault_ms && o.t_ms <= end_ms)
        .cloned()
        .collect();
    let working = before.values().filter(|s| s.status == "WORKING").count();
    let restored = check::sessions_restored(end_ms, &before, &after, &seen);
    let detail = format!(
        "{working} sessions WORKING before; {}",
        if ctx.caps.real_sessions {
            "status, phone and no new QR checked"
        } else {
            "status checked (placeholder sessions never show a QR)"
        }
    );
    inv.push(if working == 0 {
        InvariantResult::vacuous(names::SESSIONS_RESTORED, detail)
    } else {
        InvariantResult::checked(names::SESSIONS_RESTORED, detail, restored)
    });
    if ctx.caps.sends {
        let (tally, v) = ctx
            .settle_messages(fault_ms, end_ms, ctx.timing.recover_timeout)
            .await;
        inv.push(InvariantResult::checked(
            names::NO_MESSAGE_LOST,
            format!("{} messages accepted with 202", tally.accepted),
            v,
        ));
        rep.messages = Some(tally);
    } else {
        inv.push(InvariantResult::not_applicable(
            names::NO_MESSAGE_LOST,
            "the fleet does not accept sends yet (POST …/messages is not routed)".into(),
        ));
    }
    if ctx.caps.webhooks && ctx.caps.sends {
        let (tally, v) = ctx
            .settle_webhooks(fault_ms, end_ms, ctx.timing.recover_timeout)
            .await;
        inv.push(InvariantResult::checked(
            names::NO_WEBHOOK_LOST,
            format!("{} message events expected", tally.expected),
            v,
        ));
        rep.webhooks = Some(tally);
    } else {
        inv.push(InvariantResult::not_applicable(
            names::NO_WEBHOOK_LOST,
            if ctx.caps.webhooks {
                "no sends, so no message events to account for".into()
            } else {
                "no webhook reached the receiver after session creation: webhooks not wired".into()
            },
        ));
    }
    let mut rec_v: Vec<Violation> = fault
        .violations
        .iter()
        .filter(|x| x.invariant != names::ONE_RUNNER)
        .cloned()
        .collect();
    if let Err(e) = &healed {
        rec_v.push(Violation {
            invariant: names::RECOVERED.into(),
            t_ms: end_ms,
            what: e.clone(),
            evidence: serde_json::json!({"not_recovered": rep.measures.not_recovered}),
        });
    }
    inv.push(InvariantResult::checked(
        names::RECOVERED,
        format!("deadline {:?}", ctx.timing.recover_timeout),
        rec_v,
    ));
    let free = ctx
        .obs
        .free_lock_runs
        .lock()
        .map(|v| {
            v.iter()
                .filter(|(t, _)| *t >= fault_ms && *t <= end_ms)
                .count()
        })
        .unwrap_or(0);
    if free > 0 {
        rep.notes.push(format!(
            "{free} sample(s) saw a workspace running with no lock holder (allowed for two sampling intervals; longer fails the run)"
        ));
    }
    rep.passed = rep.passed && inv.iter().all(InvariantResult::held);
    rep.invariants = inv;
    for i in rep.invariants.iter().filter(|i| !i.held()) {
        for v in &i.violations {
            eprintln!(
                "{} [{}] scenario {} t={}ms: {}\n  evidence: {}",
                if name == "control" {
                    "EXPECTED VIOLATION (negative control)"
                } else {
                    "VIOLATION"
                },
                i.name,
                name,
                v.t_ms,
                v.what,
                v.evidence
            );
        }
    }
    rep
}

/// A fault with one window open until the scenario ends (`u64::MAX`: the outcomes are read
/// at the end of the scenario, so nothing later is in them).
fn single(action: String, shards: Vec<u32>, affected: BTreeSet<String>, from: u64) -> Fault {
    Fault {
        action,
        shards,
        windows: vec![(from, u64::MAX, affected.clone())],
        affected,
        violations: Vec::new(),
        notes: Vec::new(),
    }
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

/// consul-outage: the agent hangs every request for `pause`, then resumes.
async fn consul_outage(ctx: &Ctx, pause: Duration, beyond_fencing: bool) -> Result<Fault, String> {
    let owners = current_owners(ctx).await?;
    let from = ctx.rec.now_ms();
    ctx.fleet
        .consul_fault("pause", serde_json::json!({"mode": "hang"}))
        .await
        .map_err(|e| e.to_string())?;
    let paused_at = Instant::now();
    // Prove the fault took effect: a KV read must not be answered while paused.
    let probe = ctx
        .fleet
        .http
        .get(format!(
            "{}/v1/kv/wafleet/shardmap",
            ctx.fleet.consul().map_err(|e| e.to_string())?
        ))
        .timeout(Duration::from_millis(500))
        .send()
        .await;
    let verified = probe.is_err();
    // The outage length is the scenario's parameter, not a synchronisation.
    tokio::time::sleep(pause.saturating_sub(paused_at.elapsed())).await;
    let resumed = ctx
        .fleet
        .consul_fault("resume", serde_json::json!({}))
        .await;
    if let Err(e) = resumed {
        // Make sure the agent does not stay paused whatever happened.
        let _ = ctx.fleet.consul_fault("clear", serde_json::json!({})).await;
        return Err(format!("resume: {e}"));
    }
    let (affected, shards) = if beyond_fencing {
        let mut all: Vec<u32> = owners.values().copied().collect();
        all.sort_unstable();
        all.dedup();
        (owners.keys().cloned().collect(), all)
    } else {
        (BTreeSet::new(), Vec::new())
    };
    let mut f = single(
        format!(
            "built-in Consul agent paused (hang) for {:.1}s ({} the fencing deadline {:.1}s), then resumed",
            pause.as_secs_f64(),
            if beyond_fencing {
                "longer than"
            } else {
                "shorter than"
            },
            (ctx.timing.session_ttl * 2 / 3).as_secs_f64()
        ),
        shards,
        affected,
        from,
    );
    if verified {
        f.notes
            .push("fault verified: a KV read during the pause got no answer".into());
    } else {
        f.violations.push(Violation {
            invariant: names::RECOVERED.into(),
            t_ms: ctx.rec.now_ms(),
            what: "the agent answered a KV read while paused: the fault did not take effect, the scenario proves nothing".into(),
            evidence: serde_json::json!({"probe": format!("{probe:?}")}),
        });
    }
    Ok(f)
}

/// consul-agent-restart: the local Consul agent restarts without leaving the cluster
/// (`leave_on_terminate = false`): every connection to it is refused for longer than the
/// workers' fencing deadline but shorter than the session TTL. The workers' sessions are
/// TTL-only and they renew through the agent's remote listener (another agent of the
/// datacenter, `WAFLEET_CONSUL_FALLBACK_ADDRS`), so none is fenced: every sample during the
/// outage shows every worker ready, unfenced, in the same term; no browser stops (the same
/// Chromium processes before and after); the same session holds every shard lock before and
/// after. During the outage no workspace may see an error (the routers keep their last table,
/// the workers serve). Once the agent is back, a worker whose TTL check lapsed during the
/// outage is unhealthy in the catalog until its next check pass, so requests after that point
/// may meet a short unavailability (the affected window).
async fn consul_agent_restart(ctx: &Ctx) -> Result<Fault, String> {
    let owners = current_owners(ctx).await?;
    let before = shard_holders(ctx).await?;
    let terms: BTreeMap<u32, (u64, Option<String>)> = ctx
        .fleet
        .worker_snaps()
        .await
        .into_iter()
        .map(|s| (s.shard, (s.term, s.session)))
        .collect();
    let browsers_before: BTreeSet<(u32, u64, String)> =
        crate::observe::scan_browsers(&ctx.fleet.data)
            .into_iter()
            .map(|b| (b.pid, b.start_time, b.profile))
            .collect();
    let ttl = ctx.timing.session_ttl;
    let fence = ttl * 2 / 3;
    let outage = fence + (ttl - fence) / 2;
    let from = ctx.rec.now_ms();
    ctx.fleet
        .consul_fault(
            "agent-restart",
            serde_json::json!({"ms": u64::try_from(outage.as_millis()).unwrap_or(u64::MAX), "leave": false}),
        )
        .await
        .map_err(|e| e.to_string())?;
    let down_at = Instant::now();
    let consul = ctx.fleet.consul().map_err(|e| e.to_string())?;
    let kv_answers = || async {
        ctx.fleet
            .http
            .get(format!("{consul}/v1/kv/wafleet/shardmap"))
            .timeout(Duration::from_millis(500))
            .send()
            .await
    };
    // Prove the fault took effect: a request during the restart gets no answer.
    let probe = kv_answers().await;
    let verified = probe.is_err();
    let mut violations = Vec::new();
    let mut flagged: BTreeSet<(u32, &'static str)> = BTreeSet::new();
    let mut samples = 0u64;
    // Sample the workers until the agent answers again (with a deadline).
    let deadline = Instant::now() + ctx.timing.recover_timeout;
    loop {
        let snaps = ctx.fleet.worker_snaps().await;
        samples += 1;
        for s in &snaps {
            let t_ms = ctx.rec.now_ms();
            let before = terms.get(&s.shard);
            let problems: [(bool, &'static str); 3] = [
                (s.fenced, "fenced"),
                (!s.ready, "not ready"),
                (
                    before.is_some_and(|(term, session)| *term != s.term || *session != s.session),
                    "in a new term",
                ),
            ];
            for (bad, what) in problems {
                if bad && flagged.insert((s.shard, what)) {
                    violations.push(Violation {
                        invariant: names::RECOVERED.into(),
                        t_ms,
                        what: format!(
                            "worker of shard {} was {what} during the agent restart",
                            s.shard
                        ),
                        evidence: serde_json::json!({"snap": s, "before": before}),
                    });
                }
            }
        }
        if down_at.elapsed() > outage && kv_answers().await.is_ok() {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the agent did not answer again within {:?} of its restart",
                ctx.timing.recover_timeout
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let back = ctx.rec.now_ms();
    // Every shard lock held, by ready workers (with a deadline).
    let deadline = Instant::now() + ctx.timing.recover_timeout;
    let after = loop {
        if let Ok(now) = shard_holders(ctx).await
            && now.len() >= before.len()
        {
            let snaps = ctx.fleet.worker_snaps().await;
            if snaps.len() >= ctx.fleet.workers().len()
                && snaps.iter().all(|s| s.ready && !s.fenced)
            {
                break now;
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the shard locks were not all held by ready workers {:?} after the agent restart",
                ctx.timing.recover_timeout
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let browsers_after: BTreeSet<(u32, u64, String)> =
        crate::observe::scan_browsers(&ctx.fleet.data)
            .into_iter()
            .map(|b| (b.pid, b.start_time, b.profile))
            .collect();
    let stopped: Vec<&String> = browsers_before
        .difference(&browsers_after)
        .map(|(_, _, profile)| profile)
        .collect();
    if !stopped.is_empty() {
        violations.push(Violation {
            invariant: names::RECOVERED.into(),
            t_ms: ctx.rec.now_ms(),
            what: format!(
                "{} browser(s) stopped across the agent restart",
                stopped.len()
            ),
            evidence: serde_json::json!({"profiles": stopped}),
        });
    }
    let mut all: Vec<u32> = owners.values().copied().collect();
    all.sort_unstable();
    all.dedup();
    let everyone: BTreeSet<String> = owners.keys().cloned().collect();
    let mut f = single(
        format!(
            "built-in Consul agent restarted without leaving: connections refused for {:.1}s (longer than the fencing deadline {:.1}s, shorter than the TTL {:.1}s); workers renew through the remote listener",
            outage.as_secs_f64(),
            fence.as_secs_f64(),
            ttl.as_secs_f64()
        ),
        all,
        everyone.clone(),
        from,
    );
    // No error during the outage; after it, the catalog may briefly hold a lapsed TTL check.
    f.windows = vec![(from, back, BTreeSet::new()), (back, u64::MAX, everyone)];
    f.violations = violations;
    if verified {
        f.notes
            .push("fault verified: a KV read during the restart got no answer".into());
    } else {
        f.violations.push(Violation {
            invariant: names::RECOVERED.into(),
            t_ms: ctx.rec.now_ms(),
            what: "the agent answered during its restart: the fault did not take effect".into(),
            evidence: serde_json::json!({"probe": format!("{probe:?}")}),
        });
    }
    for (shard, session) in &before {
        match after.get(shard) {
            Some(s) if s == session => {}
            other => f.violations.push(Violation {
                invariant: names::RECOVERED.into(),
                t_ms: ctx.rec.now_ms(),
                what: format!("shard {shard} did not keep its session across the agent restart"),
                evidence: serde_json::json!({"before": before.get(shard), "after": other}),
            }),
        }
    }
    if f.violations.is_empty() {
        f.notes.push(format!(
            "no worker fenced in {samples} samples during the outage, {} browser(s) kept, every shard kept its session: {}",
            browsers_after.len(),
            serde_json::json!(after)
        ));
    }
    Ok(f)
}

/// Shard → session holding its lock.
async fn shard_holders(ctx: &Ctx) -> Result<BTreeMap<String, String>, String> {
    ctx.fleet
        .lock_holders("wafleet/locks/shards/")
        .await
        .ok_or_else(|| "consul did not answer".to_string())
}

/// partition-worker in the selected mode; the action line starts with the mode.
async fn partition(ctx: &Ctx, shard: u32) -> Result<Fault, String> {
    match &ctx.partition {
        Partition::Netns(link) => {
            let mut f = partition_netns(ctx, shard, link).await?;
            f.action = format!("mode netns: {}", f.action);
            Ok(f)
        }
        Partition::Agent { reason } => {
            let mut f = partition_agent(ctx, shard).await?;
            f.action = format!("mode agent: {}", f.action);
            if let Some(r) = reason {
                f.notes.push(format!(
                    "partition mode agent (the agent's drop-session fault), not netns: {r}"
                ));
            }
            Ok(f)
        }
    }
}

/// The victim's Chromium browsers (by profile) in `/proc`.
fn browsers_of(ctx: &Ctx, workspaces: &BTreeSet<String>) -> usize {
    let profiles: BTreeSet<String> = workspaces
        .iter()
        .map(|ws| {
            ctx.fleet
                .data
                .join("workspaces")
                .join(ws)
                .join(&ctx.session)
                .join("profile")
                .display()
                .to_string()
        })
        .collect();
    crate::observe::scan_browsers(&ctx.fleet.data)
        .iter()
        .filter(|p| profiles.contains(p.profile.trim_end_matches('/')))
        .count()
}

/// Text appended to `path` since byte `offset`.
fn log_since(path: &std::path::Path, offset: u64) -> String {
    use std::io::{Read, Seek};
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(path)
        && f.seek(std::io::SeekFrom::Start(offset)).is_ok()
    {
        let _ = f.read_to_string(&mut s);
    }
    s
}

/// The workspaces `shard` owns now and the Consul session holding its shard lock: what a
/// partition cuts off and what must be replaced.
async fn shard_and_holder(ctx: &Ctx, shard: u32) -> Result<(BTreeSet<String>, String), String> {
    let owners = current_owners(ctx).await?;
    let affected = ctx.of_shards(&owners, &[shard]);
    let holders = ctx
        .fleet
        .lock_holders("wafleet/locks/shards/")
        .await
        .ok_or("consul did not answer")?;
    let session = holders
        .get(&shard.to_string())
        .cloned()
        .ok_or_else(|| format!("shard {shard}'s lock has no holder"))?;
    Ok((affected, session))
}

/// The partition's recovery failed: the shard never got a lock holder other than `session`.
fn no_new_session(t_ms: u64, shard: u32, session: &str) -> Violation {
    Violation {
        invariant: names::RECOVERED.into(),
        t_ms,
        what: format!(
            "shard {shard} never re-acquired its lock with a new session after the partition"
        ),
        evidence: serde_json::json!({"old_session": session}),
    }
}

/// partition-worker, netns mode: the victim runs inside the namespace; its link goes down.
/// Expected: (a) it cannot renew, fences itself (seen from the host: its Chromium browsers
/// leave `/proc`, its log says `FENCED`) and its old session is invalidated after the TTL, so
/// the shard lock is free; (b) only then the link comes back (the fault outlasts the fencing
/// deadline); (c) it re-acquires the shard lock with a new session and restores every
/// session (the frame checks WORKING without a QR).
async fn partition_netns(
    ctx: &Ctx,
    shard: u32,
    link: &crate::netns::Link,
) -> Result<Fault, String> {
    let (affected, session) = shard_and_holder(ctx, shard).await?;
    let worker = ctx
        .fleet
        .workers()
        .into_iter()
        .find(|w| w.shard == shard)
        .ok_or_else(|| format!("no worker for shard {shard}"))?;
    if !worker.addr.starts_with(&format!("{}:", link.ns_ip)) {
        return Err(format!(
            "shard {shard}'s worker listens on {}, not inside namespace {} ({}): the victim must start there",
            worker.addr, link.name, link.ns_ip
        ));
    }
    let log = ctx
        .fleet
        .data
        .join("dev")
        .join("logs")
        .join(format!("worker-{shard}.log"));
    let log_offset = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    let browsers_before = browsers_of(ctx, &affected);
    let from = ctx.rec.now_ms();
    let cut_at = Instant::now();
    link.cut().map_err(|e| e.to_string())?;
    // Whatever ends this scenario (an error, the run's cut-off dropping it), the link comes back.
    let guard = HealOnDrop(Some(link));
    tracing::info!(shard, namespace = %link.name, "link cut");
    let deadline = cut_at + ctx.timing.recover_timeout;
    let mut violations = Vec::new();
    let mut notes = Vec::new();

    // (a) The old session must go: the shard lock is released when the agent invalidates it.
    let mut browsers_gone_ms = None;
    let mut released_ms = None;
    let mut browsers_at_release = None;
    while Instant::now() < deadline {
        let n = browsers_of(ctx, &affected);
        if n == 0 && browsers_gone_ms.is_none() {
            browsers_gone_ms = Some(ctx.rec.now_ms());
        }
        let h = ctx.fleet.lock_holders("wafleet/locks/shards/").await;
        if let Some(h) = h
            && h.get(&shard.to_string()) != Some(&session)
        {
            released_ms = Some(ctx.rec.now_ms());
            browsers_at_release = Some(browsers_of(ctx, &affected));
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let fenced_logged = log_since(&log, log_offset).contains("FENCED");
    // (b) Heal, whatever happened: the link must not stay down.
    let healed = guard.heal();
    let heal_ms = ctx.rec.now_ms();
    let cut_secs = cut_at.elapsed().as_secs_f64();
    if let Err(e) = healed {
        return Err(format!("heal ({}): {e}", link.host_if));
    }
    tracing::info!(shard, secs = cut_secs, "link healed");
    // The namespace side answers again (any HTTP answer: it may still be not ready).
    let reach_deadline = Instant::now() + Duration::from_secs(30).min(ctx.timing.recover_timeout);
    let reachable = loop {
        let ok = ctx
            .fleet
            .http
            .get(format!("http://{}/healthz", worker.addr))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok();
        if ok || Instant::now() >= reach_deadline {
            break ok;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if !reachable {
        violations.push(Violation {
            invariant: names::RECOVERED.into(),
            t_ms: ctx.rec.now_ms(),
            what: format!(
                "the namespaced worker {} did not answer /healthz within 30 s of the link coming back",
                worker.addr
            ),
            evidence: serde_json::json!({"namespace": link.name, "host_if": link.host_if}),
        });
    }
    // (c) A new session holds the shard lock.
    let acquire_deadline = Instant::now() + ctx.timing.recover_timeout;
    let new_session = loop {
        let h = ctx.fleet.lock_holders("wafleet/locks/shards/").await;
        if let Some(s) = h.as_ref().and_then(|h| h.get(&shard.to_string()))
            && *s != session
        {
            break Some(s.clone());
        }
        if Instant::now() >= acquire_deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    match released_ms {
        Some(t) => notes.push(format!(
            "old session {session} released the shard lock {:.1}s after the cut; link down {cut_secs:.1}s",
            (t - from) as f64 / 1000.0
        )),
        None => violations.push(Violation {
            invariant: names::RECOVERED.into(),
            t_ms: heal_ms,
            what: format!(
                "shard {shard}'s old session {session} still held the shard lock {cut_secs:.0}s after the cut"
            ),
            evidence: serde_json::json!({"old_session": session}),
        }),
    }
    if new_session.is_none() {
        violations.push(no_new_session(ctx.rec.now_ms(), shard, &session));
    }
    // Its lock passes on at the release: a browser of it still running then could overlap
    // with the next holder's.
    if let Some(n) = browsers_at_release.filter(|n| *n > 0) {
        violations.push(Violation {
            invariant: names::ONE_RUNNER.into(),
            t_ms: released_ms.unwrap_or(heal_ms),
            what: format!(
                "{n} Chromium browser(s) of the partitioned shard {shard} still ran when its old session released the shard lock"
            ),
            evidence: serde_json::json!({"old_session": session, "browsers_before": browsers_before}),
        });
    }
    // Fenced before the lock could pass: its browsers were gone when the lock was released
    // (with real sessions), or its log says so.
    let fenced = fenced_logged || (browsers_before > 0 && browsers_at_release == Some(0));
    if fenced {
        notes.push(format!(
            "the partitioned worker fenced itself: log FENCED {fenced_logged}; its Chromium browsers {browsers_before} before the cut, {} when the lock was released (all gone {:.1}s after the cut)",
            browsers_at_release.map_or("-".to_owned(), |n| n.to_string()),
            browsers_gone_ms.map_or(f64::NAN, |t| (t - from) as f64 / 1000.0)
        ));
    } else {
        violations.push(Violation {
            invariant: names::ONE_RUNNER.into(),
            t_ms: heal_ms,
            what: format!(
                "worker of shard {shard} was never seen fenced while cut off (no FENCED in its log, browsers {browsers_before} → {browsers_at_release:?})"
            ),
            evidence: serde_json::json!({"old_session": session, "log": log.display().to_string()}),
        });
    }
    let mut f = single(
        format!(
            "link {} of namespace {} down for {cut_secs:.1}s (worker shard {shard} pid {} at {}, {} workspaces); old session {session}, new session {}",
            link.host_if,
            link.name,
            worker.pid,
            worker.addr,
            affected.len(),
            new_session.as_deref().unwrap_or("none")
        ),
        vec![shard],
        affected,
        from,
    );
    f.violations = violations;
    f.notes = notes;
    Ok(f)
}

/// Heals the link when dropped before [`HealOnDrop::heal`].
struct HealOnDrop<'a>(Option<&'a crate::netns::Link>);

impl HealOnDrop<'_> {
    fn heal(mut self) -> Result<(), crate::netns::NetnsError> {
        self.0.take().map_or(Ok(()), |l| l.heal())
    }
}

impl Drop for HealOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(l) = self.0.take()
            && let Err(e) = l.heal()
        {
            tracing::error!(error = %e, "cannot bring the partitioned link back up");
        }
    }
}

/// partition-worker, agent mode: the agent drops every request carrying the worker's session
/// id, so its renewals fail; it must fence, then come back with a new session.
async fn partition_agent(ctx: &Ctx, shard: u32) -> Result<Fault, String> {
    let (affected, session) = shard_and_holder(ctx, shard).await?;
    let from = ctx.rec.now_ms();
    ctx.fleet
        .consul_fault("drop", serde_json::json!({"session": session}))
        .await
        .map_err(|e| e.to_string())?;
    // The worker must leave its session behind: a new session holds the shard lock.
    let deadline = Instant::now() + ctx.timing.recover_timeout;
    let mut violations = Vec::new();
    let mut saw_fenced = false;
    let new_session = loop {
        let h = ctx.fleet.lock_holders("wafleet/locks/shards/").await;
        if let Some(s) = h.as_ref().and_then(|h| h.get(&shard.to_string()))
            && *s != session
        {
            break Some(s.clone());
        }
        if let Some(w) = ctx.fleet.workers().into_iter().find(|w| w.shard == shard)
            && let Some(snap) = ctx.fleet.worker_snap(&w).await
        {
            saw_fenced |= snap.fenced || !snap.ready;
        }
        if Instant::now() >= deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let cleared = ctx.fleet.consul_fault("clear", serde_json::json!({})).await;
    if new_session.is_none() {
        violations.push(no_new_session(ctx.rec.now_ms(), shard, &session));
    }
    cleared.map_err(|e| e.to_string())?;
    let mut f = single(
        format!(
            "agent drops shard {shard}'s session {session} ({} workspaces); new session {}",
            affected.len(),
            new_session.as_deref().unwrap_or("none")
        ),
        vec![shard],
        affected,
        from,
    );
    if saw_fenced {
        f.notes
            .push("the partitioned worker was seen fenced / not ready, as it must".into());
    } else {
        violations.push(Violation {
            invariant: names::ONE_RUNNER.into(),
            t_ms: ctx.rec.now_ms(),
            what: format!(
                "worker of shard {shard} was never seen fenced while its session {session} could not be renewed"
            ),
            evidence: serde_json::json!({"old_session": session, "new_session": new_session}),
        });
    }
    f.violations = violations;
    Ok(f)
}

/// scale-out: start worker N (as Nomad would), then `wafleet shards apply --count N+1`.
async fn scale_out(ctx: &Ctx) -> Result<Fault, String> {
    let old = ctx.fleet.shard_map().await.map_err(|e| e.to_string())?;
    let n = old.shards.len() as u32;
    let old_owners = ctx.owners(&old);
    let log = ctx.log_dir.join(format!("worker-{n}.log"));
    let mut notes = vec![format!(
        "wafleet dev supervises a fixed set of workers: the suite started worker {n} itself with dev's flags (log {})",
        log.display()
    )];
    let w = ctx
        .fleet
        .start_worker(n, &log)
        .await
        .map_err(|e| format!("start worker {n}: {e}"))?;
    let from = ctx.rec.now_ms();
    let out = ctx
        .fleet
        .shards(&["apply", "--count", &(n + 1).to_string()])
        .await
        .map_err(|e| e.to_string())?;
    let new = ctx.fleet.shard_map().await.map_err(|e| e.to_string())?;
    let new_owners = ctx.owners(&new);
    let moved: BTreeSet<String> = new_owners
        .iter()
        .filter(|(ws, k)| old_owners.get(*ws) != Some(k))
        .map(|(ws, _)| ws.clone())
        .collect();
    notes.push(format!(
        "map v{} → v{}: {} of {} workspaces moved (expected about 1/{})",
        old.version,
        new.version,
        moved.len(),
        ctx.workspaces.len(),
        n + 1
    ));
    let mut violations = Vec::new();
    // Only the planned workspaces may move, and only to the new shard.
    for ws in &moved {
        if new_owners.get(ws) != Some(&n) {
            violations.push(Violation {
                invariant: names::RECOVERED.into(),
                t_ms: from,
                what: format!("workspace {ws} moved between old shards on scale-out"),
                evidence: serde_json::json!({"old": old_owners.get(ws), "new": new_owners.get(ws)}),
            });
        }
    }
    ctx.wait_healthy(ctx.rec.now_ms(), ctx.timing.recover_timeout)
        .await?;
    // After the move, every moved workspace must be served by the new shard.
    let outcomes = ctx.rec.outcomes();
    for ws in &moved {
        if let Some(last) = outcomes.iter().rev().find(|o| &o.ws == ws && o.ok())
            && last.shard != Some(n)
        {
            violations.push(Violation {
                invariant: names::RECOVERED.into(),
                t_ms: last.t_ms,
                what: format!(
                    "moved workspace {ws} answered by shard {:?}, not {n}",
                    last.shard
                ),
                evidence: serde_json::json!({"request": last}),
            });
        }
    }
    let summary = out
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    if !summary.is_empty() {
        notes.push(format!("wafleet shards apply: {summary}"));
    }
    Ok(Fault {
        action: format!(
            "started worker shard {n} pid {} at {}; shards apply --count {}",
            w.pid,
            w.addr,
            n + 1
        ),
        shards: vec![n],
        windows: vec![(from, u64::MAX, moved.clone())],
        affected: moved,
        violations,
        notes,
    })
}

/// browser-crash: SIGKILL the Chromium of one session on `shard`.
async fn browser_crash(ctx: &Ctx, shard: u32) -> Result<Fault, String> {
    let owners = current_owners(ctx).await?;
    let ws = ctx
        .of_shards(&owners, &[shard])
        .into_iter()
        .next()
        .ok_or("no workspace on the victim shard")?;
    let profile = ctx
        .fleet
        .data
        .join("workspaces")
        .join(&ws)
        .join(&ctx.session)
        .join("profile")
        .display()
        .to_string();
    let procs = crate::observe::scan_browsers(&ctx.fleet.data);
    let p = procs
        .iter()
        .find(|p| p.profile.trim_end_matches('/') == profile)
        .ok_or_else(|| format!("no Chromium found for profile {profile}"))?;
    let from = ctx.rec.now_ms();
    fleet::signal(p.pid, "KILL")
        .await
        .map_err(|e| e.to_string())?;
    // A new browser on the same profile.
    let deadline = Instant::now() + ctx.timing.recover_timeout;
    loop {
        let now = crate::observe::scan_browsers(&ctx.fleet.data);
        if now
            .iter()
            .any(|q| q.profile.trim_end_matches('/') == profile && q.pid != p.pid)
        {
            break;
        }
        if Instant::now() >= deadline {
            return Err(format!("no new Chromium on {profile} within the deadline"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(single(
        format!("SIGKILL Chromium pid {} of {ws}/{}", p.pid, ctx.session),
        vec![shard],
        [ws].into(),
        from,
    ))
}

/// webhook-outage: the receiver answers 503 for a while, then comes back; no API error at all.
async fn webhook_outage(ctx: &Ctx) -> Result<Fault, String> {
    let from = ctx.rec.now_ms();
    ctx.receiver.set_up(false);
    tokio::time::sleep(ctx.timing.webhook_outage).await;
    ctx.receiver.set_up(true);
    Ok(single(
        format!(
            "webhook receiver answered 503 for {:.0}s, then 200",
            ctx.timing.webhook_outage.as_secs_f64()
        ),
        Vec::new(),
        BTreeSet::new(),
        from,
    ))
}
