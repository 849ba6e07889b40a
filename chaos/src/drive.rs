//! The run itself: start (or attach to) the fleet, drive traffic, run each scenario in turn and
//! keep its report, then write the requests, the reports and the table.

use super::*;

pub(super) async fn drive(
    args: &Args,
    fleet: Arc<Fleet>,
    command: String,
    started_at: String,
    out: &std::path::Path,
    log_dir: PathBuf,
    plan: Plan,
) -> Result<bool, Box<dyn std::error::Error>> {
    let Plan {
        run_id,
        workspaces,
        victim,
        partition,
    } = plan;
    let rec = Arc::new(Recorder::new());
    let obs = Arc::new(Observations::default());
    let stop = CancellationToken::new();
    let tracker = tokio_util::task::TaskTracker::new();
    // In netns mode the namespaced worker must reach the receiver over the veth pair.
    let hook_ip = match &partition {
        Partition::Netns(l) => std::net::IpAddr::V4(l.host_ip),
        Partition::Agent { .. } => std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
    };
    let receiver = Receiver::start_on(hook_ip, rec.clone(), stop.clone()).await?;
    let target = Target {
        http: fleet.http.clone(),
        router: fleet.router()?,
        admin: fleet.admin.clone(),
    };
    let session = "default".to_owned();

    // Sessions.
    tracing::info!(count = workspaces.len(), "creating sessions");
    let hook_url = receiver.url();
    let creates = workspaces.iter().map(|ws| {
        traffic::create_session(
            &target,
            ws,
            &session,
            Some(hook_url.as_str()),
            Duration::from_secs(60),
        )
    });
    for r in futures::future::join_all(creates).await {
        r?;
    }
    let mut caps = Caps {
        sim: fleet.sim().is_some(),
        ..Caps::default()
    };
    let settled = traffic::wait_sessions(
        &target,
        &workspaces,
        &["WORKING", "SCAN_QR_CODE"],
        // Real sessions launch one Chromium each (bounded restore concurrency): scale with M.
        Duration::from_secs(60 + 2 * workspaces.len() as u64),
    )
    .await
    .map_err(|t| format!("sessions did not start: {t:?}"))?;
    let mut phones = std::collections::BTreeMap::new();
    if settled.values().any(|s| s.status == "SCAN_QR_CODE") {
        caps.real_sessions = true;
        let sim = fleet
            .sim()
            .ok_or("sessions show a QR but no simulator runs to link them")?;
        tracing::info!("real sessions: linking through the simulator");
        for (i, ws) in workspaces.iter().enumerate() {
            let phone = traffic::phone_for(i);
            traffic::link(&target, &sim, ws, &session, &phone, Duration::from_secs(60)).await?;
            phones.insert(ws.clone(), phone);
        }
        traffic::wait_sessions(
            &target,
            &workspaces,
            &["WORKING"],
            Duration::from_secs(60 + 3 * workspaces.len() as u64),
        )
        .await
        .map_err(|t| format!("linked sessions did not reach WORKING: {t:?}"))?;
    }
    caps.sends = traffic::probe_send(&target, &workspaces[0], &session).await == Some(true);
    // Webhooks: a session.status event for one of our workspaces must arrive.
    let hook_deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < hook_deadline {
        if receiver
            .received()
            .iter()
            .any(|r| workspaces.contains(&r.workspace))
        {
            caps.webhooks = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tracing::info!(?caps, "capabilities");

    // Traffic and sampling.
    let max = Duration::from_secs(args.max_run_secs);
    // Traffic and sampling outlive the last scenario's cut-off (deadline + 60 s) a little.
    let loops_max = max + Duration::from_secs(90);
    let tcfg = TrafficConfig {
        interval: Duration::from_millis(args.interval_ms),
        send_every: if caps.sends { args.send_every } else { 0 },
        request_timeout: Duration::from_secs(5),
        max_duration: loops_max,
        session: session.clone(),
        run_id: format!("{run_id}-{:08x}", rand::random::<u32>()),
    };
    let n = workspaces.len().max(1) as u64;
    for (i, ws) in workspaces.iter().enumerate() {
        // Spread the workspaces over one interval.
        let offset = Duration::from_millis(args.interval_ms * i as u64 / n);
        tracker.spawn(traffic::workspace_loop(
            target.clone(),
            rec.clone(),
            tcfg.clone(),
            ws.clone(),
            offset,
            stop.clone(),
        ));
    }
    tracker.spawn(observe::sampler(
        fleet.clone(),
        rec.clone(),
        obs.clone(),
        Duration::from_millis(500),
        loops_max,
        stop.clone(),
    ));

    let ctx = Ctx {
        fleet: fleet.clone(),
        rec: rec.clone(),
        obs: obs.clone(),
        target,
        workspaces: workspaces.clone(),
        phones,
        session,
        caps: caps.clone(),
        timing: Timing {
            session_ttl: Duration::from_secs(args.session_ttl_secs),
            recover_timeout: Duration::from_secs(args.recover_timeout_secs),
            healthy_reads: args.healthy_reads,
            webhook_outage: Duration::from_secs(args.webhook_outage_secs),
            delay_threshold: Duration::from_secs(args.delay_secs),
        },
        receiver,
        log_dir,
        delivered: tokio::sync::Mutex::default(),
        partition,
    };
    let victim = match victim {
        Some(v) => v,
        None => scenario::pick_victim(&fleet.shard_map().await?, &workspaces),
    };
    tracing::info!(victim, "victim shard for single-shard scenarios");
    let run_deadline = tokio::time::Instant::now() + max;
    let mut scenarios = Vec::new();
    for name in &args.scenarios_list() {
        if tokio::time::Instant::now() >= run_deadline {
            scenarios.push(report::ScenarioReport::skipped(
                name,
                "the run's --max-run-secs was reached".into(),
            ));
            continue;
        }
        tracing::info!(scenario = %name, "scenario start");
        // A scenario started before the deadline gets one extra minute, then it is cut off
        // (and any fault it left in the agent or the receiver is cleared).
        let cutoff = run_deadline + Duration::from_secs(60);
        let reps = match tokio::time::timeout_at(cutoff, scenario::run(&ctx, name, victim)).await {
            Ok(reps) => reps,
            Err(_) => {
                let _ = fleet.consul_fault("clear", serde_json::json!({})).await;
                ctx.receiver.set_up(true);
                let mut r = report::ScenarioReport::skipped(name, String::new());
                r.skipped = None;
                r.passed = false;
                r.notes
                    .push("cut off: the scenario ran past --max-run-secs + 60 s".into());
                vec![r]
            }
        };
        for r in &reps {
            tracing::info!(scenario = %r.name, passed = r.passed, "scenario done");
        }
        scenarios.extend(reps);
    }
    stop.cancel();
    tracker.close();
    tracker.wait().await;

    let passed = scenarios.iter().all(|s| s.passed);
    let rep = report::Report {
        command,
        started_at,
        fleet: serde_json::json!({
            "workers": fleet.workers(),
            "dev_pid": fleet.state().ok().and_then(|s| s.pid),
            "other_pids": fleet.state().ok().map(|s| s.pids),
            "workspaces": workspaces.len(),
            "interval_ms": args.interval_ms,
            "session_ttl_secs": args.session_ttl_secs,
            "lock_delay_secs": args.lock_delay_secs,
            "drain_grace_secs": args.drain_grace_secs,
            "capabilities": caps,
            "requests_total": rec.outcomes().len(),
            "sampler_rounds": obs.runner_rounds.load(std::sync::atomic::Ordering::Relaxed),
            "sampler_rounds_without_consul": obs.kv_missed.load(std::sync::atomic::Ordering::Relaxed),
            "proc_scans": obs.proc_scans.load(std::sync::atomic::Ordering::Relaxed),
            "attached": args.state.is_some(),
            "run_id": run_id,
            "victim_shard": victim,
            "partition_mode": ctx.partition.mode(),
            "partition_namespace": match &ctx.partition {
                Partition::Netns(l) => serde_json::json!({"name": l.name, "host_if": l.host_if, "host_ip": l.host_ip, "inner_ip": l.ns_ip}),
                Partition::Agent { reason } => serde_json::json!({"not_used": reason}),
            },
        }),
        scenarios,
        passed,
    };
    let table = report::table(&rep);
    std::fs::write(out.join("report.json"), serde_json::to_vec_pretty(&rep)?)?;
    std::fs::write(out.join("table.md"), &table)?;
    write_requests(&out.join("requests.jsonl"), &rec.outcomes())?;
    println!("{table}");
    println!(
        "report: {}  result: {}",
        out.join("report.json").display(),
        if passed { "PASS" } else { "FAIL" }
    );
    Ok(passed)
}

/// Every request's outcome, one JSON object per line in time order: the raw evidence behind
/// every measure (`jq 'select(.ws == "chaos-x-003")' requests.jsonl`).
pub(super) fn write_requests(
    path: &std::path::Path,
    outcomes: &[model::Outcome],
) -> std::io::Result<()> {
    use std::io::Write;
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    for o in outcomes {
        serde_json::to_writer(&mut w, o)?;
        w.write_all(b"\n")?;
    }
    w.flush()
}
