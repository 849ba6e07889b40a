//! Process signals and the cancellation plumbing every long-running command shares.
//!
//! `signal()` resolves on SIGINT *or* SIGTERM: Nomad's default kill signal is SIGINT, systemd's
//! and Docker's is SIGTERM, and a developer presses Ctrl-C. Entry points take a
//! [`CancellationToken`] (to tell tasks to stop) and spawn through a [`TaskTracker`] (to wait
//! for them), following tokio's shutdown guide.

pub use tokio_util::sync::CancellationToken;
pub use tokio_util::task::TaskTracker;

/// Resolves when the process receives SIGINT or SIGTERM.
pub async fn signal() {
    use tokio::signal::unix::{SignalKind, signal};
    // Installing a handler fails only if the signal driver cannot be registered, which happens
    // before any work starts; falling back to Ctrl-C keeps the process stoppable.
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => tracing::info!("SIGINT received"),
                _ = term.recv() => tracing::info!("SIGTERM received"),
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// A token that is cancelled when [`signal`] resolves.
pub fn token_from_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        signal().await;
        t.cancel();
    });
    token
}
