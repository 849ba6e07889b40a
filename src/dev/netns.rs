//! PURE: `wafleet dev --worker-netns <SHARD>=<NETNS>@<IP>`, which runs one worker inside an
//! existing network namespace (the chaos suite's real partition). Parsing, validation against
//! `--workers`, and the command line: `ip netns exec <NETNS> <wafleet> worker … --listen
//! <IP>:0 --advertise <IP>:0`. `ip netns exec` execs the worker, so the pid `wafleet dev`
//! sees, signals and writes to `state.json` is the worker's own.
//!
//! It does not create the namespace (whoever asks for it owns it: the suite creates the veth
//! pair, addresses and routes, and deletes it afterwards) and runs no command itself.

use std::net::IpAddr;
use std::path::Path;
use std::str::FromStr;

/// The program that enters the namespace (iproute2).
pub const IP_PROGRAM: &str = "ip";

/// One `--worker-netns` value: run worker `shard` in namespace `netns`, listening on `ip`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerNetns {
    /// The worker's shard.
    pub shard: u32,
    /// The namespace name (`[A-Za-z0-9_.-]{1,32}`, as `ip netns` accepts it).
    pub netns: String,
    /// The worker's listen and advertised address inside the namespace.
    pub ip: IpAddr,
}

/// Why a `--worker-netns` value is rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetnsFlagError {
    /// Not `<SHARD>=<NETNS>@<IP>`.
    #[error("--worker-netns {0:?}: expected <SHARD>=<NETNS>@<IP>, e.g. 1=wfc-42@10.213.7.2")]
    Syntax(String),
    /// The shard is not a number.
    #[error("--worker-netns {0:?}: the shard must be a number")]
    Shard(String),
    /// The namespace name is not `[A-Za-z0-9_.-]{1,32}` (or is `.`/`..`).
    #[error("--worker-netns {0:?}: the namespace name must match [A-Za-z0-9_.-]{{1,32}}")]
    Name(String),
    /// The address does not parse.
    #[error("--worker-netns {0:?}: {1:?} is not an IP address")]
    Ip(String, String),
    /// The shard has no worker (`shard >= --workers`).
    #[error("--worker-netns: shard {shard} has no worker (--workers {workers})")]
    NoSuchShard {
        /// The shard asked for.
        shard: u32,
        /// `--workers`.
        workers: u32,
    },
    /// Two values for one shard.
    #[error("--worker-netns: shard {0} is given twice")]
    Duplicate(u32),
}

impl FromStr for WorkerNetns {
    type Err = NetnsFlagError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (shard, rest) = s
            .split_once('=')
            .ok_or_else(|| NetnsFlagError::Syntax(s.to_owned()))?;
        let (netns, ip) = rest
            .rsplit_once('@')
            .ok_or_else(|| NetnsFlagError::Syntax(s.to_owned()))?;
        let shard: u32 = shard
            .trim()
            .parse()
            .map_err(|_| NetnsFlagError::Shard(s.to_owned()))?;
        let name_ok = (1..=32).contains(&netns.len())
            && netns
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
            && netns != "."
            && netns != "..";
        if !name_ok {
            return Err(NetnsFlagError::Name(s.to_owned()));
        }
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| NetnsFlagError::Ip(s.to_owned(), ip.to_owned()))?;
        Ok(WorkerNetns {
            shard,
            netns: netns.to_owned(),
            ip,
        })
    }
}

/// Checks every value against `--workers` (and that no shard is given twice).
pub fn validate(entries: &[WorkerNetns], workers: u32) -> Result<(), NetnsFlagError> {
    for (i, e) in entries.iter().enumerate() {
        if e.shard >= workers {
            return Err(NetnsFlagError::NoSuchShard {
                shard: e.shard,
                workers,
            });
        }
        if entries[..i].iter().any(|x| x.shard == e.shard) {
            return Err(NetnsFlagError::Duplicate(e.shard));
        }
    }
    Ok(())
}

impl WorkerNetns {
    /// `<ip>:0` (IPv6 in brackets).
    fn any_port(&self) -> String {
        std::net::SocketAddr::new(self.ip, 0).to_string()
    }

