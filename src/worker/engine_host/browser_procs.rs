//! The browsers of this host's profiles as processes: who holds a profile's SingletonLock, whether
//! a pid belongs to another PID namespace, and killing a browser with its whole process tree; plus
//! the pairing-code formatting the routes show.

use super::*;

/// `ABCDEFGH` → `ABCD-EFGH` (codes already dashed are kept).
pub fn format_pairing_code(code: &str) -> String {
    let c: String = code.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    if c.len() == 8 {
        format!("{}-{}", &c[..4], &c[4..])
    } else {
        code.to_string()
    }
}

/// Whether `profile`'s `SingletonLock` names a live process on this host that runs a browser on
/// that profile (a second browser would share the profile: the overlap the invariant forbids).
pub fn live_singleton_owner(profile: &Path) -> Option<u32> {
    let target = std::fs::read_link(profile.join("SingletonLock")).ok()?;
    let (host, pid) = crate::engine::profile::parse_singleton_lock(target.to_str()?)?;
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    if hostname.trim() != host {
        return None;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let wanted = format!("--user-data-dir={}", profile.display());
    cmdline
        .split(|b| *b == 0)
        .any(|arg| arg == wanted.as_bytes())
        .then_some(pid)
}

/// Whether browser `pid` was not launched by this process: a leftover of a predecessor (killed
/// with SIGKILL, or frozen) or of anyone else. Its parent is not this process. Checked by pid,
/// not by name: a predecessor's browsers are reparented to whatever subreaper there is, which
/// may well be a `wafleet` process too (`wafleet dev`).
pub fn is_foreign(pid: u32) -> bool {
    let Some(ppid) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|st| {
            let rest = st.rsplit_once(')')?.1.to_string();
            rest.split_whitespace().nth(1)?.parse::<u32>().ok()
        })
    else {
        // Gone meanwhile: nothing to do about it.
        return false;
    };
    ppid != std::process::id()
}

/// SIGKILLs `pid` and its descendants (fencing: no time for a clean close).
pub fn kill_tree(pid: u32) {
    let mut tree = crate::engine::memory::process_tree(pid).unwrap_or_default();
    if tree.is_empty() {
        tree.push(pid);
    }
    // One `kill -9` for the whole tree (the crate forbids `unsafe`, so no libc::kill); a pid
    // that is already gone only makes kill print a complaint.
    let args: Vec<String> = tree
        .iter()
        .filter(|p| **p > 1)
        .map(u32::to_string)
        .collect();
    if args.is_empty() {
        return;
    }
    if let Err(e) = std::process::Command::new("kill")
        .arg("-9")
        .args(&args)
        .stderr(std::process::Stdio::null())
        .status()
    {
        tracing::error!(error = %e, "could not run kill -9 on a browser tree");
    }
}
