//! Engine benchmarks (`scripts/bench engine`, or `cargo bench --profile dev --bench engine`):
//! create→QR and send→receipt latency through the router, and PSS per linked session at 1, 10
//! and 25 sessions against the whatsapp-web.js baseline, in the same run, on the plain
//! simulator page and on a page with ballast; then each density lever at 10 sessions.
//!
//! Everything is real: the simulator (`wafleet sim`), a fleet (`wafleet dev`, one worker and the
//! router) for the wafleet side, and Chromium launched by the bench for the baseline and the
//! levers, every session linked by QR through the simulated phone. The sides run one after the
//! other (never both at once), and every browser is killed and every profile removed after its
//! measurement. Settings (environment):
//!
//! * `WAFLEET_BENCH_SESSIONS` (default `1,10,25`): session counts measured while growing;
//! * `WAFLEET_BENCH_QR_SESSIONS` (20) and `WAFLEET_BENCH_MESSAGES` (500): latency samples;
//! * `WAFLEET_BENCH_BALLAST_MB` (`0,150`): simulator page ballast per run (a stand-in for
//!   WhatsApp Web's heap, not WhatsApp);
//! * `WAFLEET_BENCH_LEVERS` (all, or `none`) and `WAFLEET_BENCH_LEVER_SESSIONS` (10);
//! * `WAFLEET_BENCH_PARTS` (`fleet,baseline,levers`);
//! * `WAFLEET_BENCH_OUT`: also write the Markdown tables to this file;
//! * `WAFLEET_CHROMIUM` (`/usr/bin/chromium`).

mod direct;
mod fleet;
mod levers;
mod procs;
mod report;

use std::path::{Path, PathBuf};
use std::time::Duration;

use direct::Layout;
use report::{Latency, MemoryRow, Report};

/// The bench's settings, from the environment.
struct Settings {
    counts: Vec<usize>,
    qr_sessions: usize,
    messages: usize,
    ballasts: Vec<u32>,
    levers: Vec<String>,
    lever_sessions: usize,
    parts: Vec<String>,
    out: Option<PathBuf>,
    chromium: PathBuf,
}

fn env_list<T: std::str::FromStr>(name: &str, default: &str) -> anyhow::Result<Vec<T>> {
    let raw = std::env::var(name).unwrap_or_else(|_| default.to_string());
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .map_err(|_| anyhow::anyhow!("{name}: cannot parse {s:?}"))
        })
        .collect()
}

fn env_one<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(s) if !s.trim().is_empty() => s
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}: cannot parse {s:?}")),
        _ => Ok(default),
    }
}

impl Settings {
    fn from_env() -> anyhow::Result<Settings> {
        let mut counts: Vec<usize> = env_list("WAFLEET_BENCH_SESSIONS", "1,10,25")?;
        counts.sort_unstable();
        counts.dedup();
        anyhow::ensure!(
            counts.first().is_some_and(|c| *c > 0),
            "WAFLEET_BENCH_SESSIONS needs positive counts"
        );
        let levers: Vec<String> = env_list("WAFLEET_BENCH_LEVERS", &levers::ALL.join(","))?;
        let levers = if levers == ["none"] {
            Vec::new()
        } else {
            levers
        };
        for l in &levers {
            anyhow::ensure!(
                levers::ALL.contains(&l.as_str()),
                "unknown lever {l:?} (known: {})",
                levers::ALL.join(",")
            );
        }
        Ok(Settings {
            counts,
            qr_sessions: env_one("WAFLEET_BENCH_QR_SESSIONS", 20)?,
            messages: env_one("WAFLEET_BENCH_MESSAGES", 500)?,
            ballasts: env_list("WAFLEET_BENCH_BALLAST_MB", "0,150")?,
            levers,
            lever_sessions: env_one("WAFLEET_BENCH_LEVER_SESSIONS", 10)?.max(1),
            parts: env_list("WAFLEET_BENCH_PARTS", "fleet,baseline,levers")?,
            out: std::env::var_os("WAFLEET_BENCH_OUT").map(PathBuf::from),
            chromium: std::env::var_os("WAFLEET_CHROMIUM")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium")),
        })
    }

    fn part(&self, name: &str) -> bool {
        self.parts.iter().any(|p| p == name)
    }
}

/// One page setting's run: the simulator, and where its browsers' profiles go.
struct Run<'a> {
    settings: &'a Settings,
    sim: String,
    tmp: PathBuf,
    http: reqwest::Client,
    ballast: u32,
}

/// A simulated phone number unique in this run: `4915` + page run, measurement and session.
fn phone(ballast_idx: usize, series: usize, i: usize) -> String {
    format!("4915{ballast_idx}{series:02}{i:04}")
}

