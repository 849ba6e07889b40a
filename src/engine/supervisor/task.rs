//! The supervisor task of one session: it owns the state machine and the browser, applies commands,
//! engine events and deadlines one at a time, launches and closes the browser, samples its memory,
//! purges it when due and publishes the session's status.

use super::*;

pub(super) struct Supervisor {
    pub(super) engine: Engine,
    pub(super) spec: SessionSpec,
    pub(super) config: SupervisorConfig,
    pub(super) machine: Machine,
    pub(super) current: Option<BrowserSession>,
    pub(super) event_rx: Option<EventReceiver>,
    pub(super) permit: Option<OwnedSemaphorePermit>,
    pub(super) status_tx: watch::Sender<SessionStatus>,
    pub(super) browser_tx: watch::Sender<Option<BrowserSession>>,
    pub(super) events: broadcast::Sender<SessionEvent>,
    pub(super) published: Option<Status>,
    pub(super) memory_bytes: Option<u64>,
    /// When the memory budget last restarted this session (restarts are spaced, so a budget
    /// below what a fresh session needs cannot turn into a restart loop).
    pub(super) budget_restarted: Option<Instant>,
    /// When the browser was last purged (or logged in, the start of the first interval).
    pub(super) purged: Option<Instant>,
    /// Whether the current browser loaded WhatsApp Web live (not pinned).
    pub(super) live_launch: bool,
    pub(super) cancel: CancellationToken,
}

pub(super) async fn next_event(rx: &mut Option<EventReceiver>) -> Option<EngineEvent> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

pub(super) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

// === impl Supervisor ===

impl Supervisor {
    pub(super) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let cancel = self.cancel.clone();
        self.publish();
        let mut memory = self.config.memory_interval.map(|every| {
            let mut t = tokio::time::interval(every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        loop {
            let deadline = self.machine.next_deadline();
            tokio::select! {
                _ = cancel.cancelled() => break,
                command = commands.recv() => match command {
                    None => break,
                    Some(Command::Input(input, reply)) => self.apply_command(input, reply).await,
                },
                event = next_event(&mut self.event_rx) => match event {
                    Some(event) => {
                        if let EngineEvent::Unsupported { missing, version } = &event {
                            tracing::error!(workspace = %self.spec.workspace, session = %self.spec.session,
                                missing = %missing.join(","), version = version.as_deref().unwrap_or("?"),
                                "WhatsApp Web lacks what the adapter needs");
                            metrics::surface_missing(missing);
                        }
                        let _ = self.events.send(SessionEvent::Engine(event.clone()));
                        let generation = self.machine.generation();
                        self.apply(Input::Event { generation, event }).await;
                    }
                    // Every sender is gone: the browser's tasks have ended (a Crashed event,
                    // if any, came before).
                    None => self.event_rx = None,
                },
                _ = sleep_until(deadline) => self.apply(Input::Tick).await,
                _ = async {
                    match memory.as_mut() {
                        Some(t) => { t.tick().await; }
                        None => std::future::pending().await,
                    }
                } => self.sample_memory().await,
            }
        }
        self.close_browser().await;
        self.retire();
    }

    /// A command: answered with the status right away when it launches a browser (start and
    /// restart answer STARTING instead of waiting seconds for Chromium, or for a launch slot),
    /// and after its actions otherwise (stop and logout answer once the browser is closed and
    /// the profile deleted).
    pub(super) async fn apply_command(
        &mut self,
        input: Input,
        reply: oneshot::Sender<SessionStatus>,
    ) {
        self.apply_inner(input, Some(reply)).await
    }

    /// Feeds the machine and carries out its actions (which may feed it again).
    pub(super) async fn apply(&mut self, input: Input) {
        self.apply_inner(input, None).await
    }

    pub(super) async fn apply_inner(
        &mut self,
        input: Input,
        mut reply: Option<oneshot::Sender<SessionStatus>>,
    ) {
        let restarts_before = self.machine.restarts();
        let status_before = self.machine.status();
        let is_qr = matches!(
            &input,
            Input::Event {
                event: EngineEvent::Qr { .. },
                ..
            }
        );
        let mut queue: VecDeque<Action> = self.machine.handle(input, Now::system()).into();
        if queue.iter().any(|a| matches!(a, Action::Launch { .. }))
            && let Some(reply) = reply.take()
        {
            self.publish();
            let _ = reply.send(self.status_tx.borrow().clone());
        }
        if is_qr
            && self.machine.qrs_this_launch() == 1
            && let Some(at) = self.machine.launched_at()
        {
            metrics::qr_latency(at.elapsed());
        }
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Launch { generation } => {
                    if let Err(error) = self.launch().await {
                        tracing::warn!(workspace = %self.spec.workspace, session = %self.spec.session, %error, "launch failed");
                        queue.extend(self.machine.handle(
                            Input::LaunchFailed {
                                generation,
                                error: error.to_string(),
                            },
                            Now::system(),
                        ));
                    }
                }
                Action::LogoutBrowser => {
                    if let Some(browser) = &self.current
                        && let Err(e) = browser.logout().await
                    {
                        tracing::warn!(workspace = %self.spec.workspace, session = %self.spec.session, error = %e, "logout in WhatsApp Web failed");
                    }
                }
                Action::Close => self.close_browser().await,
                Action::DeleteProfile => self.delete_profile(),
            }
        }
        for _ in restarts_before..self.machine.restarts() {
            metrics::restarted();
        }
        if status_before != Status::Working && self.machine.status() == Status::Working {
            self.on_working();
        }
        // The launch permit is held only while a browser is launching.
        if !(self.machine.status() == Status::Starting && self.machine.browser_up()) {
            self.permit = None;
        }
        self.publish();
        if let Some(reply) = reply {
            let _ = reply.send(self.status_tx.borrow().clone());
        }
    }

