//! Memory of a session's Chromium process tree: the sum of PSS over the browser process and all
//! its descendants (renderer, GPU, network, storage, zygote helpers), from `/proc`.
//!
//! PSS (proportional set size) splits shared pages between the processes that map them, so the
//! sums of different sessions add up to what the host really spends; summed RSS overstates it
//! 2.7–5.4× for Chromium (shared/reference/performance.md §1.2). The parsing is pure; the
//! `/proc` walk is a thin adapter around it.

use std::collections::HashMap;
use std::path::Path;

/// The `Pss:` line of `/proc/<pid>/smaps_rollup`, in bytes.
pub fn parse_smaps_rollup_pss(text: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix("Pss:")?;
        let mut parts = rest.split_whitespace();
        let value: u64 = parts.next()?.parse().ok()?;
        match parts.next() {
            Some("kB") | None => value.checked_mul(1024),
            Some(_) => None,
        }
    })
}

/// Whether a browser tree of `pss_bytes` is over a budget of `budget_mb` MiB (`None`: no
/// budget).
pub fn over_budget(pss_bytes: u64, budget_mb: Option<u64>) -> bool {
    budget_mb.is_some_and(|mb| pss_bytes > mb.saturating_mul(1024 * 1024))
}

/// The parent pid from the text of `/proc/<pid>/stat`.
///
/// The command name (field 2) is in parentheses and may itself contain spaces and `)`, so the
/// fields are read after the *last* `)`: state, then ppid.
pub fn parse_stat_ppid(text: &str) -> Option<u32> {
    let after = &text[text.rfind(')')? + 1..];
    let mut fields = after.split_whitespace();
    let _state = fields.next()?;
    fields.next()?.parse().ok()
}

/// `root` and all its descendants, given every process's `(pid, ppid)`.
pub fn descendants(root: u32, parents: &[(u32, u32)]) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for &(pid, ppid) in parents {
        children.entry(ppid).or_default().push(pid);
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        if let Some(kids) = children.get(&out[i]) {
            for &k in kids {
                // A pid cannot appear twice in one snapshot, but guard against loops anyway.
                if !out.contains(&k) {
                    out.push(k);
                }
            }
        }
        i += 1;
    }
    out
}

/// Every process's `(pid, ppid)` under `proc_root` (normally `/proc`). Processes that exit
/// during the scan are skipped.
pub fn process_parents(proc_root: &Path) -> std::io::Result<Vec<(u32, u32)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(proc_root)? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(stat) = std::fs::read_to_string(entry.path().join("stat"))
            && let Some(ppid) = parse_stat_ppid(&stat)
        {
            out.push((pid, ppid));
        }
    }
    Ok(out)
}

/// The children of `pid` from `/proc/<pid>/task/*/children` (kernels with
/// `CONFIG_PROC_CHILDREN`); `None` when that interface is missing.
fn children_from_task_files(pid: u32) -> Option<Vec<u32>> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut out = Vec::new();
    for task in tasks.flatten() {
        match std::fs::read_to_string(task.path().join("children")) {
            Ok(text) => out.extend(
                text.split_whitespace()
                    .filter_map(|s| s.parse::<u32>().ok()),
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // The task exited, or the kernel lacks the file: tell which by the task itself.
                if task.path().exists() {
                    return None;
                }
            }
            Err(_) => {}
        }
    }
    Some(out)
}

/// The pids of `root`'s process tree (root included, if it still exists).
///
/// Walks `/proc/<pid>/task/*/children` (a few small reads per process); without that kernel
/// interface, scans every process's `/proc/<pid>/stat` for its parent instead.
pub fn process_tree(root: u32) -> std::io::Result<Vec<u32>> {
    if !Path::new(&format!("/proc/{root}")).exists() {
        return Ok(Vec::new());
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        match children_from_task_files(out[i]) {
            Some(kids) => {
                for k in kids {
                    if !out.contains(&k) {
                        out.push(k);
                    }
                }
            }
            None => {
                let parents = process_parents(Path::new("/proc"))?;
                if !parents.iter().any(|&(pid, _)| pid == root) {
                    return Ok(Vec::new());
                }
                return Ok(descendants(root, &parents));
            }
        }
        i += 1;
    }
    Ok(out)
}

