//! `wafleet consul kv get|put|delete` and `wafleet consul services`: a small operator CLI over
//! the client, configured by Consul's standard environment variables (`CONSUL_HTTP_ADDR`,
//! `CONSUL_HTTP_TOKEN`, `CONSUL_CACERT`, `CONSUL_CLIENT_CERT`, `CONSUL_CLIENT_KEY`), so it
//! works against a real cluster as well as against `wafleet consul-dev`.

use std::io::{Read, Write};

use super::{Client, Config, ConsulError, DeleteOptions, PutOptions, QueryOptions};

/// Arguments of `wafleet consul`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Read, write or delete KV entries.
    #[command(subcommand)]
    Kv(KvCommand),
    /// List the services registered on the local agent.
    Services,
}

#[derive(Debug, clap::Subcommand)]
enum KvCommand {
    /// Print a value (raw bytes), or with --recurse every `key:value` under a prefix.
    Get {
        /// Key (or prefix with --recurse).
        key: String,
        /// Treat KEY as a prefix.
        #[arg(long)]
        recurse: bool,
    },
    /// Write a value (from the argument, or stdin when it is absent or `-`).
    Put {
        /// Key.
        key: String,
        /// Value.
        value: Option<String>,
        /// Write only if the key's ModifyIndex is N (0 = only if absent).
        #[arg(long)]
        cas: Option<u64>,
        /// Opaque flags stored with the value.
        #[arg(long)]
        flags: Option<u64>,
    },
    /// Delete a key, or with --recurse every key under a prefix.
    Delete {
        /// Key (or prefix with --recurse).
        key: String,
        /// Treat KEY as a prefix (greedy: end it with `/` to mean a folder).
        #[arg(long)]
        recurse: bool,
        /// Delete only if the key's ModifyIndex is N.
        #[arg(long, conflicts_with = "recurse")]
        cas: Option<u64>,
    },
}

/// Runs `wafleet consul …`.
pub async fn run(args: Args) -> Result<(), ConsulError> {
    let client = Client::new(&Config::from_env()?)?;
    let mut out = std::io::stdout().lock();
    run_with(&client, args, &mut out).await
}

async fn run_with(client: &Client, args: Args, out: &mut impl Write) -> Result<(), ConsulError> {
    let q = QueryOptions::default();
    match args.command {
        Command::Kv(KvCommand::Get {
            key,
            recurse: false,
        }) => match client.kv_get(&key, &q).await? {
            (Some(pair), _) => {
                out.write_all(pair.value_bytes())?;
                out.write_all(b"\n")?;
            }
            (None, _) => return Err(ConsulError::NotFound(format!("no key {key:?}"))),
        },
        Command::Kv(KvCommand::Get { key, recurse: true }) => {
            for pair in client.kv_list(&key, &q).await?.0 {
                out.write_all(pair.key.as_bytes())?;
                out.write_all(b":")?;
                out.write_all(pair.value_bytes())?;
                out.write_all(b"\n")?;
            }
        }
        Command::Kv(KvCommand::Put {
            key,
            value,
            cas,
            flags,
        }) => {
            let bytes = match value.as_deref() {
                Some("-") | None => {
                    let mut buf = Vec::new();
                    std::io::stdin().read_to_end(&mut buf)?;
                    buf
                }
                Some(v) => v.as_bytes().to_vec(),
            };
            let opts = PutOptions {
                cas,
                flags,
                ..Default::default()
            };
            if !client.kv_put(&key, &bytes, &opts).await? {
                return Err(ConsulError::Rejected(format!(
                    "check-and-set on {key:?} failed (the index changed)"
                )));
            }
            writeln!(out, "Success! Data written to: {key}")?;
        }
        Command::Kv(KvCommand::Delete { key, recurse, cas }) => {
            if !client
                .kv_delete(&key, &DeleteOptions { recurse, cas })
                .await?
            {
                return Err(ConsulError::Rejected(format!(
                    "check-and-set delete of {key:?} failed (the index changed)"
                )));
            }
            writeln!(out, "Success! Deleted key: {key}")?;
        }
        Command::Services => {
            let mut services: Vec<_> = client.agent_services().await?.into_values().collect();
            services.sort_by(|a, b| a.id.cmp(&b.id));
            for s in services {
                writeln!(
                    out,
                    "{}\t{}\t{}:{}\t{}",
                    s.id,
                    s.service,
                    s.address,
                    s.port,
                    s.tags.join(",")
                )?;
            }
        }
    }
    Ok(())
}

/// Test hook: runs a parsed command against `client`, writing to `out`.
#[doc(hidden)]
pub async fn run_for_test(
    client: &Client,
    argv: &[&str],
    out: &mut Vec<u8>,
) -> Result<(), ConsulError> {
    use clap::Parser;
    #[derive(Debug, Parser)]
    struct Top {
        #[command(flatten)]
        args: Args,
    }
    let top = Top::try_parse_from(std::iter::once("consul").chain(argv.iter().copied()))
        .map_err(|e| ConsulError::InvalidRequest(e.to_string()))?;
    run_with(client, top.args, out).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Top {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn parses_the_documented_forms() {
        let t = Top::try_parse_from(["x", "kv", "delete", "wafleet/", "--recurse"]).unwrap();
        assert!(matches!(
            t.args.command,
            Command::Kv(KvCommand::Delete {
                recurse: true,
                cas: None,
                ..
            })
        ));
        let t = Top::try_parse_from(["x", "kv", "put", "k", "v", "--cas", "0"]).unwrap();
        assert!(matches!(
            t.args.command,
            Command::Kv(KvCommand::Put { cas: Some(0), .. })
        ));
        let t = Top::try_parse_from(["x", "kv", "get", "k", "--recurse"]).unwrap();
        assert!(matches!(
            t.args.command,
            Command::Kv(KvCommand::Get { recurse: true, .. })
        ));
        assert!(
            Top::try_parse_from(["x", "kv", "delete", "k", "--recurse", "--cas", "3"]).is_err()
        );
        assert!(matches!(
            Top::try_parse_from(["x", "services"]).unwrap().args.command,
            Command::Services
        ));
    }
}
