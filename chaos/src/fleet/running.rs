//! A running fleet read and acted on: worker snapshots, Consul lock holders, the shard map, Consul
//! faults, the shards CLI, an extra worker started by hand, and the fleet's stop.

use super::*;

impl Fleet {
    /// `GET /v1/worker/state` of one worker.
    pub async fn worker_snap(&self, w: &WorkerEntry) -> Option<WorkerSnap> {
        let url = format!("http://{}/v1/worker/state", w.addr);
        let v = get_json(&self.http, &url, &self.admin, Duration::from_secs(2)).await?;
        let may_run = v
            .get("workspaces")
            .and_then(|m| m.as_object())
            .map(|m| {
                m.iter()
                    .filter(|(_, p)| {
                        matches!(p.as_str(), Some("starting" | "running" | "stopping"))
                    })
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default();
        Some(WorkerSnap {
            shard: w.shard,
            pid: w.pid,
            session: v.get("session").and_then(|s| s.as_str()).map(str::to_owned),
            term: v.get("term").and_then(|s| s.as_u64()).unwrap_or(0),
            ready: v.get("ready").and_then(|s| s.as_bool()).unwrap_or(false),
            fenced: v.get("fenced").and_then(|s| s.as_bool()).unwrap_or(false),
            may_run,
            overlaps: v.get("overlaps").and_then(|s| s.as_u64()).unwrap_or(0),
        })
    }

    /// Every worker's snapshot (workers that do not answer are left out).
    pub async fn worker_snaps(&self) -> Vec<WorkerSnap> {
        let ws = self.workers();
        futures::future::join_all(ws.iter().map(|w| self.worker_snap(w)))
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// KV keys under `prefix` (recursive) → holder session (keys without a holder are left
    /// out). `None` when Consul did not answer.
    pub async fn lock_holders(&self, prefix: &str) -> Option<BTreeMap<String, String>> {
        let consul = self.consul().ok()?;
        let resp = self
            .http
            .get(format!("{consul}/v1/kv/{prefix}?recurse=true"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Some(BTreeMap::new());
        }
        if !resp.status().is_success() {
            return None;
        }
        let v: Vec<serde_json::Value> = resp.json().await.ok()?;
        Some(
            v.into_iter()
                .filter_map(|e| {
                    let key = e.get("Key")?.as_str()?;
                    let s = e.get("Session")?.as_str()?;
                    let short = key.rsplit('/').next()?.to_owned();
                    Some((short, s.to_owned()))
                })
                .collect(),
        )
    }

    /// The shard map from KV.
    pub async fn shard_map(&self) -> Result<wafleet::shard::ShardMap, FleetError> {
        let consul = self.consul()?;
        let bytes = self
            .http
            .get(format!("{consul}/v1/kv/wafleet/shardmap?raw=true"))
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        wafleet::shard::ShardMap::from_json(&bytes)
            .map_err(|e| FleetError::Fleet(format!("shard map: {e}")))
    }

    /// `POST <consul>/_dev/faults/<what>` (or DELETE `/_dev/faults` for `clear`).
    pub async fn consul_fault(
        &self,
        what: &str,
        body: serde_json::Value,
    ) -> Result<(), FleetError> {
        let consul = self.consul()?;
        let req = if what == "clear" {
            self.http.delete(format!("{consul}/_dev/faults"))
        } else {
            self.http
                .post(format!("{consul}/_dev/faults/{what}"))
                .json(&body)
        };
        let resp = req.timeout(Duration::from_secs(5)).send().await?;
        if !resp.status().is_success() {
            return Err(FleetError::Fleet(format!(
                "consul fault {what}: {}",
                resp.status()
            )));
        }
        Ok(())
    }

    /// Runs `wafleet shards <args>` against the fleet's Consul agent.
    pub async fn shards(&self, args: &[&str]) -> Result<String, FleetError> {
        let consul = self.consul()?;
        let out = Command::new(&self.bin)
            .arg("shards")
            .args(args)
            .env("CONSUL_HTTP_ADDR", consul)
            .stdin(Stdio::null())
            .output()
            .await?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            return Err(FleetError::Fleet(format!(
                "wafleet shards {args:?}: {text}"
            )));
        }
        Ok(text)
    }

    /// Starts `wafleet worker --shard K` with the fleet's flags and environment (what `wafleet
    /// dev` would do) and waits for its readiness line.
    pub async fn start_worker(&self, shard: u32, log: &Path) -> Result<WorkerEntry, FleetError> {
        let st = self.state()?;
        let consul = self.consul()?;
        let mut args: Vec<String> = vec![
            "worker".into(),
            "--shard".into(),
            shard.to_string(),
            "--data".into(),
            self.data.display().to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--advertise".into(),
            "127.0.0.1:0".into(),
        ];
        args.extend(self.worker_flags.iter().cloned());
        if let Some(u) = &st.wa_url {
            args.extend(["--wa-url".into(), u.clone()]);
        }
        let secret = self.secret.clone().unwrap_or_else(|| hex(32));
        let logf = std::fs::File::create(log)?;
        let mut cmd = Command::new(&self.bin);
        cmd.args(&args)
            .env("CONSUL_HTTP_ADDR", consul)
            .env("WAFLEET_ADMIN_TOKEN", &self.admin)
            .env("WAFLEET_TOKEN_SECRET", secret)
            .env("WAFLEET_LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(logf)
            .kill_on_drop(true);
        if let Some(dns) = &st.consul_dns {
            cmd.env("WAFLEET_CONSUL_DNS", dns);
        }
        let mut child = cmd.spawn()?;
        let pid = child.id().unwrap_or_default();
        let ready = wait_ready_line(&mut child, Duration::from_secs(120)).await?;
        let addr = ready
            .get("http")
            .and_then(|v| v.as_str())
            .ok_or_else(|| FleetError::Fleet("worker readiness line has no http".into()))?
            .to_owned();
        let entry = WorkerEntry {
            shard,
            pid,
            addr: addr.clone(),
        };
        if let Ok(mut x) = self.extra.lock() {
            x.push(ExtraWorker {
                shard,
                pid,
                addr,
                child,
            });
        }
        Ok(entry)
    }

    /// Stops everything this suite started: extra workers (SIGTERM, drain), then `wafleet dev`
    /// (SIGTERM: it drains its workers and stops in order), SIGKILL after a grace.
    pub async fn stop(&self, grace: Duration) {
        let extra: Vec<ExtraWorker> = self
            .extra
            .lock()
            .map(|mut x| x.drain(..).collect())
            .unwrap_or_default();
        for mut e in extra {
            let _ = signal(e.pid, "TERM").await;
            if tokio::time::timeout(grace, e.child.wait()).await.is_err() {
                tracing::warn!(pid = e.pid, "extra worker did not drain in time; SIGKILL");
                let _ = e.child.kill().await;
            }
        }
        let dev = self.dev.lock().ok().and_then(|mut d| d.take());
        if let Some(mut dev) = dev {
            if let Some(pid) = dev.id() {
                let _ = signal(pid, "TERM").await;
            }
            if tokio::time::timeout(grace, dev.wait()).await.is_err() {
                tracing::warn!("wafleet dev did not stop in time; SIGKILL");
                let _ = dev.kill().await;
            }
        }
    }

    /// Whether the suite started this fleet (as opposed to attaching).
    pub fn owned(&self) -> bool {
        self.dev.lock().map(|d| d.is_some()).unwrap_or(false)
    }
}