impl Run<'_> {
    /// Launches sessions one by one in browsers the bench starts itself, linking each, and
    /// measures the settled PSS at every count of `counts`. Every browser is killed after.
    async fn grow_direct(
        &self,
        name: &str,
        args: &[String],
        layout: Layout,
        counts: &[usize],
        series: (usize, usize),
        purge: bool,
    ) -> anyhow::Result<Vec<MemoryRow>> {
        let marker = self.tmp.join(format!("{name}-{}mb", self.ballast));
        let marker_s = format!("{}/", marker.display());
        let result = self
            .grow_direct_inner(name, args, layout, counts, series, purge, &marker)
            .await;
        procs::kill_trees(&marker_s).await;
        let _ = std::fs::remove_dir_all(&marker);
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn grow_direct_inner(
        &self,
        name: &str,
        args: &[String],
        layout: Layout,
        counts: &[usize],
        series: (usize, usize),
        purge: bool,
        marker: &Path,
    ) -> anyhow::Result<Vec<MemoryRow>> {
        let marker_s = format!("{}/", marker.display());
        let max = counts.iter().copied().max().unwrap_or(0);
        let url = format!("http://{}/", self.sim);
        let mut browsers: Vec<direct::Launched> = Vec::new();
        let mut rows = Vec::new();
        for i in 0..max {
            if !layout.shared() || browsers.is_empty() {
                let profile = marker.join(format!("s{i:03}"));
                browsers.push(
                    direct::launch(
                        &self.settings.chromium,
                        args,
                        &profile,
                        layout == Layout::StartupTab,
                    )
                    .await?,
                );
            }
            let b = browsers.last_mut().expect("a browser");
            direct::open_page(b, &url, layout).await?;
            let page = b.pages.last().expect("a page").clone();
            direct::link(&page, &self.http, &self.sim, &phone(series.0, series.1, i)).await?;
            let n = i + 1;
            if counts.contains(&n) {
                let usage = procs::settled_usage(&marker_s, Duration::from_secs(30)).await;
                eprintln!("  {name} @{n}: {}", report::describe(usage, n));
                if std::env::var_os("WAFLEET_BENCH_DETAIL").is_some() {
                    eprint!("{}", procs::detail(&marker_s));
                }
                rows.push(MemoryRow::new(name, self.ballast, n, usage));
                if purge {
                    for b in &browsers {
                        for p in &b.pages {
                            direct::purge(p).await?;
                        }
                    }
                    let usage = procs::settled_usage(&marker_s, Duration::from_secs(30)).await;
                    let label = format!("{name}, after a CDP purge");
                    eprintln!("  {label} @{n}: {}", report::describe(usage, n));
                    rows.push(MemoryRow::new(&label, self.ballast, n, usage));
                }
            }
        }
        if layout == Layout::Profiles
            && let Some(b) = browsers.pop()
        {
            rows.push(self.restore_profiles(name, args, b, max, &marker_s).await?);
        }
        for b in browsers {
            b.kill().await;
        }
        Ok(rows)
    }

    /// The durability check of [`Layout::Profiles`]: SIGKILLs the shared browser, starts it
    /// again on the same user-data-dir, reopens every profile and requires each page to come
    /// back `CONNECTED` without a QR; then measures PSS again.
    async fn restore_profiles(
        &self,
        name: &str,
        args: &[String],
        browser: direct::Launched,
        sessions: usize,
        marker_s: &str,
    ) -> anyhow::Result<MemoryRow> {
        let user_data_dir = browser.user_data_dir().to_path_buf();
        browser.kill().await;
        procs::kill_trees(marker_s).await;
        let mut b = direct::launch(&self.settings.chromium, args, &user_data_dir, false).await?;
        let url = format!("http://{}/", self.sim);
        for i in 0..sessions {
            direct::open_in_profile(&mut b, &url, &format!("p{i:03}")).await?;
        }
        let mut lost = Vec::new();
        for (i, page) in b.pages.iter().enumerate() {
            if let Err(e) = direct::wait_restored(page).await {
                lost.push(format!("p{i:03}: {e:#}"));
            }
        }
        let usage = procs::settled_usage(marker_s, Duration::from_secs(30)).await;
        b.kill().await;
        anyhow::ensure!(
            lost.is_empty(),
            "{} of {sessions} logins lost after kill -9: {}",
            lost.len(),
            lost.join("; ")
        );
        let label = format!("{name}, after kill -9 and a restart (every login kept)");
        eprintln!(
            "  {label} @{sessions}: {}",
            report::describe(usage, sessions)
        );
        Ok(MemoryRow::new(&label, self.ballast, sessions, usage))
    }

    /// The wafleet side: a fleet, sessions created and linked through the router one by one
    /// (create→QR timed), PSS at every count, then send→receipt over the linked sessions.
    async fn fleet(&self, series: usize) -> anyhow::Result<(Vec<MemoryRow>, Latency)> {
        let data = self.tmp.join(format!("fleet-{}mb", self.ballast));
        let marker = format!("{}/", data.join("data").display());
        let result = self.fleet_inner(series, &data, &marker).await;
        procs::kill_trees(&marker).await;
        let _ = std::fs::remove_dir_all(&data);
        result
    }

    async fn fleet_inner(
        &self,
        series: usize,
        data: &Path,
        marker: &str,
    ) -> anyhow::Result<(Vec<MemoryRow>, Latency)> {
        let s = self.settings;
        let fleet = fleet::Fleet::start(&data.join("data"), &self.sim, self.http.clone()).await?;
        let run = async {
            let max = s
                .counts
                .iter()
                .copied()
                .max()
                .unwrap_or(0)
                .max(s.qr_sessions);
            let mut rows = Vec::new();
            let mut latency = Latency::default();
            let mut linked = Vec::new();
            for i in 0..max {
                let id = format!("s{i:03}");
                let (took, qr) = fleet.create_until_qr(&id).await?;
                if i < s.qr_sessions {
                    latency.qr.push(took);
                }
                let phone = phone(self.ballast_idx(), series, i);
                let res = self
                    .http
                    .post(format!("http://{}/sim/link", self.sim))
                    .json(&serde_json::json!({"qr": qr, "phone": phone}))
                    .send()
                    .await?;
                anyhow::ensure!(res.status().is_success(), "link: {}", res.text().await?);
                fleet.wait_working(&id).await?;
                linked.push((id, phone));
                let n = i + 1;
                if s.counts.contains(&n) {
                    let usage = procs::settled_usage(marker, Duration::from_secs(30)).await;
                    eprintln!("  wafleet worker @{n}: {}", report::describe(usage, n));
                    rows.push(MemoryRow::new("wafleet worker", self.ballast, n, usage));
                }
            }
            for m in 0..s.messages {
                let (id, phone) = &linked[m % linked.len()];
                latency
                    .send
                    .push(fleet.send_until_receipt(&self.sim, id, phone, m).await?);
            }
            Ok::<_, anyhow::Error>((rows, latency))
        }
        .await;
        fleet.stop().await;
        run
    }

    fn ballast_idx(&self) -> usize {
        self.settings
            .ballasts
            .iter()
            .position(|b| *b == self.ballast)
            .unwrap_or(0)
    }
}