    /// The program and arguments that run `exe` with `worker_args` inside the namespace:
    /// `ip netns exec <netns> <exe> <worker_args…>`, with the values of `--listen` and
    /// `--advertise` replaced by `<ip>:0` (dev pins them to the bound port after the first
    /// readiness line, as for every worker).
    pub fn command(&self, exe: &Path, worker_args: &[String]) -> (String, Vec<String>) {
        let mut args: Vec<String> = vec![
            "netns".into(),
            "exec".into(),
            self.netns.clone(),
            exe.display().to_string(),
        ];
        let mut rest = worker_args.to_vec();
        for flag in ["--listen", "--advertise"] {
            match rest.iter().position(|a| a == flag) {
                Some(i) if i + 1 < rest.len() => rest[i + 1] = self.any_port(),
                _ => rest.extend([flag.to_owned(), self.any_port()]),
            }
        }
        args.extend(rest);
        (IP_PROGRAM.to_owned(), args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_into_shard_namespace_and_address() {
        let w: WorkerNetns = "1=wfc-42@10.213.7.2".parse().unwrap();
        assert_eq!(w.shard, 1);
        assert_eq!(w.netns, "wfc-42");
        assert_eq!(w.ip, "10.213.7.2".parse::<IpAddr>().unwrap());
        let w: WorkerNetns = "0=a_b.c@::1".parse().unwrap();
        assert_eq!(w.ip, "::1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn bad_values_say_what_is_wrong() {
        let err = |s: &str| s.parse::<WorkerNetns>().unwrap_err();
        assert!(matches!(err("1wfc@10.0.0.1"), NetnsFlagError::Syntax(_)));
        assert!(matches!(err("1=wfc"), NetnsFlagError::Syntax(_)));
        assert!(matches!(err("x=wfc@10.0.0.1"), NetnsFlagError::Shard(_)));
        assert!(matches!(err("-1=wfc@10.0.0.1"), NetnsFlagError::Shard(_)));
        assert!(matches!(err("1=@10.0.0.1"), NetnsFlagError::Name(_)));
        assert!(matches!(err("1=../x@10.0.0.1"), NetnsFlagError::Name(_)));
        assert!(matches!(err("1=..@10.0.0.1"), NetnsFlagError::Name(_)));
        assert!(matches!(err("1=a b@10.0.0.1"), NetnsFlagError::Name(_)));
        assert!(matches!(
            err(&format!("1={}@10.0.0.1", "n".repeat(33))),
            NetnsFlagError::Name(_)
        ));
        assert!(matches!(err("1=wfc@10.0.0"), NetnsFlagError::Ip(..)));
        assert!(matches!(err("1=wfc@10.0.0.1:80"), NetnsFlagError::Ip(..)));
        assert!(err("1=wfc@x").to_string().contains("not an IP address"));
    }

    #[test]
    fn validation_needs_an_existing_shard_given_once() {
        let a: WorkerNetns = "2=a@10.0.0.2".parse().unwrap();
        assert_eq!(validate(std::slice::from_ref(&a), 3), Ok(()));
        assert_eq!(
            validate(std::slice::from_ref(&a), 2),
            Err(NetnsFlagError::NoSuchShard {
                shard: 2,
                workers: 2
            })
        );
        let b: WorkerNetns = "2=b@10.0.0.6".parse().unwrap();
        assert_eq!(validate(&[a, b], 3), Err(NetnsFlagError::Duplicate(2)));
        assert_eq!(validate(&[], 0), Ok(()));
    }

    #[test]
    fn the_command_enters_the_namespace_and_listens_on_its_address() {
        let w: WorkerNetns = "1=wfc-42@10.213.7.2".parse().unwrap();
        let worker: Vec<String> = [
            "worker",
            "--shard",
            "1",
            "--listen",
            "127.0.0.1:0",
            "--advertise",
            "127.0.0.1:0",
            "--wa-url",
            "http://10.213.7.1:7070/",
        ]
        .map(String::from)
        .to_vec();
        let (prog, args) = w.command(Path::new("/bin/wafleet"), &worker);
        assert_eq!(prog, "ip");
        assert_eq!(
            args,
            [
                "netns",
                "exec",
                "wfc-42",
                "/bin/wafleet",
                "worker",
                "--shard",
                "1",
                "--listen",
                "10.213.7.2:0",
                "--advertise",
                "10.213.7.2:0",
                "--wa-url",
                "http://10.213.7.1:7070/",
            ]
        );
        // Missing flags are added; IPv6 gets brackets.
        let w6: WorkerNetns = "0=n@fd00::2".parse().unwrap();
        let (_, args) = w6.command(Path::new("w"), &["worker".to_owned()]);
        assert_eq!(
            &args[4..],
            [
                "worker",
                "--listen",
                "[fd00::2]:0",
                "--advertise",
                "[fd00::2]:0"
            ]
        );
    }
}
