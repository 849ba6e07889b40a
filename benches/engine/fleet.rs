//! The wafleet side of the engine bench: a real fleet (`wafleet dev`, one worker, the router)
//! on the bench's simulator, driven through the router's HTTP API as a client would drive it.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::procs::Wafleet;

/// Admin token of the bench's fleet.
pub const ADMIN: &str = "bench-engine-admin-token";
const SECRET: &str = "bench-engine-token-secret-0123456789";
/// The bench's workspace.
pub const WS: &str = "bench";
/// Who the bench's messages go to.
const RECIPIENT: &str = "4915550009999";

/// A running fleet and a client for its router.
pub struct Fleet {
    dev: Wafleet,
    router: String,
    http: reqwest::Client,
}

/// Milliseconds since the epoch (the simulator stamps receipts with the same clock).
pub fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Fleet {
    /// Starts `wafleet dev --workers 1` with its data in `data`, pointed at the simulator `sim`.
    pub async fn start(data: &Path, sim: &str, http: reqwest::Client) -> anyhow::Result<Fleet> {
        let s = |v: &str| v.to_string();
        let args = vec![
            s("dev"),
            s("--workers"),
            s("1"),
            s("--data"),
            data.display().to_string(),
            s("--router-listen"),
            s("127.0.0.1:0"),
            s("--consul-http"),
            s("127.0.0.1:0"),
            s("--consul-dns"),
            s("127.0.0.1:0"),
            s("--wa-url"),
            format!("http://{sim}/"),
        ];
        std::fs::create_dir_all(data)?;
        let dev = Wafleet::spawn(
            &args,
            &[
                ("WAFLEET_ADMIN_TOKEN", ADMIN),
                ("WAFLEET_TOKEN_SECRET", SECRET),
                ("WAFLEET_CHROMIUM", "/usr/bin/chromium"),
            ],
            &data.join("dev.log"),
            Duration::from_secs(180),
        )
        .await?;
        let router = dev.field("router")?;
        Ok(Fleet { dev, router, http })
    }

    /// Stops the fleet (workers close their browsers).
    pub async fn stop(self) {
        self.dev.stop(Duration::from_secs(60)).await;
    }

    fn url(&self, rest: &str) -> String {
        format!("http://{}/v1/workspaces/{WS}/sessions{rest}", self.router)
    }

    async fn call(&self, req: reqwest::RequestBuilder) -> anyhow::Result<(StatusCode, Value)> {
        let res = req.bearer_auth(ADMIN).send().await?;
        let status = res.status();
        let body = res.json::<Value>().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    /// Creates session `id` (send pacing off: the bench measures the engine, not the pacing)
    /// and returns how long its QR took to become available through the router, and the QR.
    pub async fn create_until_qr(&self, id: &str) -> anyhow::Result<(Duration, String)> {
        let body = json!({
            "session": id,
            "pacing": {"interval_ms": 1, "jitter_ms": 0, "burst": 100, "send_seen": false, "typing": false},
        });
        let t0 = Instant::now();
        let (status, answer) = self.call(self.http.post(self.url("")).json(&body)).await?;
        anyhow::ensure!(
            status == StatusCode::CREATED,
            "create {id}: {status} {answer}"
        );
        let deadline = t0 + Duration::from_secs(120);
        loop {
            let (status, qr) = self
                .call(
                    self.http
                        .get(self.url(&format!("/{id}/qr")))
                        .header("Accept", "application/json"),
                )
                .await?;
            if status == StatusCode::OK
                && let Some(value) = qr["value"].as_str()
            {
                return Ok((t0.elapsed(), value.to_owned()));
            }
            anyhow::ensure!(Instant::now() < deadline, "no QR for {id} within 120 s");
            // 10 ms polling: the figure is at most that much late.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until session `id` is `WORKING`.
    pub async fn wait_working(&self, id: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (_, s) = self
                .call(self.http.get(self.url(&format!("/{id}"))))
                .await?;
            if s["status"] == "WORKING" {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{id} not WORKING within 120 s: {s}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends one text from session `id` (linked to `phone`) through the router and returns the
    /// time from the request to the simulator's receipt of it (the simulator's timestamp).
    pub async fn send_until_receipt(
        &self,
        sim: &str,
        id: &str,
        phone: &str,
        n: usize,
    ) -> anyhow::Result<Duration> {
        let text = format!("bench {n} {}", ulid_like());
        let t0 = epoch_ms();
        let (status, answer) = self
            .call(
                self.http
                    .post(self.url(&format!("/{id}/messages")))
                    .json(&json!({"to": RECIPIENT, "text": text})),
            )
            .await?;
        anyhow::ensure!(status == StatusCode::ACCEPTED, "send: {status} {answer}");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let list: Value = self
                .http
                .get(format!("http://{sim}/sim/messages?phone={phone}"))
                .send()
                .await?
                .json()
                .await?;
            let got = list.as_array().and_then(|l| {
                l.iter()
                    .rev()
                    .find(|m| m["text"] == text.as_str())
                    .and_then(|m| m["timestamp"].as_u64())
            });
            if let Some(at) = got {
                return Ok(Duration::from_millis(at.saturating_sub(t0)));
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "message {n} not received in 60 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// A unique enough suffix for message texts (a new one per message in this run).
fn ulid_like() -> String {
    format!("{:x}", epoch_ms() ^ u64::from(std::process::id()) << 40)
}