    /// A session reached WORKING: the adapter found everything (the surface gauge resets), and
    /// a live version is proven good (cached by the version control, off this task).
    pub(super) fn on_working(&mut self) {
        metrics::surface_complete();
        let (Some(versions), Some(version), Some(browser)) = (
            self.config.versions.clone(),
            self.machine.snapshot().wa_version,
            self.current.clone(),
        ) else {
            return;
        };
        if !self.live_launch {
            return;
        }
        let (ws, s) = (self.spec.workspace.clone(), self.spec.session.clone());
        self.engine.tracker().spawn(async move {
            let html = if versions.wants_copy(&version) {
                match browser.document_html().await {
                    Ok(html) => {
                        if html.is_none() {
                            tracing::warn!(workspace = %ws, session = %s, %version, "the live index.html is no longer available; another session will cache it");
                        }
                        html
                    }
                    Err(e) => {
                        tracing::warn!(workspace = %ws, session = %s, %version, error = %e, "reading the live index.html failed");
                        None
                    }
                }
            } else {
                None
            };
            let _ = tokio::task::spawn_blocking(move || versions.proven(&version, html)).await;
        });
    }

    pub(super) async fn launch(&mut self) -> Result<(), EngineError> {
        self.close_browser().await;
        if self.permit.is_none()
            && let Some(limiter) = &self.config.limiter
        {
            // Waiting for a slot must not hold up a shutdown (a drain cancels every session).
            tokio::select! {
                // A closed semaphore cannot happen (it is never closed); treat it as unbounded.
                permit = limiter.0.clone().acquire_owned() => self.permit = permit.ok(),
                _ = self.cancel.cancelled() => return Err(EngineError::Closed),
            }
        }
        if let Some(lock) = &self.spec.lock {
            match remove_stale_singletons(
                &self.spec.profile_dir,
                &self.spec.workspace,
                lock.as_ref(),
            ) {
                Ok(removed) if !removed.is_empty() => {
                    tracing::info!(workspace = %self.spec.workspace, session = %self.spec.session, count = removed.len(), "removed stale Chromium locks");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(workspace = %self.spec.workspace, session = %self.spec.session, error = %e, "stale lock check failed")
                }
            }
        }
        // A launch is a handful of bounded steps, but chromiumoxide has had hangs in
        // `new_page` (its issue #64); the start deadline bounds the whole launch too. A launch
        // abandoned here drops its `Browser`, whose child is killed and reaped by tokio.
        let plan = match &self.config.versions {
            Some(v) => v.plan().await,
            None => super::super::versions::LaunchPlan::default(),
        };
        if let Some(p) = &plan.pinned {
            tracing::info!(workspace = %self.spec.workspace, session = %self.spec.session, version = %p.version, "launching on a pinned WhatsApp Web version (cached index.html)");
        }
        if let Some(note) = &plan.note {
            tracing::warn!(workspace = %self.spec.workspace, session = %self.spec.session, %note, "WhatsApp Web version");
        }
        let opts = super::super::driver::LaunchOptions {
            pinned_index_html: plan.pinned.as_ref().map(|p| p.index_html.clone()),
            capture_document: self.config.versions.is_some() && plan.pinned.is_none(),
        };
        let limit = self.config.timing.start_timeout;
        let launch = tokio::time::timeout(
            limit,
            self.engine.launch_with(&self.spec.profile_dir, &opts),
        );
        let browser = tokio::select! {
            launched = launch => launched.map_err(|_| EngineError::Timeout("launch"))??,
            _ = self.cancel.cancelled() => return Err(EngineError::Closed),
        };
        self.event_rx = browser.take_events();
        self.live_launch = plan.pinned.is_none();
        let generation = self.machine.generation();
        self.machine
            .set_launch_plan(generation, plan.pinned.map(|p| p.version), plan.note);
        self.current = Some(browser.clone());
        self.browser_tx.send_replace(Some(browser));
        Ok(())
    }

