//! Command-line arguments and entry point of this module's subcommand.

/// Arguments of the subcommand.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the subcommand.
pub async fn run(_args: Args) -> Result<(), std::io::Error> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "this command is being built",
    ))
}

/// Arguments of `wafleet restore`.
#[derive(Debug, clap::Args)]
pub struct RestoreArgs {}

/// Runs `wafleet restore`.
pub async fn restore(_args: RestoreArgs) -> Result<(), std::io::Error> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "this command is being built",
    ))
}
