//! PURE: the per-workspace ownership state machine of one worker term (one Consul session).
//!
//! Inputs are [`Event`]s — the set of workspaces the shard map gives this shard, results of
//! lock and host operations, fencing and drain — and outputs are [`Action`]s for the driver to
//! execute (acquire or release a workspace lock, start or stop a workspace). No I/O, no clock,
//! no tokio: the driver (`driver.rs`) feeds results back as events.
//!
//! The invariant it keeps is the one DESIGN §3 states: a workspace is started only after its
//! lock was acquired, and its lock is released only after it stopped. Every workspace has at
//! most one operation in flight, so a result always matches the phase it arrives in; a change of
//! mind (the map moved the workspace while its lock was being acquired) is applied when that
//! operation's result comes back. After fencing nothing is released (the locks die with the
//! session) and nothing new starts; after a drain everything is stopped and released.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::host::StopMode;
use crate::ids::WorkspaceId;

/// Where one workspace is in its lifecycle on this worker. A workspace absent from the machine
/// is neither held nor running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Waiting for its lock (another holder, lock delay, or Consul unreachable).
    Acquiring,
    /// Lock held; the host is starting it.
    Starting,
    /// Lock held; running and serving requests.
    Running,
    /// Lock held; the host is stopping it.
    Stopping,
    /// Stopped; the lock is being released.
    Releasing,
}

impl Phase {
    /// Whether the host may have a browser of this workspace alive.
    pub fn may_run(self) -> bool {
        matches!(self, Phase::Starting | Phase::Running | Phase::Stopping)
    }
}

/// What the whole term is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Normal operation: follow the desired set.
    Serving,
    /// The session could not be renewed in time: stop everything at once, release nothing.
    Fenced,
    /// SIGTERM/SIGINT: stop everything cleanly and release every lock.
    Draining,
}

/// An input to the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The workspaces this shard should run now (known workspaces the map assigns to it).
    Desired(BTreeSet<WorkspaceId>),
    /// The lock was acquired.
    Acquired(WorkspaceId),
    /// The lock could not be acquired this time (held elsewhere, lock delay, error).
    Busy(WorkspaceId),
    /// The host finished starting (successfully or not: it keeps failed sessions itself).
    Started(WorkspaceId),
    /// The host stopped the workspace: no browser of it is left.
    Stopped(WorkspaceId),
    /// The lock release finished (or was given up; the session's end releases it anyway).
    Released(WorkspaceId),
    /// The fencing deadline passed.
    Fenced,
    /// Shutdown requested.
    Drain,
}

/// An output: something the driver must do and report back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Try to acquire the workspace lock; report `Acquired` or `Busy`.
    Acquire(WorkspaceId),
    /// Start the workspace on the host; report `Started`.
    Start(WorkspaceId),
    /// Stop the workspace on the host; report `Stopped`.
    Stop(WorkspaceId, StopMode),
    /// Release the workspace lock; report `Released`.
    Release(WorkspaceId),
}

/// The machine. One per worker term.
#[derive(Debug, Clone)]
pub struct Ownership {
    mode: Mode,
    desired: BTreeSet<WorkspaceId>,
    phases: BTreeMap<WorkspaceId, Phase>,
}

impl Default for Ownership {
    fn default() -> Self {
        Self::new()
    }
}

// === impl Ownership ===

impl Ownership {
    /// A machine that holds nothing and wants nothing.
    pub fn new() -> Self {
        Self {
            mode: Mode::Serving,
            desired: BTreeSet::new(),
            phases: BTreeMap::new(),
        }
    }

    /// The term's mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The phase of a workspace, `None` when it is neither held nor wanted here.
    pub fn phase(&self, ws: &WorkspaceId) -> Option<Phase> {
        self.phases.get(ws).copied()
    }

    /// Every workspace the machine is handling, with its phase.
    pub fn phases(&self) -> &BTreeMap<WorkspaceId, Phase> {
        &self.phases
    }