async fn page_run(settings: &Settings, ballast: u32, report: &mut Report) -> anyhow::Result<()> {
    let tmp = tempfile::Builder::new()
        .prefix("wafleet-bench-engine-")
        .tempdir()?;
    let sim = procs::Wafleet::spawn(
        &[
            "sim".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--page-ballast-mb".into(),
            ballast.to_string(),
        ],
        &[],
        &tmp.path().join("sim.log"),
        Duration::from_secs(30),
    )
    .await?;
    let run = Run {
        settings,
        sim: sim.field("http")?,
        tmp: tmp.path().to_path_buf(),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?,
        ballast,
    };
    let b = run.ballast_idx();
    let result = async {
        if settings.part("fleet") {
            eprintln!("[{ballast} MiB ballast] wafleet worker through the router");
            let (rows, latency) = run.fleet(0).await?;
            for (what, samples) in [("create→QR", &latency.qr), ("send→receipt", &latency.send)]
            {
                let p = |q| report::percentile_ms(samples, q).unwrap_or(f64::NAN);
                eprintln!(
                    "  {what}: p50 {:.0} ms, p99 {:.0} ms over {}",
                    p(0.5),
                    p(0.99),
                    samples.len()
                );
            }
            report.memory.extend(rows);
            report.latency.push((ballast, latency));
        }
        if settings.part("baseline") {
            eprintln!("[{ballast} MiB ballast] whatsapp-web.js baseline");
            let rows = run
                .grow_direct(
                    "whatsapp-web.js baseline",
                    &direct::baseline_args(),
                    Layout::StartupTab,
                    &settings.counts,
                    (b, 1),
                    false,
                )
                .await?;
            report.memory.extend(rows);
        }
        if settings.part("levers") {
            for (k, name) in settings.levers.iter().enumerate() {
                eprintln!("[{ballast} MiB ballast] lever {name}");
                let lever = levers::lever(name);
                let rows = run
                    .grow_direct(
                        &format!("lever: {name}"),
                        &lever.args,
                        lever.layout,
                        &[settings.lever_sessions],
                        (b, 10 + k),
                        lever.purge,
                    )
                    .await;
                // A lever that breaks Chromium or the page is a finding, not the end of the run.
                match rows {
                    Ok(rows) => report.levers.extend(rows),
                    Err(e) => {
                        eprintln!("  lever {name} failed: {e:#}");
                        report
                            .failures
                            .push(format!("{name} ({ballast} MiB ballast): {e:#}"));
                    }
                }
            }
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    sim.stop(Duration::from_secs(10)).await;
    result
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    let mut report = Report::default();
    for ballast in settings.ballasts.clone() {
        page_run(&settings, ballast, &mut report).await?;
    }
    let text = report.markdown(&settings.counts, settings.lever_sessions);
    println!("{text}");
    if let Some(out) = &settings.out {
        std::fs::write(out, &text)?;
        eprintln!("written to {}", out.display());
    }
    Ok(())
}