/// PSS in bytes of `root` and its descendants; processes that vanish meanwhile count as 0.
/// `Ok(None)` when `root` no longer exists.
pub fn process_tree_pss(root: u32) -> std::io::Result<Option<u64>> {
    let tree = process_tree(root)?;
    if tree.is_empty() {
        return Ok(None);
    }
    let total = tree
        .iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok())
        .filter_map(|text| parse_smaps_rollup_pss(&text))
        .sum();
    Ok(Some(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_is_in_mib_and_optional() {
        assert!(!over_budget(u64::MAX, None));
        assert!(!over_budget(300 << 20, Some(300)));
        assert!(over_budget((300 << 20) + 1, Some(300)));
        assert!(!over_budget(0, Some(0)));
        assert!(!over_budget(u64::MAX, Some(u64::MAX)));
    }

    #[test]
    fn parses_pss_from_smaps_rollup() {
        let text = "55d0c0a00000-7ffd5a3f1000 ---p 00000000 00:00 0                          [rollup]\n\
                    Rss:              123456 kB\n\
                    Pss:               45678 kB\n\
                    Pss_Dirty:         30000 kB\n\
                    Pss_Anon:          20000 kB\n";
        assert_eq!(parse_smaps_rollup_pss(text), Some(45678 * 1024));
        assert_eq!(parse_smaps_rollup_pss("Rss: 1 kB\n"), None);
        assert_eq!(parse_smaps_rollup_pss("Pss: lots kB\n"), None);
    }

    #[test]
    fn parses_ppid_even_with_odd_command_names() {
        assert_eq!(
            parse_stat_ppid("1234 (chromium) S 1000 1234 1234 0"),
            Some(1000)
        );
        assert_eq!(
            parse_stat_ppid("99 (Web Content) (x)) R 42 99 99 0 -1"),
            Some(42)
        );
        assert_eq!(parse_stat_ppid("garbage"), None);
    }

    #[test]
    fn walks_descendants() {
        let parents = [
            (1, 0),
            (10, 1),
            (11, 10),
            (12, 10),
            (13, 12),
            (20, 1),
            (21, 20),
        ];
        let mut tree = descendants(10, &parents);
        tree.sort();
        assert_eq!(tree, vec![10, 11, 12, 13]);
        assert_eq!(descendants(13, &parents), vec![13]);
    }

    #[test]
    fn both_walks_find_the_same_children() {
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg("sleep 30 & sleep 30; true")
            .spawn()
            .unwrap();
        let me = std::process::id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let (fast, scan) = loop {
            let fast = process_tree(me).unwrap();
            let mut scan = descendants(me, &process_parents(Path::new("/proc")).unwrap());
            let mut sorted = fast.clone();
            sorted.sort();
            scan.sort();
            // Both see the shell and its two sleeps once the shell has started them.
            if sorted == scan && fast.contains(&child.id()) && fast.len() >= 4 {
                break (sorted, scan);
            }
            assert!(std::time::Instant::now() < deadline, "{fast:?} vs {scan:?}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        // The shell and both sleeps go (the sleeps would outlive a killed shell).
        for pid in process_tree(child.id()).unwrap() {
            let _ = std::process::Command::new("kill")
                .arg(pid.to_string())
                .status();
        }
        let _ = child.wait();
        assert_eq!(fast, scan);
    }

    #[test]
    fn measures_this_process() {
        let pss = process_tree_pss(std::process::id()).unwrap().unwrap();
        assert!(pss > 0);
        assert_eq!(process_tree_pss(u32::MAX - 1).unwrap(), None);
    }
}
