//! Service registration with a TTL check, kept alive by a background task.
//!
//! The keeper registers the service through the local agent (not the catalog: catalog checks
//! are never executed), passes the TTL check right away (new checks start critical) and then
//! every TTL/3, and re-registers when the agent has lost the registration — after an agent
//! restart the check update answers 404 (or 500 "does not have associated TTL" on older
//! agents) and `GET /v1/agent/services` no longer lists the id, as Fabio detects it. On
//! shutdown it deregisters.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::duration::format_go_duration;
use super::{CheckDefinition, CheckStatus, Client, ConsulError, ServiceRegistration};

/// What to register and how to keep it.
#[derive(Debug, Clone)]
pub struct Registration {
    /// The service (its `checks` are filled from the fields below at registration).
    pub service: ServiceRegistration,
    /// TTL of the TTL check.
    pub ttl: Duration,
    /// Pass the TTL check this often; default TTL/3.
    pub pass_every: Option<Duration>,
    /// Optional HTTP check: URL, interval, timeout.
    pub http_check: Option<(String, Duration, Duration)>,
    /// `DeregisterCriticalServiceAfter` on the TTL check (Consul's minimum is 1 minute).
    pub deregister_critical_after: Option<Duration>,
}

impl Registration {
    /// A registration of `service` with a TTL check of `ttl`.
    pub fn new(service: ServiceRegistration, ttl: Duration) -> Self {
        Registration {
            service,
            ttl,
            pass_every: None,
            http_check: None,
            deregister_critical_after: None,
        }
    }

    /// The id of the TTL check: `<service id>:ttl`.
    pub fn ttl_check_id(&self) -> String {
        format!("{}:ttl", self.service.id)
    }

    /// The body sent to `PUT /v1/agent/service/register`.
    pub fn body(&self) -> ServiceRegistration {
        let mut s = self.service.clone();
        s.checks = vec![CheckDefinition {
            check_id: Some(self.ttl_check_id()),
            name: Some(format!("{} TTL", self.service.name)),
            ttl: Some(format_go_duration(self.ttl)),
            deregister_critical_service_after: self
                .deregister_critical_after
                .map(format_go_duration),
            ..Default::default()
        }];
        if let Some((url, interval, timeout)) = &self.http_check {
            s.checks.push(CheckDefinition {
                check_id: Some(format!("{}:http", self.service.id)),
                name: Some(format!("{} HTTP", self.service.name)),
                http: Some(url.clone()),
                interval: Some(format_go_duration(*interval)),
                timeout: Some(format_go_duration(*timeout)),
                deregister_critical_service_after: self
                    .deregister_critical_after
                    .map(format_go_duration),
                ..Default::default()
            });
        }
        s
    }

    fn pass_interval(&self) -> Duration {
        self.pass_every
            .unwrap_or(self.ttl / 3)
            .max(Duration::from_millis(10))
    }
}

/// Whether a check-update error means "the agent does not know this check any more".
pub fn is_lost_registration(e: &ConsulError) -> bool {
    match e {
        ConsulError::Status { status: 404, .. } => true,
        ConsulError::Status { status: 500, body } => {
            let b = body.to_ascii_lowercase();
            b.contains("does not have associated ttl")
                || b.contains("unknown check")
                || b.contains("not found")
        }
        _ => false,
    }
}

/// A registered service and the task keeping it registered and passing.
#[derive(Debug)]
pub struct RegistrationKeeper {
    service_id: String,
    status: watch::Sender<(CheckStatus, Option<String>)>,
    reregistrations: Arc<AtomicU64>,
    stop: CancellationToken,
    task: JoinHandle<Result<(), ConsulError>>,
}

