//! The dispatcher: after a crash it fails the sends that were interrupted, then runs one task per
//! session with queued messages, paced by the session's token bucket and typing plan, until
//! shutdown.

use super::*;

impl<S: MessageSender> SendQueue<S> {
    /// The dispatcher: fails sends interrupted by a previous crash, then runs one task per
    /// session with queued messages until `shutdown`; waits for sends in flight before
    /// returning. Store errors are logged and retried.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        match self.store.interrupted_sends().await {
            Ok(ids) => {
                self.fail_interrupted(&ids, "a restart").await;
            }
            Err(e) => warn!(error = %e, "listing interrupted sends failed"),
        }
        let tracker = TaskTracker::new();
        let running: Arc<Mutex<HashSet<SessionKey>>> = Arc::default();
        let done = Arc::new(Notify::new());
        let mut changes = self.store.queue_changes();
        info!("send queue dispatcher started");
        while !shutdown.is_cancelled() {
            match self.store.sessions_with_queue().await {
                Ok(sessions) => {
                    for key in sessions {
                        if !running
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(key.clone())
                        {
                            continue;
                        }
                        let (this, running, done, shutdown) = (
                            self.clone(),
                            running.clone(),
                            done.clone(),
                            shutdown.clone(),
                        );
                        tracker.spawn(async move {
                            this.session_loop(&key, &shutdown).await;
                            running
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .remove(&key);
                            done.notify_one();
                        });
                    }
                }
                Err(e) => warn!(error = %e, "listing send queues failed"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = changes.changed() => {}
                _ = done.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        }
        tracker.close();
        tracker.wait().await;
        info!("send queue dispatcher stopped");
    }

    /// Sends one session's queue in order until it is empty or shutdown.
    pub(super) async fn session_loop(&self, key: &SessionKey, shutdown: &CancellationToken) {
        let (ws, s) = key;
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let head = match self.store.queue_head(ws, s).await {
                Ok(Some(h)) => h,
                Ok(None) => return,
                Err(e) => {
                    warn!(workspace = %ws, session = %s, error = %e, "reading the send queue failed");
                    if !self.pause(Duration::from_secs(1), shutdown).await {
                        return;
                    }
                    continue;
                }
            };
            match self.step(key, head, shutdown).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    warn!(workspace = %ws, session = %s, error = %e, "send queue step failed");
                    if !self.pause(Duration::from_secs(1), shutdown).await {
                        return;
                    }
                }
            }
        }
    }

    /// Sleeps `d` unless shut down first (`false`) or woken by [`SendQueue::session_ready`].
    pub(super) async fn pause(&self, d: Duration, shutdown: &CancellationToken) -> bool {
        tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
            _ = self.ready.notified() => true,
        }
    }

    pub(super) fn with_bucket<T>(
        &self,
        key: &SessionKey,
        cfg: &PacingConfig,
        f: impl FnOnce(&mut TokenBucket) -> T,
    ) -> T {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        f(buckets
            .entry(key.clone())
            .or_insert_with(|| TokenBucket::new(cfg)))
    }

    /// Handles the head message once: wait for its time and a token, send, record. `Ok(false)`
    /// on shutdown.
    pub(super) async fn step(
        &self,
        key: &SessionKey,
        head: QueuedMessage,
        shutdown: &CancellationToken,
    ) -> Result<bool, StoreError> {
        let cfg = self.pacing(&key.0, &key.1);
        let id = head.message.id.clone();
        let now = now_ms();
        if head.claimed_at.is_some() {
            // A previous step claimed it and then failed to record the outcome: the engine may
            // have sent it. Same rule as after a crash: report, do not resend.
            warn!(message = %id, "send outcome unknown; marking it failed");
            self.fail(&id, "interrupted").await?;
            return Ok(true);
        }
        if now.saturating_sub(head.message.created_at) > cfg.max_queue_age_ms {
            self.fail(&id, "expired").await?;
            return Ok(true);
        }
        if head.not_before > now {
            return Ok(self
                .pause(Duration::from_millis(head.not_before - now), shutdown)
                .await);
        }
        // Check for a token first, but take it only right before the engine call (below), so
        // the spacing holds between actual sends and not between checks.
        let wait = self.with_bucket(key, &cfg, |b| {
            b.ready_at(now, &cfg, &mut rand::random::<f64>)
        });
        if let Some(ready_at) = wait {
            let d = Duration::from_millis(ready_at.saturating_sub(now));
            // Not woken by session_ready: pacing is not about readiness.
            return Ok(tokio::select! {
                _ = shutdown.cancelled() => false,
                _ = tokio::time::sleep(d) => true,
            });
        }
        self.store.claim_queued(&id, now).await?;
        let text_len = head
            .message
            .body
            .get("text")
            .and_then(Value::as_str)
            .map_or(0, |t| t.chars().count());
        let out = OutgoingMessage {
            id: id.clone(),
            workspace: key.0.clone(),
            session: key.1.clone(),
            to: head.message.to.clone(),
            kind: head.message.kind,
            body: head.message.body.clone(),
            presence: PresencePlan {
                send_seen: cfg.send_seen,
                typing: cfg.typing_for(text_len),
            },
        };
        // A token seen available stays available (only this task takes from this bucket).
        let taken = self.with_bucket(key, &cfg, |b| {
            b.try_take(now_ms(), &cfg, &mut rand::random::<f64>)
        });
        debug_assert!(taken.is_ok());
        let started = std::time::Instant::now();
        let result = self.sender.send(out).await;
        let attempts = head.message.attempts + 1;
        match result {
            Ok(wa) => {
                metrics::histogram!("wafleet_send_latency_seconds")
                    .record(started.elapsed().as_secs_f64());
                self.store
                    .update_message_status(
                        &id,
                        MessageStatus::Sent,
                        None,
                        Some(&wa.0),
                        now_ms(),
                        |m| Some(self.status_event(m)),
                    )
                    .await?;
                debug!(message = %id, "sent");
                self.apply_early_acks(key, &wa.0).await;
            }
            Err(SendError::Rejected(reason)) => self.fail(&id, &reason).await?,
            Err(SendError::Transient(reason)) if attempts >= cfg.max_attempts => {
                self.fail(&id, &format!("gave up after {attempts} attempts: {reason}"))
                    .await?
            }
            Err(SendError::Transient(reason)) => {
                debug!(message = %id, attempt = attempts, "transient send failure: {reason}");
                self.store
                    .release_queued(&id, now_ms() + cfg.retry_delay_ms, false)
                    .await?;
            }
            Err(SendError::NotReady(reason)) => {
                debug!(message = %id, "session not ready: {reason}");
                // Held in memory, not in the row, so `session_ready` can cut the wait short.
                self.store.release_queued(&id, 0, true).await?;
                return Ok(self
                    .pause(Duration::from_millis(cfg.retry_delay_ms), shutdown)
                    .await);
            }
        }
        Ok(true)
    }
}