    pub(super) async fn close_browser(&mut self) {
        if let Some(browser) = self.current.take() {
            self.browser_tx.send_replace(None);
            browser.close().await;
        }
        self.event_rx = None;
        self.memory_bytes = None;
    }

    pub(super) fn delete_profile(&mut self) {
        if let Some(lock) = &self.spec.lock
            && !lock.is_held()
        {
            tracing::warn!(workspace = %self.spec.workspace, session = %self.spec.session, "workspace lock lost; profile not deleted");
            return;
        }
        if let Err(e) = delete_profile(&self.spec.profile_dir) {
            tracing::warn!(workspace = %self.spec.workspace, session = %self.spec.session, error = %e, "profile deletion failed");
        }
    }

    pub(super) async fn sample_memory(&mut self) {
        let Some(pid) = self.current.as_ref().and_then(|b| b.pid()) else {
            return;
        };
        self.purge_if_due().await;
        let pss =
            tokio::task::spawn_blocking(move || super::super::memory::process_tree_pss(pid)).await;
        if let Ok(Ok(Some(bytes))) = pss {
            self.memory_bytes = Some(bytes);
            metrics::session_memory(
                self.spec.workspace.as_str(),
                self.spec.session.as_str(),
                bytes,
            );
            self.publish();
            let budget = self.engine.config().memory_budget_mb;
            if self.machine.status() == Status::Working
                && super::super::memory::over_budget(bytes, budget)
                && self
                    .budget_restarted
                    .is_none_or(|at| at.elapsed() >= BUDGET_RESTART_SPACING)
            {
                tracing::warn!(workspace = %self.spec.workspace, session = %self.spec.session,
                    pss_mib = bytes >> 20, budget_mib = budget.unwrap_or_default(),
                    "session over its memory budget: restarting it (profile kept, no QR)");
                self.budget_restarted = Some(Instant::now());
                self.apply(Input::Restart).await;
            }
        }
    }

    /// The periodic purge: a `WORKING` browser frees what it can spare every
    /// `EngineConfig::purge_interval` (measured: 18–21 % less PSS on a heap-heavy page).
    pub(super) async fn purge_if_due(&mut self) {
        let Some(every) = self.engine.config().purge_interval else {
            return;
        };
        if self.machine.status() != Status::Working {
            // The interval starts when the session logs in, not at launch.
            self.purged = None;
            return;
        }
        let last = *self.purged.get_or_insert_with(Instant::now);
        if last.elapsed() < every {
            return;
        }
        self.purged = Some(Instant::now());
        if let Some(browser) = &self.current
            && let Err(e) = browser.purge_memory().await
        {
            tracing::warn!(workspace = %self.spec.workspace, session = %self.spec.session, error = %e, "memory purge failed");
        }
    }

    pub(super) fn publish(&mut self) {
        let mut status = self.machine.snapshot();
        status.pid = self.current.as_ref().and_then(|b| b.pid());
        status.memory_bytes = self.memory_bytes;
        if self.published != Some(status.status) {
            metrics::status_moved(self.published, Some(status.status));
            self.published = Some(status.status);
        }
        // Subscribers hear of status changes, not of every memory sample.
        let notable = {
            let old = self.status_tx.borrow();
            let mut a = old.clone();
            let mut b = status.clone();
            a.memory_bytes = None;
            b.memory_bytes = None;
            a != b
        };
        self.status_tx.send_replace(status.clone());
        if notable {
            let _ = self.events.send(SessionEvent::Status(status));
        }
    }

    pub(super) fn retire(&mut self) {
        metrics::status_moved(self.published.take(), None);
        metrics::session_memory(self.spec.workspace.as_str(), self.spec.session.as_str(), 0);
    }
}