    /// Whether the desired set contains `ws`.
    pub fn wants(&self, ws: &WorkspaceId) -> bool {
        self.desired.contains(ws)
    }

    /// True once a fenced or draining term has nothing left in flight: the driver may end it.
    pub fn finished(&self) -> bool {
        self.mode != Mode::Serving && self.phases.is_empty()
    }

    /// Applies one event and returns what to do next.
    pub fn handle(&mut self, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Desired(set) => {
                self.desired = set;
                if self.mode != Mode::Serving {
                    return out;
                }
                // Newly wanted workspaces: acquire. No longer wanted and running: stop. Every
                // other phase has an operation in flight whose result will decide.
                let wanted: Vec<_> = self
                    .desired
                    .iter()
                    .filter(|ws| !self.phases.contains_key(*ws))
                    .cloned()
                    .collect();
                for ws in wanted {
                    self.phases.insert(ws.clone(), Phase::Acquiring);
                    out.push(Action::Acquire(ws));
                }
                for (ws, phase) in self.phases.iter_mut() {
                    if *phase == Phase::Running && !self.desired.contains(ws) {
                        *phase = Phase::Stopping;
                        out.push(Action::Stop(ws.clone(), StopMode::Graceful));
                    }
                }
            }
            Event::Acquired(ws) => {
                if self.phases.get(&ws) != Some(&Phase::Acquiring) {
                    return out;
                }
                match self.mode {
                    Mode::Serving if self.desired.contains(&ws) => {
                        self.phases.insert(ws.clone(), Phase::Starting);
                        out.push(Action::Start(ws));
                    }
                    // The lock dies with the fenced session; nothing ran, nothing to do.
                    Mode::Fenced => {
                        self.phases.remove(&ws);
                    }
                    _ => {
                        self.phases.insert(ws.clone(), Phase::Releasing);
                        out.push(Action::Release(ws));
                    }
                }
            }
            Event::Busy(ws) => {
                if self.phases.get(&ws) != Some(&Phase::Acquiring) {
                    return out;
                }
                if self.mode == Mode::Serving && self.desired.contains(&ws) {
                    // Still wanted: try again (the driver's acquire waits and backs off itself).
                    out.push(Action::Acquire(ws));
                } else {
                    self.phases.remove(&ws);
                }
            }
            Event::Started(ws) => {
                if self.phases.get(&ws) != Some(&Phase::Starting) {
                    return out;
                }
                match self.mode {
                    Mode::Serving if self.desired.contains(&ws) => {
                        self.phases.insert(ws, Phase::Running);
                    }
                    Mode::Fenced => {
                        self.phases.insert(ws.clone(), Phase::Stopping);
                        out.push(Action::Stop(ws, StopMode::Immediate));
                    }
                    _ => {
                        self.phases.insert(ws.clone(), Phase::Stopping);
                        out.push(Action::Stop(ws, StopMode::Graceful));
                    }
                }
            }
            Event::Stopped(ws) => {
                if self.phases.get(&ws) != Some(&Phase::Stopping) {
                    return out;
                }
                if self.mode == Mode::Fenced {
                    self.phases.remove(&ws);
                } else {
                    self.phases.insert(ws.clone(), Phase::Releasing);
                    out.push(Action::Release(ws));
                }
            }
            Event::Released(ws) => {
                if self.phases.get(&ws) != Some(&Phase::Releasing) {
                    return out;
                }
                if self.mode == Mode::Serving && self.desired.contains(&ws) {
                    // Moved away and back while it was stopping: take it again.
                    self.phases.insert(ws.clone(), Phase::Acquiring);
                    out.push(Action::Acquire(ws));
                } else {
                    self.phases.remove(&ws);
                }
            }
            Event::Fenced => {
                if self.mode == Mode::Fenced {
                    return out;
                }
                self.mode = Mode::Fenced;
                let mut drop = Vec::new();
                for (ws, phase) in self.phases.iter_mut() {
                    match phase {
                        Phase::Running => {
                            *phase = Phase::Stopping;
                            out.push(Action::Stop(ws.clone(), StopMode::Immediate));
                        }
                        // A release in flight may or may not reach Consul; either way the lock
                        // is gone with the session and nothing runs.
                        Phase::Releasing => drop.push(ws.clone()),
                        // Acquiring, Starting and Stopping finish through their results.
                        _ => {}
                    }
                }
                for ws in drop {
                    self.phases.remove(&ws);
                }
            }
            Event::Drain => {
                if self.mode != Mode::Serving {
                    return out;
                }
                self.mode = Mode::Draining;
                for (ws, phase) in self.phases.iter_mut() {
                    if *phase == Phase::Running {
                        *phase = Phase::Stopping;
                        out.push(Action::Stop(ws.clone(), StopMode::Graceful));
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{HashMap, VecDeque};

    fn ws(s: &str) -> WorkspaceId {
        WorkspaceId::new(s).unwrap()
    }

    fn set(items: &[&str]) -> BTreeSet<WorkspaceId> {
        items.iter().map(|s| ws(s)).collect()
    }

    #[test]
    fn acquires_before_starting_and_stops_before_releasing() {
        let mut m = Ownership::new();
        assert_eq!(
            m.handle(Event::Desired(set(&["a"]))),
            vec![Action::Acquire(ws("a"))]
        );
        assert_eq!(
            m.handle(Event::Acquired(ws("a"))),
            vec![Action::Start(ws("a"))]
        );
        assert_eq!(m.handle(Event::Started(ws("a"))), vec![]);
        assert_eq!(m.phase(&ws("a")), Some(Phase::Running));
        assert_eq!(
            m.handle(Event::Desired(set(&[]))),
            vec![Action::Stop(ws("a"), StopMode::Graceful)]
        );
        assert_eq!(
            m.handle(Event::Stopped(ws("a"))),
            vec![Action::Release(ws("a"))]
        );
        assert_eq!(m.handle(Event::Released(ws("a"))), vec![]);
        assert_eq!(m.phase(&ws("a")), None);
    }

    #[test]
    fn busy_lock_is_retried_while_wanted_and_dropped_when_not() {
        let mut m = Ownership::new();
        m.handle(Event::Desired(set(&["a", "b"])));
        assert_eq!(
            m.handle(Event::Busy(ws("a"))),
            vec![Action::Acquire(ws("a"))]
        );
        m.handle(Event::Desired(set(&["b"])));
        assert_eq!(m.handle(Event::Busy(ws("a"))), vec![]);
        assert_eq!(m.phase(&ws("a")), None);
    }

    #[test]
    fn a_lock_acquired_after_the_map_moved_away_is_released_without_starting() {
        let mut m = Ownership::new();
        m.handle(Event::Desired(set(&["a"])));
        m.handle(Event::Desired(set(&[])));
        assert_eq!(
            m.handle(Event::Acquired(ws("a"))),
            vec![Action::Release(ws("a"))]
        );
    }

    #[test]
    fn moved_away_and_back_while_stopping_is_reacquired_after_release() {
        let mut m = Ownership::new();
        m.handle(Event::Desired(set(&["a"])));
        m.handle(Event::Acquired(ws("a")));
        m.handle(Event::Started(ws("a")));
        m.handle(Event::Desired(set(&[])));
        assert_eq!(m.handle(Event::Desired(set(&["a"]))), vec![]);
        m.handle(Event::Stopped(ws("a")));
        assert_eq!(
            m.handle(Event::Released(ws("a"))),
            vec![Action::Acquire(ws("a"))]
        );
    }

    #[test]
    fn fencing_stops_everything_immediately_and_releases_nothing() {
        let mut m = Ownership::new();
        m.handle(Event::Desired(set(&["a", "b", "c"])));
        m.handle(Event::Acquired(ws("a")));
        m.handle(Event::Started(ws("a")));
        m.handle(Event::Acquired(ws("b"))); // b is Starting
        let acts = m.handle(Event::Fenced);
        assert_eq!(acts, vec![Action::Stop(ws("a"), StopMode::Immediate)]);
        assert_eq!(
            m.handle(Event::Started(ws("b"))),
            vec![Action::Stop(ws("b"), StopMode::Immediate)]
        );
        assert_eq!(m.handle(Event::Acquired(ws("c"))), vec![]);
        assert_eq!(m.handle(Event::Stopped(ws("a"))), vec![]);
        assert!(!m.finished());
        assert_eq!(m.handle(Event::Stopped(ws("b"))), vec![]);
        assert!(m.finished());
        // A fenced term never starts anything again.
        assert_eq!(m.handle(Event::Desired(set(&["d"]))), vec![]);
    }

    #[test]
    fn drain_stops_gracefully_and_releases_every_lock() {
        let mut m = Ownership::new();
        m.handle(Event::Desired(set(&["a", "b"])));
        m.handle(Event::Acquired(ws("a")));
        m.handle(Event::Started(ws("a")));
        assert_eq!(
            m.handle(Event::Drain),
            vec![Action::Stop(ws("a"), StopMode::Graceful)]
        );
        assert_eq!(
            m.handle(Event::Acquired(ws("b"))),
            vec![Action::Release(ws("b"))]
        );
        m.handle(Event::Stopped(ws("a")));
        m.handle(Event::Released(ws("a")));
        assert!(!m.finished());
        m.handle(Event::Released(ws("b")));
        assert!(m.finished());
    }

    #[test]
    fn stale_results_are_ignored() {
        let mut m = Ownership::new();
        for e in [
            Event::Acquired(ws("x")),
            Event::Started(ws("x")),
            Event::Stopped(ws("x")),
            Event::Released(ws("x")),
            Event::Busy(ws("x")),
        ] {
            assert_eq!(m.handle(e), vec![]);
        }
        assert!(m.phases().is_empty());
    }

    // === Two workers sharing one lock table under random interleavings ===

    /// One simulated worker: its machine and the results its operations will report.
    struct Sim {
        m: Ownership,
        pending: VecDeque<Action>,
        running: BTreeSet<WorkspaceId>,
    }

    #[derive(Debug, Clone)]
    enum Step {
        /// Shard map flip: which worker (0/1) gets each of the three workspaces.
        Map([u8; 3]),
        /// Complete the oldest pending action of a worker.
        Complete(u8),
        /// Fence a worker (its locks vanish from the table only later, on `Expire`).
        Fence(u8),
        /// The fenced worker's session expired: its locks are freed.
        Expire(u8),
        Drain(u8),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            prop::array::uniform3(0u8..2).prop_map(Step::Map),
            (0u8..2).prop_map(Step::Complete),
            (0u8..2).prop_map(Step::Complete),
            (0u8..2).prop_map(Step::Complete),
            (0u8..2).prop_map(Step::Fence),
            (0u8..2).prop_map(Step::Expire),
            (0u8..2).prop_map(Step::Drain),
        ]
    }

    proptest! {
        /// With Consul's lock semantics (one holder per key, fenced sessions expire only after
        /// the worker stopped — the fencing deadline is shorter than the TTL), no workspace ever
        /// runs on two workers, and a draining worker ends holding nothing.
        #[test]
        #[allow(clippy::needless_range_loop)] // `i` is also the lock holder's identity
        fn never_two_runners_under_any_interleaving(steps in prop::collection::vec(step(), 1..200)) {
            let names = ["a", "b", "c"].map(ws);
            let mut sims = [0, 1].map(|_| Sim { m: Ownership::new(), pending: VecDeque::new(), running: BTreeSet::new() });
            let mut locks: HashMap<WorkspaceId, usize> = HashMap::new();
            for s in steps {
                match s {
                    Step::Map(assign) => {
                        for (i, sim) in sims.iter_mut().enumerate() {
                            let want: BTreeSet<_> = names.iter().zip(assign).filter(|(_, o)| *o as usize == i).map(|(w, _)| w.clone()).collect();
                            let acts = sim.m.handle(Event::Desired(want));
                            sim.pending.extend(acts);
                        }
                    }
                    Step::Complete(i) => {
                        let i = i as usize;
                        let Some(act) = sims[i].pending.pop_front() else { continue };
                        let ev = match act {
                            Action::Acquire(w) => {
                                let fenced = sims[i].m.mode() == Mode::Fenced;
                                match locks.get(&w) {
                                    Some(h) if *h != i => Event::Busy(w),
                                    _ if fenced => Event::Busy(w),
                                    _ => { locks.insert(w.clone(), i); Event::Acquired(w) }
                                }
                            }
                            Action::Start(w) => {
                                prop_assert_eq!(locks.get(&w), Some(&i), "started without the lock");
                                sims[i].running.insert(w.clone());
                                Event::Started(w)
                            }
                            Action::Stop(w, _) => { sims[i].running.remove(&w); Event::Stopped(w) }
                            Action::Release(w) => {
                                prop_assert!(!sims[i].running.contains(&w), "released while running");
                                if locks.get(&w) == Some(&i) { locks.remove(&w); }
                                Event::Released(w)
                            }
                        };
                        let acts = sims[i].m.handle(ev);
                        sims[i].pending.extend(acts);
                    }
                    Step::Fence(i) => {
                        let acts = sims[i as usize].m.handle(Event::Fenced);
                        sims[i as usize].pending.extend(acts);
                    }
                    Step::Expire(i) => {
                        let i = i as usize;
                        // Consul frees the locks only after TTL; by then the fenced worker has
                        // executed its immediate stops (fencing deadline < TTL). Model that by
                        // running its pending actions first.
                        if sims[i].m.mode() != Mode::Fenced { continue }
                        while let Some(act) = sims[i].pending.pop_front() {
                            let ev = match act {
                                Action::Acquire(w) => Event::Busy(w),
                                Action::Start(w) => { sims[i].running.insert(w.clone()); Event::Started(w) }
                                Action::Stop(w, _) => { sims[i].running.remove(&w); Event::Stopped(w) }
                                Action::Release(w) => Event::Released(w),
                            };
                            let acts = sims[i].m.handle(ev);
                            sims[i].pending.extend(acts);
                        }
                        prop_assert!(sims[i].running.is_empty());
                        locks.retain(|_, h| *h != i);
                    }
                    Step::Drain(i) => {
                        let acts = sims[i as usize].m.handle(Event::Drain);
                        sims[i as usize].pending.extend(acts);
                    }
                }
                for w in &names {
                    prop_assert!(!(sims[0].running.contains(w) && sims[1].running.contains(w)), "{} runs twice", w);
                }
            }
            // Finish every draining worker: it must end with no lock and nothing running.
            for i in 0..2 {
                if sims[i].m.mode() != Mode::Draining { continue }
                while let Some(act) = sims[i].pending.pop_front() {
                    let ev = match act {
                        Action::Acquire(w) => match locks.get(&w) {
                            Some(h) if *h != i => Event::Busy(w),
                            _ => { locks.insert(w.clone(), i); Event::Acquired(w) }
                        },
                        Action::Start(w) => { sims[i].running.insert(w.clone()); Event::Started(w) }
                        Action::Stop(w, _) => { sims[i].running.remove(&w); Event::Stopped(w) }
                        Action::Release(w) => { if locks.get(&w) == Some(&i) { locks.remove(&w); } Event::Released(w) }
                    };
                    let acts = sims[i].m.handle(ev);
                    sims[i].pending.extend(acts);
                }
                prop_assert!(sims[i].m.finished());
                prop_assert!(sims[i].running.is_empty());
                prop_assert!(!locks.values().any(|h| *h == i));
            }
        }
    }
}