impl RegistrationKeeper {
    /// Registers the service, passes its TTL check, and keeps it so until `cancel` or
    /// [`RegistrationKeeper::deregister`] (both deregister).
    pub async fn start(
        client: &Client,
        registration: Registration,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) -> Result<RegistrationKeeper, ConsulError> {
        let check_id = registration.ttl_check_id();
        client.agent_service_register(&registration.body()).await?;
        // New checks start critical: pass at once. A failure here is not fatal; the keeper
        // retries on its first tick.
        let passed = match client.agent_check_pass(&check_id, None).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(check = %check_id, error = %e, "first TTL pass failed; the keeper retries");
                false
            }
        };
        let (status, status_rx) = watch::channel((CheckStatus::Passing, None));
        let reregistrations = Arc::new(AtomicU64::new(0));
        let stop = cancel.child_token();
        let service_id = registration.service.id.clone();
        tracing::info!(service = %service_id, "consul service registered");
        let task = tracker.spawn(keep_loop(
            client.clone(),
            registration,
            passed,
            status_rx,
            reregistrations.clone(),
            stop.clone(),
        ));
        Ok(RegistrationKeeper {
            service_id,
            status,
            reregistrations,
            stop,
            task,
        })
    }

    /// The service id.
    pub fn service_id(&self) -> &str {
        &self.service_id
    }

    /// Sets what the TTL check reports from now on (passing, warning, critical) with a note;
    /// applied at once.
    pub fn set_status(&self, status: CheckStatus, note: Option<String>) {
        self.status.send_replace((status, note));
    }

    /// How many times the keeper had to re-register (agent restarts seen).
    pub fn reregistrations(&self) -> u64 {
        self.reregistrations.load(Ordering::Relaxed)
    }

    /// Stops the keeper and deregisters the service.
    pub async fn deregister(self) -> Result<(), ConsulError> {
        self.stop.cancel();
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(ConsulError::InvalidRequest(format!(
                "keeper task failed: {e}"
            ))),
        }
    }
}

async fn update(
    client: &Client,
    check_id: &str,
    status: &(CheckStatus, Option<String>),
) -> Result<(), ConsulError> {
    client
        .agent_check_update(check_id, status.0, status.1.as_deref())
        .await
}

async fn keep_loop(
    client: Client,
    reg: Registration,
    mut passed: bool,
    mut status: watch::Receiver<(CheckStatus, Option<String>)>,
    reregistrations: Arc<AtomicU64>,
    stop: CancellationToken,
) -> Result<(), ConsulError> {
    let id = reg.service.id.clone();
    let check_id = reg.ttl_check_id();
    let interval = reg.pass_interval();
    // The status sender lives in the keeper handle; a caller that drops the handle (the router
    // keeps only the task) closes the channel, and a closed channel's `changed()` is ready at
    // once. Stop listening then, or the loop would spin on it (it once sent ~1,400 requests
    // a second from an idle router).
    let mut status_open = true;
    loop {
        // After a failed update, retry sooner than a full interval.
        let wait = if passed {
            interval
        } else {
            (interval / 4).max(Duration::from_millis(10))
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            changed = status.changed(), if status_open => {
                if changed.is_err() {
                    status_open = false;
                    continue;
                }
            }
            _ = stop.cancelled() => break,
        }
        let current = status.borrow_and_update().clone();
        let mut lost = false;
        match update(&client, &check_id, &current).await {
            Ok(()) => passed = true,
            Err(e) if is_lost_registration(&e) => lost = true,
            Err(e) => {
                tracing::warn!(service = %id, error = %e, "consul TTL check update failed");
                passed = false;
                continue;
            }
        }
        if !lost {
            match client.agent_services().await {
                Ok(services) => lost = !services.contains_key(&id),
                Err(e) => {
                    tracing::warn!(service = %id, error = %e, "listing agent services failed")
                }
            }
        }
        if lost {
            tracing::warn!(service = %id, "consul agent lost the registration; registering again");
            match client.agent_service_register(&reg.body()).await {
                Ok(()) => {
                    reregistrations.fetch_add(1, Ordering::Relaxed);
                    passed = update(&client, &check_id, &current).await.inspect_err(|e| {
                        tracing::warn!(service = %id, error = %e, "TTL update after re-registration failed");
                    }).is_ok();
                }
                Err(e) => {
                    tracing::warn!(service = %id, error = %e, "re-registration failed");
                    passed = false;
                }
            }
        }
    }
    let r = client.agent_service_deregister(&id).await;
    match &r {
        Ok(()) => tracing::info!(service = %id, "consul service deregistered"),
        Err(e) => tracing::warn!(service = %id, error = %e, "consul deregistration failed"),
    }
    r
}
